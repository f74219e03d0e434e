"""Before anything runs: one forward pass and one loss on a real training batch, so that a shape mismatch or an
exception in the user's own module is one line naming the layer, the shape it got and the one it expects, not a
traceback an hour into a run. `build_model` calls `first_forward` for every command (validate included)."""
from __future__ import annotations

import copy
import os
import sysconfig
import traceback

import torch
from torch import nn

from ..errors import RecipeError

PREFLIGHT_EXAMPLES = 8         # training examples in the batch (at least 2: batch norm in training mode needs 2)
_OURS = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(torch.__file__),  # dlrecipe/, torch/,
         sysconfig.get_paths()["stdlib"])                                              # Python's own modules


def describe(mod: nn.Module) -> str:
    """'Linear 64->128', 'Conv2d 1->16 k3', 'BatchNorm1d(64)': how a message names a layer."""
    if isinstance(mod, nn.Linear):
        return f"Linear {mod.in_features}->{mod.out_features}"
    if isinstance(mod, nn.modules.conv._ConvNd):
        return f"{type(mod).__name__} {mod.in_channels}->{mod.out_channels} k{mod.kernel_size[0]}"
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return f"{type(mod).__name__}({mod.num_features})"
    return type(mod).__name__


def expects(mod: nn.Module) -> str:
    """The input shape a layer accepts, in words ('' when it has no fixed one)."""
    if isinstance(mod, nn.Linear):
        return f"[..., {mod.in_features}]"
    if isinstance(mod, nn.modules.conv._ConvNd):
        dims = {1: "L", 2: "H, W", 3: "D, H, W"}[len(mod.kernel_size)]
        return f"[N, {mod.in_channels}, {dims}]"
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return {"BatchNorm1d": f"[N, {mod.num_features}] or [N, {mod.num_features}, L]",
                "BatchNorm2d": f"[N, {mod.num_features}, H, W]"}.get(type(mod).__name__,
                                                                     f"[N, {mod.num_features}, ...]")
    if isinstance(mod, nn.LayerNorm):
        return f"[..., {', '.join(map(str, mod.normalized_shape))}]"
    if isinstance(mod, nn.Embedding):
        return f"integer indices below {mod.num_embeddings}"
    return ""


def user_frame(exc: BaseException) -> str:
    """'model.py:42 in forward': the innermost frame of the traceback outside dlrecipe and torch ('' if none)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_OURS) and "site-packages" not in f.filename
              and not f.filename.startswith("<")]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


def exception_words(exc: BaseException) -> str:
    """'ValueError: message' on one line (the first line of the message)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def model_name(cfg: dict) -> str:
    return f"model.factory = {cfg['factory']!r}" if cfg["kind"] == "python" else f"model.kind = {cfg['kind']!r}"


def unregistered(model: nn.Module) -> list[tuple[str, str, bool]]:
    """(where, what, trainable) for every layer or tensor a module keeps outside PyTorch's registry: modules in a
    plain list, tuple or dict attribute, tensors that are neither parameters nor buffers. Such layers are not in
    model.parameters() (never trained), not moved by .to(device) or .double(), not saved in the state dict."""
    known = {id(t) for t in [*model.parameters(), *model.buffers()]} | {id(m) for m in model.modules()}
    found = []
    for prefix, mod in model.named_modules():
        for attr, value in vars(mod).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            where = f"{prefix}.{attr}" if prefix else attr
            items = (value.items() if isinstance(value, dict) else enumerate(value)
                     if isinstance(value, (list, tuple)) else [(None, value)])
            for key, item in items:
                if id(item) in known or not isinstance(item, (nn.Module, torch.Tensor)):
                    continue
                at = where if key is None else f"{where}[{key!r}]"
                if isinstance(item, nn.Module):
                    found.append((at, describe(item), any(p.requires_grad for p in item.parameters())))
                else:
                    found.append((at, f"a tensor of shape {list(item.shape)}", item.requires_grad))
    return found


