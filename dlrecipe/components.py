"""The one place that builds the lectures' components from their names.

Each registry maps a name to a `Component`: a one-line summary, the lecture(s) it comes from (file prefixes in
`../shared/lectures/`: 000-004) and a builder. Adding a component is one entry here plus a test.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Component:
    summary: str
    lecture: str
    build: Callable[..., Any] | None = None


# ---------------------------------------------------------------------------------------------------------------
# Activations. build(cfg) -> nn.Module, where cfg is the recipe's [model] table.


class Maxout(nn.Module):
    """max over k affine pieces: max_j (W_j x + b_j) (lecture 003); has k times the parameters of a Linear."""

    def __init__(self, in_features: int, out_features: int, k: int = 2, bias: bool = True):
        super().__init__()
        self.out_features, self.k = out_features, k
        self.linear = nn.Linear(in_features, out_features * k, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)  # (B, out*k)
        return z.view(*z.shape[:-1], self.out_features, self.k).amax(dim=-1)  # (B, out)


ACTIVATIONS: dict[str, Component] = {
    "sigmoid": Component("1/(1+e^-z); saturates, not zero-centred, max slope 0.25", "000 001 003 004",
                         lambda cfg: nn.Sigmoid()),
    "tanh": Component("zero-centred, range [-1, 1], slope 1 at 0, saturates", "001 003 004",
                      lambda cfg: nn.Tanh()),
    "identity": Component("no non-linearity (stacked linear layers collapse to one)", "004",
                          lambda cfg: nn.Identity()),
    "relu": Component("max(0, z); units die when z < 0 for every sample", "000 001 003 004",
                      lambda cfg: nn.ReLU()),
    "leaky_relu": Component("max(slope*z, z), model.slope default 0.01", "000 001 003 004",
                            lambda cfg: nn.LeakyReLU(cfg.get("slope", 0.01))),
    "rrelu": Component("leaky ReLU with a random slope in [1/8, 1/3] while training, the mean at test", "000",
                       lambda cfg: nn.RReLU(1 / 8, 1 / 3)),
    "prelu": Component("leaky ReLU whose slope is learned (starts at 0.25)", "000 003",
                       lambda cfg: nn.PReLU(init=0.25)),
    "elu": Component("alpha*(e^z - 1) for z < 0, z otherwise; model.elu_alpha default 1", "000 003 004",
                     lambda cfg: nn.ELU(cfg.get("elu_alpha", 1.0))),
    "selu": Component("scaled ELU (alpha 1.6733, lambda 1.0507): self-normalising with LeCun init", "000 003 004",
                      lambda cfg: nn.SELU()),
    "gelu": Component("z * Phi(z), the Gaussian CDF (exact, not the tanh approximation)", "003",
                      lambda cfg: nn.GELU()),
    "maxout": Component("max of model.maxout_k affine pieces (default 2): k times the parameters", "003", None),
}

RELU_FAMILY = {"relu", "leaky_relu", "rrelu", "prelu", "elu", "gelu", "maxout"}


# ---------------------------------------------------------------------------------------------------------------
# Weight initialisation. build(weight, cfg) fills the tensor in place; biases are always set to 0 (lecture 002).
# fan_in of a conv layer = in_channels x kernel size (torch computes it that way: lecture 003's rule).


def _normal(std: float) -> Callable:
    return lambda w, cfg: nn.init.normal_(w, 0.0, std)


INITS: dict[str, Component] = {
    "zeros": Component("all weights 0: hidden gradients are exactly 0, nothing learns (never use)", "001 002",
                       lambda w, cfg: nn.init.zeros_(w)),
    "constant": Component("all weights model.init_value (default 0.1): symmetry is never broken (never use)",
                          "001 002 003", lambda w, cfg: nn.init.constant_(w, cfg.get("init_value", 0.1))),
    "normal": Component("N(0, 1): activations grow layer by layer, saturate sigmoid/tanh", "000 004", _normal(1.0)),
    "uniform": Component("U[-1, 1]: same problem as N(0, 1)", "004", lambda w, cfg: nn.init.uniform_(w, -1.0, 1.0)),
    "small": Component("0.01 * N(0, 1): fine for shallow nets, activations collapse in deep ones", "001 003",
                       _normal(0.01)),
    "xavier_normal": Component("N(0, 1/fan_avg), fan_avg = (fan_in+fan_out)/2: for sigmoid, tanh, softmax",
                               "000 002 004", lambda w, cfg: nn.init.xavier_normal_(w)),
    "xavier_uniform": Component("U(-r, r), r = sqrt(6/(fan_in+fan_out)): variance 1/fan_avg", "000 002 004",
                                lambda w, cfg: nn.init.xavier_uniform_(w)),
    "lecun_normal": Component("N(0, 1/fan_in): for selu", "000 003 004",
                              lambda w, cfg: nn.init.kaiming_normal_(w, nonlinearity="linear")),
    "lecun_uniform": Component("U(-r, r), r = sqrt(3/fan_in): variance 1/fan_in", "000 003 004",
                               lambda w, cfg: nn.init.kaiming_uniform_(w, nonlinearity="linear")),
    "he_normal": Component("N(0, 2/fan_in): for relu and its variants", "000 003 004",
                           lambda w, cfg: nn.init.kaiming_normal_(w, nonlinearity="relu")),
    "he_uniform": Component("U(-r, r), r = sqrt(6/fan_in): variance 2/fan_in", "000 003 004",
                            lambda w, cfg: nn.init.kaiming_uniform_(w, nonlinearity="relu")),
    "auto": Component("the lectures' pairing: he_normal for the relu family, lecun_normal for selu, "
                      "xavier_normal for sigmoid/tanh/identity and for the softmax/linear output layer",
                      "000 003 004", None),
}


def auto_init(activation: str) -> str:
    """The lectures' init for an activation: He for the ReLU family, LeCun for SELU, Xavier otherwise."""
    if activation in RELU_FAMILY:
        return "he_normal"
    if activation == "selu":
        return "lecun_normal"
    return "xavier_normal"


