"""Tests for dlrecipe.components against references: the lectures' exact numbers (../shared/LECTURES.md), the
formulas written out here, and PyTorch's own functions. Nothing here is a number recorded from running our code.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrecipe import components as C
from dlrecipe import models
from dlrecipe.data import DATASETS, Data
from dlrecipe.recipe import validate


def model_cfg(**keys) -> dict:
    """The [model] table of a validated iris recipe with `keys` overridden (defaults filled in)."""
    return validate({"data.source": "iris", **{f"model.{k}": v for k, v in keys.items()}}).section("model")


def train_cfg(**keys) -> dict:
    return validate({"data.source": "iris", **{f"train.{k}": v for k, v in keys.items()}}).section("train")


def fake_data(input_shape, num_outputs) -> Data:
    """A Data whose only role is to tell build_model the input shape and the number of classes."""
    x, y = torch.zeros(num_outputs, *input_shape), torch.arange(num_outputs)
    return Data(x, y, x, y, x, y, "classification", num_outputs)


# ---------------------------------------------------------------------------------------------------------------
# Weight initialisation: variance against the formula on a Linear, a Conv1d and a Conv2d.
#
# The layers are chosen so fan_in, fan_out and fan_avg differ by >= 2x (a fan_in/fan_avg mix-up cannot pass):
#   Linear(200, 600):       fan_in 200, fan_out 600, fan_avg 400, n = 120,000 weights
#   Conv1d(20, 200, 7):     fan_in 140 (20 x 7), fan_out 1400, fan_avg 770, n = 28,000
#   Conv2d(16, 128, 5x5):   fan_in 400 (16 x 25), fan_out 3200, fan_avg 1800, n = 51,200
# Tolerance: the sample variance of n iid draws has relative standard deviation sqrt(2/n) (normal) or
# sqrt(0.8/n) (uniform); we allow 5 of those (a false failure about once in 3 million runs), i.e. 2-4.2% here.
# The sample mean has standard deviation sigma/sqrt(n); we allow 5 of those too.

LAYERS = {
    "linear": (lambda: nn.Linear(200, 600), 200, 600),
    "conv1d": (lambda: nn.Conv1d(20, 200, 7), 20 * 7, 200 * 7),
    "conv2d": (lambda: nn.Conv2d(16, 128, 5), 16 * 25, 128 * 25),
}

# name -> (expected variance as a function of fan_in and fan_out, "normal" or "uniform")
INIT_FORMULAS = {
    "normal": (lambda fi, fo: 1.0, "normal"),
    "uniform": (lambda fi, fo: 1.0 / 3.0, "uniform"),  # U[-1, 1]: (b - a)^2 / 12
    "small": (lambda fi, fo: 0.01 ** 2, "normal"),
    "xavier_normal": (lambda fi, fo: 1.0 / ((fi + fo) / 2), "normal"),
    "xavier_uniform": (lambda fi, fo: 1.0 / ((fi + fo) / 2), "uniform"),
    "lecun_normal": (lambda fi, fo: 1.0 / fi, "normal"),
    "lecun_uniform": (lambda fi, fo: 1.0 / fi, "uniform"),
    "he_normal": (lambda fi, fo: 2.0 / fi, "normal"),
    "he_uniform": (lambda fi, fo: 2.0 / fi, "uniform"),
}


def init_layer(layer: nn.Module, name: str, **cfg) -> nn.Module:
    """Initialise one layer through the model factory's own path (models.initialise)."""
    torch.manual_seed(0)
    with torch.no_grad():
        layer.bias.fill_(0.5)  # so that "biases are 0" is something the init has to do
    models.initialise(layer, {"init": name, "activation": "relu", **cfg})
    return layer


def assert_distribution(w: torch.Tensor, var: float, shape: str) -> None:
    w = w.detach().double().flatten()
    n = len(w)
    rel_sd = math.sqrt(2 / n) if shape == "normal" else math.sqrt(0.8 / n)
    assert w.var().item() == pytest.approx(var, rel=5 * rel_sd)
    assert abs(w.mean().item()) < 5 * math.sqrt(var / n)
    if shape == "uniform":  # U(-r, r) with r = sqrt(3 var): nothing beyond r, and the bound is reached
        r = math.sqrt(3 * var)
        assert w.abs().max().item() <= r * (1 + 1e-6)
        assert w.abs().max().item() >= r * 0.999
    else:  # a normal has P(|z| > sqrt(3)) = 8.3% of its draws beyond the support of the same-variance uniform
        beyond = (w.abs() > math.sqrt(3 * var)).double().mean().item()
        assert beyond == pytest.approx(0.0833, abs=0.02)


