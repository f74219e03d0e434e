"""The model factory: MLPs and CNNs built from the lectures' components, or the user's own nn.Module.

Layer order in a hidden block: linear/conv -> batch norm (on pre-activations, lecture 002) -> activation ->
dropout. Every weight is initialised with a documented scheme (PyTorch's default init is never left in place)
and every bias starts at 0; the output bias may start at the log class prior.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import components as C
from .errors import RecipeError


class DropConnectLinear(nn.Linear):
    """Linear layer that drops each weight with probability p while training (inverted scaling, lecture 003)."""

    def __init__(self, in_features: int, out_features: int, p: float, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        mask = torch.rand_like(self.weight) >= self.p
        return F.linear(x, self.weight * mask / (1 - self.p), self.bias)


class Residual(nn.Module):
    """y = shortcut(x) + b * body(x): an identity skip (a projection where widths differ) around one block.

    Stochastic depth (Huang et al. 2016, lecture 003): while training, the whole body is skipped for the batch with
    probability 1 - survival (b ~ Bernoulli(survival)); at test it always runs, scaled by its survival probability
    (b = survival), the expected value of the training-time output.
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module, survival: float = 1.0):
        super().__init__()
        self.body, self.shortcut, self.survival = body, shortcut, survival

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(x)
        if self.survival >= 1.0:
            return skip + self.body(x)
        if self.training:  # one draw per batch from the global generator (seeded by fit, like dropout)
            return skip + self.body(x) if float(torch.rand(())) < self.survival else skip
        return skip + self.survival * self.body(x)


def survival_probabilities(n_blocks: int, p_drop: float) -> list[float]:
    """Huang et al. 2016's linear decay: block l of L survives with p_l = 1 - (l / L) * p_drop (the last one with
    1 - p_drop; the input, l = 0, always)."""
    return [1.0 - (l / n_blocks) * p_drop for l in range(1, n_blocks + 1)]


def _set_survival(model: nn.Module, p_drop: float) -> None:
    blocks = [m for m in model.modules() if isinstance(m, Residual)]
    for block, p in zip(blocks, survival_probabilities(len(blocks), p_drop)):
        block.survival = p


def _linear(n_in: int, n_out: int, cfg: dict, bias: bool = True) -> nn.Module:
    if cfg.get("dropconnect", 0.0) > 0:
        return DropConnectLinear(n_in, n_out, cfg["dropconnect"], bias=bias)
    return nn.Linear(n_in, n_out, bias=bias)


def _hidden_block(n_in: int, n_out: int, cfg: dict) -> list[nn.Module]:
    """One hidden layer of an MLP: [linear, (batch norm), activation, (dropout)]."""
    batch_norm = cfg["norm"] == "batch"
    if cfg["activation"] == "maxout":
        layers: list[nn.Module] = [C.Maxout(n_in, n_out, cfg.get("maxout_k", 2), bias=not batch_norm)]
        if batch_norm:  # maxout has no separate pre-activation: normalise its output
            layers.append(nn.BatchNorm1d(n_out, eps=cfg["bn_eps"], momentum=cfg["bn_momentum"]))
    else:
        layers = [_linear(n_in, n_out, cfg, bias=not batch_norm)]  # BN's beta replaces the bias
        if batch_norm:
            layers.append(nn.BatchNorm1d(n_out, eps=cfg["bn_eps"], momentum=cfg["bn_momentum"]))
        layers.append(C.ACTIVATIONS[cfg["activation"]].build(cfg))
    if cfg.get("dropout", 0.0) > 0:
        layers.append(nn.Dropout(cfg["dropout"]))  # inverted dropout: p is the DROP probability
    return layers


def _mlp_layers(n_in: int, hidden: list[int], cfg: dict) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for h in hidden:
        block = _hidden_block(n_in, h, cfg)
        if cfg.get("residual"):  # model.residual: y = x + block(x), a bias-free projection where n_in != h
            block = [Residual(nn.Sequential(*block), nn.Identity() if n_in == h else nn.Linear(n_in, h, bias=False))]
        layers += block
        n_in = h
    return layers


def build_mlp(input_shape: tuple[int, ...], num_outputs: int, cfg: dict) -> nn.Module:
    n_in = math.prod(input_shape)
    layers = [nn.Flatten(), *_mlp_layers(n_in, cfg["hidden"], cfg)]
    layers.append(nn.Linear(cfg["hidden"][-1] if cfg["hidden"] else n_in, num_outputs))
    model = nn.Sequential(*layers)
    _set_survival(model, cfg.get("stochastic_depth", 0.0))
    return model