def init_weight(weight: torch.Tensor, name: str, cfg: dict) -> None:
    """Fill one weight tensor with the named scheme (no autograd)."""
    with torch.no_grad():
        INITS[name].build(weight, cfg)


# ---------------------------------------------------------------------------------------------------------------
# Normalisation, regularisers, output bias: these are recipe keys, listed here for `dlrecipe components`.

NORMS: dict[str, Component] = {
    "none": Component("no normalisation layer", "004"),
    "batch": Component("batch norm on pre-activations: biased batch variance while training, running averages "
                       "(mu <- 0.99 mu + 0.01 mu_B) at test; model.bn_eps default 1e-5", "002 004"),
}

REGULARISERS: dict[str, Component] = {
    "l2": Component("train.weight_decay: L2 on weights (not biases) through the optimizer; "
                    "weight_decay = 2*lambda for the penalty lambda*sum(W^2); decoupled for adamw", "001 003 004"),
    "l1": Component("train.l1: lambda*sum(|W|) on weights (not biases), added to the loss", "001 003 004"),
    "elastic_net": Component("train.l1 and train.weight_decay together: sum(beta*W^2 + |W|)", "001 003 004"),
    "dropout": Component("model.dropout: inverted dropout, p = DROP probability (lecture 003's code uses the "
                         "keep probability), scaled by 1/(1-p) while training so test time is unchanged", "003"),
    "dropconnect": Component("model.dropconnect: drop each weight of the linear layers with probability p while "
                             "training (inverted scaling)", "003 004"),
    "early_stopping": Component("train.patience: stop after that many epochs without validation improvement, "
                                "keep the best snapshot", "002 003"),
    "augmentation": Component("data.augment: hflip, crop, resized_crop, jitter, pca_colour, cutout, mixup "
                                              "(training split only)", "001 003"),
}

OUTPUT_BIASES: dict[str, Component] = {
    "zero": Component("output-layer bias 0 (lecture 002: biases start at 0)", "002"),
    "prior": Component("output-layer bias = log class frequencies of the training split (regression: target mean)",
                       "003"),
}


# ---------------------------------------------------------------------------------------------------------------
# Optimisers. build(param_groups, tr) -> torch.optim.Optimizer, where tr is the recipe's [train] table.


def _momentum(tr: dict, default: float) -> float:
    return default if tr.get("momentum") is None else tr["momentum"]


def _betas(tr: dict) -> tuple[float, float]:
    return tr.get("beta1", 0.9), tr.get("beta2", 0.999)


OPTIMIZERS: dict[str, Component] = {
    "sgd": Component("minibatch SGD; train.momentum default 0", "002",
                     lambda p, tr: torch.optim.SGD(p, lr=tr["lr"], momentum=_momentum(tr, 0.0))),
    "momentum": Component("SGD with momentum v = grad + beta*v; train.momentum default 0.9", "002 004",
                          lambda p, tr: torch.optim.SGD(p, lr=tr["lr"], momentum=_momentum(tr, 0.9))),
    "nesterov": Component("SGD with Nesterov momentum; train.momentum default 0.9", "002 004",
                          lambda p, tr: torch.optim.SGD(p, lr=tr["lr"], momentum=_momentum(tr, 0.9), nesterov=True)),
    "adagrad": Component("per-parameter LR from cumulative squared gradients; train.eps", "002 004",
                         lambda p, tr: torch.optim.Adagrad(p, lr=tr["lr"], eps=tr.get("eps", 1e-8))),
    "rmsprop": Component("moving average of squared gradients, decay train.rho (default 0.99)", "002 004",
                         lambda p, tr: torch.optim.RMSprop(p, lr=tr["lr"], alpha=tr.get("rho", 0.99),
                                                           eps=tr.get("eps", 1e-8),
                                                           momentum=_momentum(tr, 0.0))),
    "adam": Component("RMSProp + momentum with bias correction; train.beta1 0.9, train.beta2 0.999", "002 004",
                      lambda p, tr: torch.optim.Adam(p, lr=tr["lr"], betas=_betas(tr), eps=tr.get("eps", 1e-8))),
    "adamw": Component("Adam with decoupled weight decay (train.weight_decay)", "004",
                       lambda p, tr: torch.optim.AdamW(p, lr=tr["lr"], betas=_betas(tr), eps=tr.get("eps", 1e-8))),
    "nadam": Component("Adam with Nesterov momentum", "002 004",
                       lambda p, tr: torch.optim.NAdam(p, lr=tr["lr"], betas=_betas(tr), eps=tr.get("eps", 1e-8))),
}