@pytest.mark.parametrize("layer_kind", list(LAYERS))
@pytest.mark.parametrize("name", list(INIT_FORMULAS))
def test_init_variance_matches_formula(name, layer_kind):
    make, fan_in, fan_out = LAYERS[layer_kind]
    layer = init_layer(make(), name)
    var, shape = INIT_FORMULAS[name]
    assert_distribution(layer.weight, var(fan_in, fan_out), shape)
    assert torch.count_nonzero(layer.bias) == 0  # lecture 002: biases start at 0


@pytest.mark.parametrize("layer_kind", list(LAYERS))
def test_zeros_and_constant_inits(layer_kind):
    make = LAYERS[layer_kind][0]
    assert torch.count_nonzero(init_layer(make(), "zeros").weight) == 0
    layer = init_layer(make(), "constant", init_value=0.37)
    assert torch.all(layer.weight == torch.tensor(0.37))
    assert torch.count_nonzero(layer.bias) == 0
    assert model_cfg()["init_value"] == 0.1  # the documented default of init = "constant"


def test_conv_fan_in_is_in_channels_times_kernel_size():
    """Lecture 003: fan_in = kernel_size^2 x in_channels. Same in_channels, kernel 3x3 vs 7x7: variance ratio 49/9."""
    small = init_layer(nn.Conv2d(64, 256, 3), "he_normal").weight.var().item()
    large = init_layer(nn.Conv2d(64, 256, 7), "he_normal").weight.var().item()
    assert small == pytest.approx(2 / (64 * 9), rel=0.03)  # n = 147,456: 5 sd = 1.8%
    assert large == pytest.approx(2 / (64 * 49), rel=0.03)


# name of the activation -> the init `auto` must pick for its hidden layers (lectures 000 003 004)
AUTO_PAIRING = {
    "relu": "he_normal", "leaky_relu": "he_normal", "rrelu": "he_normal", "prelu": "he_normal",
    "elu": "he_normal", "gelu": "he_normal", "maxout": "he_normal",
    "selu": "lecun_normal",
    "tanh": "xavier_normal", "sigmoid": "xavier_normal", "identity": "xavier_normal",
}


@pytest.mark.parametrize("activation", list(AUTO_PAIRING))
def test_auto_init_pairs_activation_with_its_scheme_and_output_layer_is_xavier(activation):
    assert set(AUTO_PAIRING) == set(C.ACTIVATIONS)
    recipe = validate({"data.source": "iris", "model.activation": activation, "model.init": "auto",
                       "model.hidden": [600, 300]})
    model = models.build_model(recipe, fake_data((200,), 100))
    layers = models.weight_layers(model)
    assert len(layers) == 3
    scheme = AUTO_PAIRING[activation]
    for layer in layers[:-1]:
        fan_in = layer.weight.shape[1]
        fan_out = layer.weight.shape[0]  # maxout: k pieces per output unit (fan_in is what matters for He)
        assert_distribution(layer.weight, INIT_FORMULAS[scheme][0](fan_in, fan_out), "normal")
    out = layers[-1]  # Linear(300, 100): Xavier 1/200, He would be 2/300, LeCun 1/300
    assert_distribution(out.weight, 1 / ((300 + 100) / 2), "normal")
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0


# ---------------------------------------------------------------------------------------------------------------
# Activations: against the formula or torch's function, and the lectures' exact numbers.

Z = torch.linspace(-6, 6, 241, dtype=torch.float64)
SELU_ALPHA, SELU_LAMBDA = 1.6732632423543772, 1.0507009873554805  # lecture 000/003/004, EXACT


def act(name: str, **keys) -> nn.Module:
    return C.ACTIVATIONS[name].build(model_cfg(activation=name, **keys)).double()