def build_cnn(input_shape: tuple[int, ...], num_outputs: int, cfg: dict) -> nn.Module:
    """Conv blocks (conv, norm, activation, pool) over 1-D (C, L) or 2-D (C, H, W) inputs, then an MLP head."""
    if len(input_shape) not in (2, 3):
        raise RecipeError(f"model.kind = 'cnn' needs inputs shaped (C, L) or (C, H, W); the data has shape "
                          f"{list(input_shape)}: set data.shape, e.g. [1, {math.prod(input_shape)}]")
    if cfg["activation"] == "maxout":
        raise RecipeError("model.activation = 'maxout' is for model.kind = 'mlp' (and the cnn head is built "
                          "with the same activation): choose another activation for a cnn")
    dims = len(input_shape) - 1
    Conv = nn.Conv1d if dims == 1 else nn.Conv2d
    Norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    if cfg["pool"] == "fractional" and dims == 1:
        raise RecipeError(f"model.pool = 'fractional' is for 2-D inputs (C, H, W) (nn.FractionalMaxPool2d); the data "
                          f"has shape {list(input_shape)}: use model.pool = 'max' or 'avg' for 1-D signals")
    Pool = {"max": nn.MaxPool1d, "avg": nn.AvgPool1d} if dims == 1 else {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
    if dims == 2:  # Graham 2014: pseudo-random 2x2 regions, each side shrunk by pool_ratio (not by a whole factor)
        Pool["fractional"] = lambda size: nn.FractionalMaxPool2d(2, output_ratio=cfg.get("pool_ratio", 0.7071))
    k, batch_norm = cfg["kernel_size"], cfg["norm"] == "batch"
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for out in cfg["conv"]:
        block = [Conv(channels, out, k, padding=k // 2, bias=not batch_norm)]
        if batch_norm:
            block.append(Norm(out, eps=cfg["bn_eps"], momentum=cfg["bn_momentum"]))
        block.append(C.ACTIVATIONS[cfg["activation"]].build(cfg))
        if cfg.get("residual"):  # a 1x1 conv projection where the channel count changes
            block = [Residual(nn.Sequential(*block), nn.Identity() if channels == out
                              else Conv(channels, out, 1, bias=False))]
        layers += block
        if cfg["pool"] != "none":
            layers.append(Pool[cfg["pool"]](cfg["pool_size"]))
        channels = out
    try:
        with torch.no_grad():  # flattened size after the conv stack
            n_flat = nn.Sequential(*layers)(torch.zeros(1, *input_shape)).numel()
    except RuntimeError as e:  # fractional pooling of a map too small for its 2x2 regions
        raise RecipeError(f"model.conv = {cfg['conv']} with model.pool = {cfg['pool']!r} does not fit the input "
                          f"{list(input_shape)} ({' '.join(str(e).split())[:160]}): use fewer conv blocks") from None
    if n_flat == 0:
        raise RecipeError(f"model.conv = {cfg['conv']} with pool_size {cfg['pool_size']} shrinks the input "
                          f"{list(input_shape)} to nothing: use fewer conv blocks or model.pool = 'none'")
    layers += [nn.Flatten(), *_mlp_layers(n_flat, cfg["hidden"], cfg)]
    layers.append(nn.Linear(cfg["hidden"][-1] if cfg["hidden"] else n_flat, num_outputs))
    model = nn.Sequential(*layers)
    _set_survival(model, cfg.get("stochastic_depth", 0.0))
    return model


def build_python(input_shape: tuple[int, ...], num_outputs: int, cfg: dict) -> nn.Module:
    """The user's own factory 'package.module:function' or 'file.py:function' (found beside the recipe, in the
    working folder or on sys.path), called as f(input_shape, num_outputs, **other_keys)."""
    from .usercode import load_callable

    spec = cfg["factory"]
    func = load_callable(spec, "model.factory", cfg.get("_recipe_path"))
    func_name = spec.rpartition(":")[2]
    ours = set(MODEL_KEYS_FOR_PYTHON) | {"_recipe_path"}
    kwargs = {k: v for k, v in cfg.items() if k not in ours}
    try:
        model = func(input_shape, num_outputs, **kwargs)
    except Exception as e:
        from .sanity.preflight import exception_words, user_frame

        where = user_frame(e)
        raise RecipeError(f"model.factory = {spec!r} raised {exception_words(e)}" + (f" (at {where})" if where else "")
                          + f"; it is called as {func_name}(input_shape={tuple(input_shape)}, "
                          f"num_outputs={num_outputs}{''.join(f', {k}={v!r}' for k, v in kwargs.items())})") from e
    if not isinstance(model, nn.Module):
        raise RecipeError(f"model.factory = {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# schema keys a python factory does not receive (its own keys are the recipe's extra model.* keys)
MODEL_KEYS_FOR_PYTHON = ("kind", "factory", "hidden", "activation", "slope", "elu_alpha", "maxout_k", "init",
                         "init_value", "norm", "bn_eps", "bn_momentum", "dropout", "dropconnect", "output_bias",
                         "conv", "kernel_size", "pool", "pool_size", "pool_ratio", "residual", "stochastic_depth",
                         "pretrained", "pretrained_skip")

MODEL_KINDS: dict[str, C.Component] = {
    "mlp": C.Component("fully connected: model.hidden sizes, then a linear output layer", "000 004", build_mlp),
    "cnn": C.Component("1-D or 2-D conv blocks (model.conv channels, kernel_size, pool) then an MLP head",
                       "000 003", build_cnn),
    "python": C.Component("your own nn.Module: model.factory = 'package.module:function', called with the input "
                          "shape, the output size and the other model keys", "-", build_python),
}


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Linear, conv and maxout layers in forward order: the layers that carry a weight matrix or kernel."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def initialise(model: nn.Module, cfg: dict, prior: torch.Tensor | None = None) -> None:
    """Apply the recipe's init to every weight, zero every bias; output bias from `prior` when given."""
    layers = weight_layers(model)
    name = cfg["init"]
    for i, layer in enumerate(layers):
        is_output = i == len(layers) - 1
        scheme = name
        if name == "auto":
            scheme = "xavier_normal" if is_output else C.auto_init(cfg["activation"])
        C.init_weight(layer.weight, scheme, cfg)
        if layer.bias is not None:
            with torch.no_grad():
                layer.bias.zero_()
                if is_output and prior is not None:
                    layer.bias.copy_(prior)


def output_prior(data) -> torch.Tensor | None:
    """Log class frequencies of the training labels (classification) or the target mean (regression)."""
    if data.task == "classification":
        counts = torch.bincount(data.y_train.cpu(), minlength=data.num_outputs).double()
        return torch.log(counts.clamp_min(1) / counts.sum()).float()  # a class absent from training: log(1/N)
    return data.y_train.float().mean().cpu().reshape(1)


def build_model(recipe, data, *, seed: int | None = None) -> nn.Module:
    """The recipe's model for `data`'s input shape and outputs, initialised with a seeded generator."""
    cfg = {**recipe.section("model"), "_recipe_path": recipe.path}  # a factory module is looked for beside it
    torch.manual_seed(recipe["seed"] if seed is None else seed)
    builder: Callable = MODEL_KINDS[cfg["kind"]].build
    model = builder(data.input_shape, data.num_outputs, cfg)
    prior = output_prior(data) if cfg["output_bias"] == "prior" else None
    if cfg["kind"] != "python" or cfg["init"] != "auto":
        initialise(model, cfg, prior)
    elif prior is not None:  # a python model with init auto keeps its own init, but the prior still applies
        layers = weight_layers(model)
        out = layers[-1] if layers else None
        if out is None or out.bias is None or out.bias.shape != prior.shape:
            raise RecipeError(f"model.output_bias = 'prior' needs the factory's last Linear/Conv layer to have a "
                              f"bias of size {prior.numel()}")
        with torch.no_grad():
            out.bias.copy_(prior.to(out.bias.dtype))
    if cfg.get("pretrained"):  # transfer learning: matching layers from a run or a state dict, reported per layer
        from .transfer import load_pretrained, resolve_pretrained

        path = resolve_pretrained(cfg["pretrained"], recipe.path)
        model.pretrained_report = load_pretrained(model, path, cfg.get("pretrained_skip", []))
    from .sanity.preflight import first_forward

    first_forward(model, data, recipe)  # shapes before anything runs: a mismatch is one line naming the layer
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