def _shapes(args) -> str:
    shapes = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
    return ", ".join(map(str, shapes)) or "no tensor"


def first_forward(model: nn.Module, data, recipe) -> None:
    """One forward pass and one loss on PREFLIGHT_EXAMPLES real training examples (a copy in training mode, the
    random state restored); any failure is a RecipeError naming the layer, the shapes and the exception."""
    from ..loop import loss_function

    cfg = recipe.section("model")
    who = model_name(cfg)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    n = min(PREFLIGHT_EXAMPLES, len(data.x_train))
    rows = torch.arange(n)  # an index, not a slice: a streamed split reads these rows (a slice is a lazy view)
    x, y = data.x_train[rows].to(device), data.y_train[rows.to(data.y_train.device)].to(device)
    try:
        m = copy.deepcopy(model) if cfg["kind"] == "python" else model
        m.train(m is not model)  # training-mode branches too; our own models in eval mode (batch stats untouched)
    except Exception:  # noqa: BLE001 (a module deepcopy cannot copy: use it in its eval mode)
        m = model.eval()
    names = {mod: name for name, mod in m.named_modules()}
    stack: list[tuple[nn.Module, str]] = []

    def pre(mod, args):
        stack.append((mod, _shapes(args)))

    def post(mod, args, out):
        if stack and stack[-1][0] is mod:
            stack.pop()

    handles = [h for mod in m.modules() for h in (mod.register_forward_pre_hook(pre), mod.register_forward_hook(post))]
    hint = ""
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            try:
                out = m(x)
            except Exception as e:
                where = user_frame(e)
                at = f" (at {where})" if where else ""
                loose = [w for w, _, _ in unregistered(m)]
                if loose:
                    hint = (f"; {', '.join(loose)} {'is' if len(loose) == 1 else 'are'} not registered with the "
                            f"module (a plain list/dict or tensor): use nn.ModuleList / nn.ModuleDict / nn.Parameter")
                if stack and stack[-1][0] is not m:
                    mod, shapes = stack[-1]
                    want = expects(mod)
                    shape_words = f"it got input of shape {shapes}" + (f", expects {want}" if want else "")
                    raise RecipeError(f"{who}: the forward pass fails in layer '{names.get(mod, '?')}' "
                                      f"({describe(mod)}): {shape_words}{at}: {exception_words(e)}{hint}") from e
                raise RecipeError(f"{who}: the forward pass of {type(m).__name__} on a batch of shape "
                                  f"{list(x.shape)} raised {exception_words(e)}{at}{hint}") from e
    finally:
        for h in handles:
            h.remove()
        model.train()
    if not isinstance(out, torch.Tensor):
        raise RecipeError(f"{who}: forward returned {type(out).__name__}, not a tensor of outputs")
    shape = list(out.shape)
    if data.task == "classification":
        if out.dim() != 2 or shape[0] != n or shape[1] != data.num_outputs:
            raise RecipeError(f"{who}: a batch of {n} examples gives outputs of shape {shape}; the data has "
                              f"{data.num_outputs} classes, so the model must output [{n}, {data.num_outputs}] "
                              f"(one logit per class: use the factory's num_outputs argument)")
    elif shape not in ([n], [n, 1]):
        raise RecipeError(f"{who}: a batch of {n} examples gives outputs of shape {shape}; regression needs [{n}, 1]")
    loss_fn = loss_function(data.task, dict(recipe.section("train")))
    try:
        loss = loss_fn(out.squeeze(-1) if data.task == "regression" else out, y)
    except Exception as e:
        raise RecipeError(f"{who}: the loss {type(loss_fn).__name__} fails on outputs of shape {shape} and labels of "
                          f"shape {list(y.shape)}: {exception_words(e)}") from e
    if loss.dim() != 0:
        raise RecipeError(f"{who}: the loss of a batch has shape {list(loss.shape)}, not a single number")