def slope_at(module: nn.Module, z: float) -> float:
    x = torch.tensor([z], dtype=torch.float64, requires_grad=True)
    module(x).sum().backward()
    return x.grad.item()


FORMULAS = {
    "sigmoid": lambda z: 1 / (1 + torch.exp(-z)),
    "tanh": lambda z: (torch.exp(z) - torch.exp(-z)) / (torch.exp(z) + torch.exp(-z)),
    "identity": lambda z: z,
    "relu": lambda z: torch.where(z > 0, z, torch.zeros_like(z)),
    "leaky_relu": lambda z: torch.maximum(0.01 * z, z),
    "elu": lambda z: torch.where(z > 0, z, torch.exp(z) - 1),
    "selu": lambda z: SELU_LAMBDA * torch.where(z > 0, z, SELU_ALPHA * (torch.exp(z) - 1)),
    "gelu": lambda z: z * 0.5 * (1 + torch.erf(z / math.sqrt(2))),  # z * Phi(z)
    "prelu": lambda z: torch.where(z > 0, z, 0.25 * z),  # at its initial slope
}


@pytest.mark.parametrize("name", list(FORMULAS))
def test_activation_matches_formula(name):
    torch.testing.assert_close(act(name).eval()(Z), FORMULAS[name](Z), rtol=1e-12, atol=1e-12)


def test_every_activation_is_covered():
    assert set(FORMULAS) | {"rrelu", "maxout"} == set(C.ACTIVATIONS)


def test_sigmoid_slope_lecture_numbers():
    sig = act("sigmoid")
    assert slope_at(sig, 0.0) == 0.25  # max of sigma(1 - sigma), EXACT
    assert slope_at(sig, 10.0) == pytest.approx(4.54e-5, abs=5e-8)  # 4.54e-5 as printed (3 figures)
    assert slope_at(sig, -10.0) == pytest.approx(4.54e-5, abs=5e-8)
    assert max(slope_at(sig, z) for z in Z.tolist()) == 0.25


def test_tanh_slope_one_at_zero():
    assert slope_at(act("tanh"), 0.0) == 1.0


def test_elu_at_minus_one_and_alpha_key():
    assert act("elu")(torch.tensor([-1.0], dtype=torch.float64)).item() == pytest.approx(-0.632121, abs=5e-7)
    assert act("elu", elu_alpha=2.0)(torch.tensor([-1.0], dtype=torch.float64)).item() == pytest.approx(
        2 * (math.exp(-1) - 1), abs=1e-12)


def test_selu_constants():
    selu = act("selu")
    # z -> -inf: lambda * alpha * (e^z - 1) -> -lambda * alpha; z > 0: lambda * z
    assert selu(torch.tensor([-50.0], dtype=torch.float64)).item() == pytest.approx(-SELU_LAMBDA * SELU_ALPHA,
                                                                                     rel=1e-12)
    assert selu(torch.tensor([1.0], dtype=torch.float64)).item() == pytest.approx(SELU_LAMBDA, rel=1e-12)


def test_gelu_is_exact_not_tanh_approximation():
    gelu = act("gelu")
    assert gelu(torch.tensor([1.0], dtype=torch.float64)).item() == pytest.approx(0.841345, abs=5e-7)
    # the tanh approximation gives 0.841192 at 1: the tolerance above rules it out
    torch.testing.assert_close(gelu(Z), F.gelu(Z, approximate="none"))


def test_leaky_relu_slope_key():
    assert model_cfg()["slope"] == 0.01  # the recipe default (lecture 003's value)
    assert C.ACTIVATIONS["leaky_relu"].build({}).negative_slope == 0.01  # no key at all: same default
    leaky = act("leaky_relu", slope=0.1)
    assert leaky(torch.tensor([-2.0], dtype=torch.float64)).item() == pytest.approx(-0.2, rel=1e-12)
    assert leaky(torch.tensor([3.0], dtype=torch.float64)).item() == 3.0


def test_prelu_starts_at_quarter_and_learns_its_slope():
    prelu = act("prelu")
    params = list(prelu.parameters())
    assert len(params) == 1 and params[0].requires_grad
    assert params[0].item() == 0.25
    x = torch.tensor([-2.0, -1.0, 3.0], dtype=torch.float64)
    prelu(x).sum().backward()
    assert params[0].grad.item() == pytest.approx(-3.0)  # d/d alpha of sum(alpha * z for z < 0)