def build_optimizer(model: nn.Module, tr: dict) -> torch.optim.Optimizer:
    """The recipe's optimizer, with weight decay on weights only (biases and norm parameters are not decayed)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": tr.get("weight_decay", 0.0)},
              {"params": no_decay, "weight_decay": 0.0}]
    return OPTIMIZERS[tr["optimizer"]].build([g for g in groups if g["params"]], tr)


def weight_penalty(model: nn.Module, l1: float) -> torch.Tensor:
    """l1 * sum |W| over trained weight matrices and kernels (not biases, norm parameters or frozen layers)."""
    return l1 * sum(p.abs().sum() for p in model.parameters() if p.ndim > 1 and p.requires_grad)  # frozen: no L1


# ---------------------------------------------------------------------------------------------------------------
# LR schedules, stepped once per epoch. build(optimizer, tr) -> LRScheduler or None.
# "plateau" is not a torch scheduler: the training loop halves the LR itself (it owns the validation metric).


def _decay_gamma(tr: dict) -> float:
    """Per-epoch factor that takes the LR to lr / decay_factor at the last epoch."""
    return tr.get("decay_factor", 100.0) ** (-1.0 / max(tr["epochs"] - 1, 1))


SCHEDULES: dict[str, Component] = {
    "constant": Component("the same LR throughout (lecture 003, refine stage)", "003", lambda opt, tr: None),
    "plateau": Component("halve the LR after train.lr_halving epochs without validation improvement "
                         "(0 = constant)", "002", lambda opt, tr: None),
    "step": Component("multiply the LR by train.gamma (default 0.5) every train.step_size epochs (default 10)",
                      "002", lambda opt, tr: torch.optim.lr_scheduler.StepLR(
                          opt, step_size=tr.get("step_size", 10), gamma=tr.get("gamma", 0.5))),
    "exponential": Component("decay every epoch to lr / train.decay_factor (default 100) at the last epoch",
                             "002", lambda opt, tr: torch.optim.lr_scheduler.ExponentialLR(opt, _decay_gamma(tr))),
    "cosine": Component("cosine from lr down to lr / train.decay_factor (default 100) at the last epoch", "002",
                        lambda opt, tr: torch.optim.lr_scheduler.CosineAnnealingLR(
                            opt, T_max=max(tr["epochs"] - 1, 1), eta_min=tr["lr"] / tr.get("decay_factor", 100.0))),
}


# ---------------------------------------------------------------------------------------------------------------
# Losses. build(tr) -> callable(logits_or_predictions, target) -> mean loss.

LOSSES: dict[str, Component] = {
    "cross_entropy": Component("softmax + negative log-likelihood (classification); log C at zero logits",
                               "002 003 004", lambda tr: nn.CrossEntropyLoss()),
    "mse": Component("mean squared error (regression, linear output)", "002 004", lambda tr: nn.MSELoss()),
    "huber": Component("squared below train.huber_delta (default 1), linear above: robust to outliers", "004",
                       lambda tr: nn.HuberLoss(delta=tr.get("huber_delta", 1.0))),
}


def default_loss(task: str) -> str:
    return "cross_entropy" if task == "classification" else "mse"


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing, fitted on the training split only (lecture 002): listed here, implemented in data.py.

PREPROCESS: dict[str, Component] = {
    "none": Component("inputs as they are", "002"),
    "center": Component("subtract the training mean of each feature", "001 002 003"),
    "standardize": Component("subtract the training mean, divide by the training std, per feature", "002"),
    "pca_whiten": Component("centre, rotate onto the principal axes, divide by sqrt(eigenvalue) "
                            "(not for images)", "001 003"),
    "scale_255": Component("pixels 0-255 to 0-1", "000 003"),
    "per_channel": Component("images: subtract the per-channel training mean, divide by the per-channel std",
                             "000 003"),
}


def log_c(num_classes: int) -> float:
    """The initial softmax loss for C classes with zero logits (lecture 003: log 10 = 2.302585)."""
    return math.log(num_classes)