def test_rrelu_random_slope_in_training_and_mean_slope_at_test():
    rrelu = act("rrelu").train()
    z = -torch.rand(20000, dtype=torch.float64) - 0.1  # all negative
    torch.manual_seed(0)
    slopes = rrelu(z) / z
    assert slopes.min().item() >= 1 / 8 - 1e-12 and slopes.max().item() <= 1 / 3 + 1e-12
    assert slopes.std().item() == pytest.approx((1 / 3 - 1 / 8) / math.sqrt(12), rel=0.05)  # uniform spread
    assert slopes.mean().item() == pytest.approx((1 / 8 + 1 / 3) / 2, abs=0.003)
    rrelu.eval()
    torch.testing.assert_close(rrelu(z), z * (1 / 8 + 1 / 3) / 2)  # test time: the mean slope, no randomness
    pos = torch.rand(100, dtype=torch.float64)
    torch.testing.assert_close(rrelu.train()(pos), pos)


# ---------------------------------------------------------------------------------------------------------------
# Maxout (lecture 003): k times the parameters; with k = 2 it represents ReLU and leaky ReLU exactly.


@pytest.mark.parametrize("k", [2, 3, 5])
def test_maxout_parameter_count(k):
    assert models.count_parameters(C.Maxout(13, 7, k)) == k * (13 * 7 + 7)
    recipe = validate({"data.source": "iris", "model.activation": "maxout", "model.maxout_k": k,
                       "model.hidden": [16, 8]})
    model = models.build_model(recipe, fake_data((4,), 3))
    expected = k * (4 * 16 + 16) + k * (16 * 8 + 8) + (8 * 3 + 3)  # two maxout layers, linear output
    assert models.count_parameters(model) == expected


def maxout_with_pieces(w: torch.Tensor, b: torch.Tensor, slope: float) -> C.Maxout:
    """Maxout(in, out, k=2) whose two pieces for output unit j are (W_j, b_j) and slope * (W_j, b_j)."""
    out_f, in_f = w.shape
    m = C.Maxout(in_f, out_f, k=2).double()
    with torch.no_grad():  # pieces of unit j are rows j*k .. j*k + k-1 (forward views (B, out, k))
        m.linear.weight[0::2] = w
        m.linear.bias[0::2] = b
        m.linear.weight[1::2] = slope * w
        m.linear.bias[1::2] = slope * b
    return m


def test_maxout_represents_relu_and_leaky_relu_exactly():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(400, 5, generator=g, dtype=torch.float64)
    z = x @ w.T + b
    assert (z < 0).any() and (z > 0).any()
    torch.testing.assert_close(maxout_with_pieces(w, b, 0.0)(x), F.relu(z), rtol=0, atol=1e-12)
    torch.testing.assert_close(maxout_with_pieces(w, b, 0.1)(x), F.leaky_relu(z, 0.1), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Optimizers: the right torch class with the recipe's hyperparameters; weight decay on weights only.


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.PReLU(), nn.Linear(8, 3))


OPTIMIZER_CASES = {
    # name: (torch class, extra train keys, expected entries of every param group)
    "sgd": (torch.optim.SGD, {}, {"momentum": 0.0, "nesterov": False}),
    "momentum": (torch.optim.SGD, {}, {"momentum": 0.9, "nesterov": False}),
    "nesterov": (torch.optim.SGD, {}, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {"eps": 1e-6}, {"eps": 1e-6}),
    "rmsprop": (torch.optim.RMSprop, {"rho": 0.9, "eps": 1e-7}, {"alpha": 0.9, "eps": 1e-7, "momentum": 0.0}),
    "adam": (torch.optim.Adam, {"beta1": 0.8, "beta2": 0.99}, {"betas": (0.8, 0.99), "eps": 1e-8}),
    "adamw": (torch.optim.AdamW, {"beta1": 0.8}, {"betas": (0.8, 0.999), "eps": 1e-8}),
    "nadam": (torch.optim.NAdam, {"beta2": 0.98}, {"betas": (0.9, 0.98), "eps": 1e-8}),
}


@pytest.mark.parametrize("name", list(OPTIMIZER_CASES))
def test_optimizer_class_and_hyperparameters(name):
    assert set(OPTIMIZER_CASES) == set(C.OPTIMIZERS)
    cls, keys, expected = OPTIMIZER_CASES[name]
    model = small_net()
    opt = C.build_optimizer(model, train_cfg(optimizer=name, lr=0.03, weight_decay=1e-3, **keys))
    assert type(opt) is cls
    for group in opt.param_groups:
        assert group["lr"] == 0.03
        for key, value in expected.items():
            assert group[key] == pytest.approx(value), key
    weights = {id(m.weight) for m in model if isinstance(m, nn.Linear)}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert set(decay) == {id(p) for p in model.parameters()}  # every parameter is optimised, once
    for pid, wd in decay.items():
        assert wd == (1e-3 if pid in weights else 0.0)  # biases, BN gamma/beta, PReLU slope: no decay


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_no_weight_decay_means_none_at_all(name):
    """torch.optim.AdamW defaults to weight_decay=0.01: train.weight_decay = 0 must still mean 0."""
    opt = C.build_optimizer(small_net(), train_cfg(optimizer=name, weight_decay=0.0))
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)


def test_explicit_momentum_overrides_the_default():
    for name in ("sgd", "momentum", "nesterov", "rmsprop"):
        opt = C.build_optimizer(small_net(), train_cfg(optimizer=name, momentum=0.5))
        assert all(g["momentum"] == 0.5 for g in opt.param_groups)


def test_weight_decay_step_shrinks_weights_not_biases():
    """With zero gradients, one SGD step is w <- w - lr * wd * w on weights, and leaves every other parameter."""
    model = small_net()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = C.build_optimizer(model, train_cfg(optimizer="sgd", lr=0.1, weight_decay=0.01))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 0.1 * 0.01) if p.ndim > 1 else before[n]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# LR schedules: lecture 002, "decay the LR by a factor of ~100 or more by the end of training".


def lrs_per_epoch(schedule: str, epochs: int, **keys) -> list[float]:
    """The LR of each epoch 1..epochs, stepping the scheduler once per epoch as the training loop does."""
    tr = train_cfg(schedule=schedule, epochs=epochs, lr=0.1, **keys)
    opt = C.build_optimizer(small_net(), tr)
    sched = C.SCHEDULES[schedule].build(opt, tr)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: a no-op, but the scheduler expects the optimizer to step first
        if sched is not None:
            sched.step()
    return lrs


@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
@pytest.mark.parametrize("factor", [100.0, 1000.0])
def test_decay_reaches_lr_over_decay_factor_at_last_epoch(schedule, factor):
    lrs = lrs_per_epoch(schedule, 20, decay_factor=factor)
    assert lrs[0] == 0.1
    assert lrs[-1] == pytest.approx(0.1 / factor, rel=1e-9)
    assert all(a > b for a, b in itertools.pairwise(lrs))  # decreasing every epoch
    assert train_cfg()["decay_factor"] >= 100  # the default obeys the lecture's "~100 or more"


def test_step_schedule_halves_every_step_size():
    lrs = lrs_per_epoch("step", 9, step_size=3)
    assert lrs == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3, rel=1e-12)


@pytest.mark.parametrize("schedule", ["constant", "plateau"])
def test_constant_and_plateau_leave_the_lr_to_the_loop(schedule):
    assert lrs_per_epoch(schedule, 5) == [0.1] * 5


def test_loop_applies_the_schedule_per_epoch():
    """The decay seen in metrics rows: fit() must step the scheduler once per epoch, not per batch."""
    from dlrecipe.data import load_data
    from dlrecipe.loop import fit

    recipe = validate({"data.source": "iris", "train.schedule": "exponential", "train.epochs": 5,
                       "train.patience": 0, "train.lr": 0.1, "model.hidden": [8]})
    data = load_data(recipe)
    result = fit(models.build_model(recipe, data), data, recipe.section("train"), batch_size=16)
    lrs = [row["lr"] for row in result.history]
    assert lrs == pytest.approx([0.1 * 100 ** (-i / 4) for i in range(5)], rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Losses and penalties.


def test_cross_entropy_at_zero_logits_is_log_c():
    loss = C.LOSSES["cross_entropy"].build({})
    y = torch.randint(0, 10, (37,), generator=torch.Generator().manual_seed(0))
    assert loss(torch.zeros(37, 10), y).item() == pytest.approx(2.302585, abs=5e-7)  # lecture 003, EXACT
    assert C.log_c(10) == pytest.approx(2.302585, abs=5e-7)
    assert loss(torch.zeros(5, 3), torch.tensor([0, 1, 2, 0, 1])).item() == pytest.approx(math.log(3), rel=1e-6)


def test_mse_and_huber_against_hand_formulas():
    pred = torch.tensor([0.0, 1.0, 3.0, -4.0], dtype=torch.float64)
    target = torch.tensor([0.5, 1.0, 0.0, 0.0], dtype=torch.float64)
    d = (pred - target).abs()  # 0.5, 0, 3, 4
    assert C.LOSSES["mse"].build({})(pred, target).item() == pytest.approx((d ** 2).mean().item())
    delta = 2.0
    by_hand = [0.5 * v ** 2 if v <= delta else delta * (v - 0.5 * delta) for v in d.tolist()]
    assert C.LOSSES["huber"].build({"huber_delta": delta})(pred, target).item() == pytest.approx(sum(by_hand) / 4)
    assert C.default_loss("classification") == "cross_entropy" and C.default_loss("regression") == "mse"


def test_weight_penalty_is_l1_times_sum_abs_weights_only():
    model = small_net()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # biases, BN gamma/beta and the PReLU slope would all show up if counted
    lin1, lin2 = model[0], model[3]
    by_hand = 0.003 * (lin1.weight.abs().sum() + lin2.weight.abs().sum())
    penalty = C.weight_penalty(model, 0.003)
    assert penalty.item() == pytest.approx(by_hand.item(), rel=1e-6)
    penalty.backward()  # it is part of the objective: gradients flow to the weights only
    torch.testing.assert_close(lin1.weight.grad, 0.003 * lin1.weight.detach().sign())
    assert model[0].bias.grad is None and model[1].weight.grad is None


# ---------------------------------------------------------------------------------------------------------------
# Registries: every entry explains itself and names its lecture (shown by `dlrecipe components`).

REGISTRIES = {
    "activations": C.ACTIVATIONS, "inits": C.INITS, "norms": C.NORMS, "regularisers": C.REGULARISERS,
    "output_biases": C.OUTPUT_BIASES, "optimizers": C.OPTIMIZERS, "schedules": C.SCHEDULES, "losses": C.LOSSES,
    "preprocess": C.PREPROCESS, "model_kinds": models.MODEL_KINDS, "datasets": DATASETS,
}
LECTURE_FILES = {"000", "001", "002", "003", "004", "-"}  # "-": not from the lectures (e.g. your own model)


@pytest.mark.parametrize("registry", list(REGISTRIES))
def test_registry_entries_have_summary_and_lecture(registry):
    entries = REGISTRIES[registry]
    assert entries
    for name, entry in entries.items():
        assert isinstance(entry.summary, str) and entry.summary.strip(), name
        assert isinstance(entry.lecture, str) and entry.lecture.strip(), name
        assert set(entry.lecture.split()) <= LECTURE_FILES, (name, entry.lecture)


def test_registries_hold_the_lectures_components():
    """The names the foundation issue lists (from ../shared/LECTURES.md): none missing."""
    assert set(C.ACTIVATIONS) == {"sigmoid", "tanh", "identity", "relu", "leaky_relu", "rrelu", "prelu", "elu",
                                  "selu", "gelu", "maxout"}
    assert set(C.INITS) == {"zeros", "constant", "normal", "uniform", "small", "xavier_normal", "xavier_uniform",
                            "lecun_normal", "lecun_uniform", "he_normal", "he_uniform", "auto"}
    assert set(C.OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam"}
    assert {"constant", "plateau", "step", "exponential", "cosine"} <= set(C.SCHEDULES)
    assert {"cross_entropy", "mse", "huber"} <= set(C.LOSSES)
    assert {"l2", "l1", "elastic_net", "dropout", "dropconnect"} <= set(C.REGULARISERS)
