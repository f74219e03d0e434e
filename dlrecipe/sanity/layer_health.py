"""layer_health: per-layer activation mean/std, saturation, dead and identical units, gradient norms at init."""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import components as C
from .base import INPUT_SCALE_WARN, Check, _outputs, _seeded_rows, _units, check_copy, input_rms

NAME = "layer_health"
LAYER_BATCH = 256              # examples in the batch the activations and gradients are measured on
SATURATION_TANH = 0.99         # |tanh| above this counts as saturated (slope < 0.02; lecture 003's experiment)
SATURATION_SIGMOID = 0.01      # sigmoid below this or above 1 - this (slope < 0.01, 4% of its maximum 0.25)
SATURATED_WARN = 0.10          # fraction of saturated activations in a layer: warn above
SATURATED_FAIL = 0.50          # fail above (the N(0,1) deep tanh of lecture 003: ~97%)
DEAD_WARN = 0.10               # fraction of units zero on the whole batch (dead ReLUs): warn above
DEAD_FAIL = 0.50               # fail above
DUPLICATE_FAIL = 0.50          # fraction of (non-constant) units identical to another unit: symmetry never broken
COLLAPSE_WARN = 0.2            # std of the last hidden layer / the first: warn below (lecture: relu+xavier 0.18)
COLLAPSE_FAIL = 0.01           # fail below (0.01 init on a deep tanh net of 128 units: ~1e-5)
EXPLODE_WARN = 5.0             # the same ratio: warn above (activations grow layer by layer)
EXPLODE_FAIL = 100.0           # fail above
ACT_STD_FAIL = 100.0           # any hidden activation std above this: fail (unnormalised inputs, huge init)
GRAD_RATIO_WARN = 1e-2         # relative gradient ||dW||/||W|| of the first layer over the last: warn below or
GRAD_RATIO_FAIL = 1e-3         # above its inverse; fail below this or above its inverse (vanishing / exploding)

ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.RReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU,
               nn.Identity, nn.ReLU6, nn.Hardtanh, C.Maxout)
ZERO_BELOW = (nn.ReLU, nn.ReLU6)   # activations whose units can die (exactly 0 for every input)


def layer_health(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, loss_fn: nn.Module | None = None,
                 task: str = "classification") -> list[dict]:
    """Per weight layer at initialisation: activation statistics of the non-linearity after it and its gradient.

    Runs a copy of `model` (dropout off) on the batch x, backpropagates loss_fn(outputs, y) (without y: half the
    mean squared output, enough for gradient norms) and returns one row per weight layer (Linear/Conv, in forward
    order): activation mean/std, saturated fraction (tanh, sigmoid), zero fraction, dead units (0 on the whole batch),
    constant units, duplicate units (identical to another unit), weight std, gradient norm and relative gradient
    ||dW|| / ||W||. The output layer's "activation" is its raw output.
    """
    from ..models import weight_layers

    m = check_copy(model)
    layers = weight_layers(m)
    names = {mod: name for name, mod in m.named_modules()}
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: calls.append((mod, o.detach())))
             for mod in m.modules() if isinstance(mod, ACTIVATIONS) or mod in layers]
    m.zero_grad(set_to_none=True)
    out = _outputs(m, x, task)
    loss = loss_fn(out, y) if loss_fn is not None else out.pow(2).mean() / 2
    if loss.requires_grad:  # a model with frozen weights (requires_grad False): activations only
        loss.backward()
    for h in hooks:
        h.remove()

    # pair each weight layer's call with the activation that follows it (before the next weight layer)
    pairs: list[tuple[nn.Module, torch.Tensor, nn.Module | None, torch.Tensor | None]] = []
    for mod, o in calls:
        if mod in layers:
            pairs.append((mod, o, None, None))
        elif pairs and pairs[-1][2] is None:
            lay, lo, _, _ = pairs[-1]
            pairs[-1] = (lay, lo, mod, o)
    rows = []
    for i, (lay, pre, act_mod, act) in enumerate(pairs):
        a = (act if act is not None else pre).double()
        u = _units(a)
        w = lay.weight.detach()  # float32 statistics: a 4096x4096 layer in float64 costs more than the forward pass
        gw = lay.weight.grad.detach() if lay.weight.grad is not None else None
        w_norm, g_norm = float(w.norm()), float(gw.norm()) if gw is not None else math.nan
        unit_std = u.std(dim=1, unbiased=False)
        scale = float(u.abs().max()) or 1.0
        constant = unit_std <= 1e-7 * scale
        row = {
            "layer": i + 1, "name": names.get(lay, "?"), "kind": type(lay).__name__, "desc": _describe(lay),
            "activation": type(act_mod).__name__ if act_mod is not None else "output",
            "activation_module": names.get(act_mod, "") if act_mod is not None else "",
            "units": u.shape[0], "weight_std": float(w.std(unbiased=False)) if w.numel() > 1 else 0.0,
            "weights_equal": bool(w.numel() > 1 and float(w.max() - w.min()) == 0.0),
            "weight_value": float(w.flatten()[0]),
            "pre_std": float(pre.double().std(unbiased=False)),
            "act_mean": float(a.mean()), "act_std": float(a.std(unbiased=False)),
            "saturated": _saturated(act_mod, a), "zero_frac": float((a == 0).double().mean()),
            "dead": float((u == 0).all(dim=1).double().mean()) if isinstance(act_mod, ZERO_BELOW) else 0.0,
            "constant": float(constant.double().mean()),
            "duplicate": _duplicate_fraction(u[~constant]) * float((~constant).double().mean()),
            "grad_norm": g_norm, "rel_grad": g_norm / w_norm if w_norm > 0 else math.nan,
            "grad_finite": gw is None or bool(torch.isfinite(gw).all()),
        }
        rows.append(row)
    return rows


def _describe(layer: nn.Module) -> str:
    """'Linear 64->128', 'Conv1d 1->32 k5': how the advice names a layer."""
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}->{layer.out_features}"
    return f"{type(layer).__name__} {layer.in_channels}->{layer.out_channels} k{layer.kernel_size[0]}"


def _saturated(act_mod: nn.Module | None, a: torch.Tensor) -> float:
    if isinstance(act_mod, nn.Tanh):
        return float((a.abs() > SATURATION_TANH).double().mean())
    if isinstance(act_mod, nn.Sigmoid):
        return float(((a < SATURATION_SIGMOID) | (a > 1 - SATURATION_SIGMOID)).double().mean())
    return 0.0


def _duplicate_fraction(u: torch.Tensor, max_units: int = 512) -> float:
    """Fraction of units (rows) whose activations over the batch equal another unit's (to 1e-6 of the scale)."""
    if len(u) < 2:
        return 0.0
    u = u[:max_units]
    scale = float(u.abs().max()) or 1.0
    d = torch.cdist(u, u)  # (H, H) Euclidean distances between units over the batch
    d.fill_diagonal_(math.inf)
    tol = 1e-6 * scale * math.sqrt(u.shape[1])
    return float((d.min(dim=1).values <= tol).double().mean())


def judge_layers(rows: list[dict], x_rms: float) -> tuple[str, str, str]:
    """(status, observed, advice) for layer_health rows: the first problem found names its cause."""
    hidden = [r for r in rows if r["activation"] != "output"]
    problems: list[tuple[str, str]] = []   # (status, advice)
    unnormalised = x_rms > INPUT_SCALE_WARN
    norm_hint = (f"; the inputs are not normalised (RMS {x_rms:.3g}): set data.preprocess = 'standardize'"
                 if unnormalised else "")
    for r in rows:
        if r["weights_equal"]:
            v = r["weight_value"]
            kind = "zero init" if v == 0 else f"constant init ({v:g})"
            problems.append(("fail", (f"every weight of layer {r['layer']} ({r['desc']}) equals {v:g} ({kind}): "
                                     f"all units compute the same thing and symmetry is never broken; use a random "
                                     f"init (model.init = 'auto')")))
            break
    for r in hidden:
        if r["duplicate"] > DUPLICATE_FAIL:
            problems.append(("fail", (f"{r['duplicate']:.0%} of the units of layer {r['layer']} ({r['desc']}) are identical to "
                                     f"another unit: symmetry never broken (zero or constant init); use a random "
                                     f"init (model.init = 'auto')")))
            break
    for r in hidden:
        if r["constant"] > DEAD_FAIL and r["dead"] <= DEAD_FAIL:
            problems.append(("fail", (f"{r['constant']:.0%} of the units of layer {r['layer']} output the same value "
                                     f"for every input (zero init, or inputs that never reach the model)")))
            break
    for r in hidden:
        if r["act_std"] > ACT_STD_FAIL:
            problems.append(("fail", f"activations of layer {r['layer']} have std {r['act_std']:.3g}: they explode"
                                     + (norm_hint or "; scale the init down (model.init = 'auto')")))
            break
    messages = {  # column: (warn above, fail above, what it means and what to do)
        "saturated": (SATURATED_WARN, SATURATED_FAIL, ("of the {activation} activations of layer {layer} are "
                      "saturated before the first update: scale down the init (model.init = 'xavier_normal') or "
                      "normalise the inputs")),
        "dead": (DEAD_WARN, DEAD_FAIL, ("of the ReLU units of layer {layer} are dead (0 for the whole batch): use He "
                 "init (model.init = 'auto'), centre the inputs, or try leaky_relu")),
    }
    for column, (warn, fail, text) in messages.items():
        r = next((r for r in hidden if r[column] > warn), None)  # the first layer over the threshold
        if r is not None:
            problems.append(("fail" if r[column] > fail else "warn",
                             f"{r[column]:.0%} " + text.format(**r) + norm_hint))
    if len(hidden) >= 2 and hidden[0]["act_std"] > 0:
        ratio = hidden[-1]["act_std"] / hidden[0]["act_std"]
        if ratio < COLLAPSE_WARN:
            problems.append(("fail" if ratio < COLLAPSE_FAIL else "warn",
                             (f"activations collapse towards 0 with depth (std {hidden[0]['act_std']:.3g} in layer "
                             f"{hidden[0]['layer']}, {hidden[-1]['act_std']:.3g} in layer {hidden[-1]['layer']}): "
                             f"the init is too small for this depth; use model.init = 'auto' (xavier for tanh, "
                             f"he for relu) or batch norm")))
        elif ratio > EXPLODE_WARN:
            problems.append(("fail" if ratio > EXPLODE_FAIL else "warn",
                             (f"activations grow with depth (std {hidden[0]['act_std']:.3g} -> "
                             f"{hidden[-1]['act_std']:.3g}): the init is too large; use model.init = 'auto'")))
    if not all(r["grad_finite"] for r in rows):
        problems.append(("fail", "NaN/Inf gradients at initialisation: check the inputs for NaN/Inf" + norm_hint))
    rel = [r for r in rows if math.isfinite(r["rel_grad"])]
    if len(rel) >= 2 and rel[-1]["rel_grad"] > 0:
        gr = rel[0]["rel_grad"] / rel[-1]["rel_grad"]
        if gr < GRAD_RATIO_WARN:
            problems.append(("fail" if gr < GRAD_RATIO_FAIL else "warn",
                             f"vanishing gradients: the first layer's relative gradient is {gr:.2g}x the last "
                             f"layer's, so the first layers barely learn"
                             + (" (sigmoid's slope is at most 0.25: use relu or tanh, or batch norm)"
                                if any(r["activation"] == "Sigmoid" for r in hidden) else
                                "; use model.init = 'auto', relu, or batch norm")))
        elif gr > 1 / GRAD_RATIO_WARN:
            problems.append(("fail" if gr > 1 / GRAD_RATIO_FAIL else "warn",
                             f"exploding gradients: the first layer's relative gradient is {gr:.2g}x the last "
                             f"layer's; scale the init down or use batch norm" + norm_hint))
    stds = " ".join(f"{r['act_std']:.3g}" for r in hidden) or "-"
    observed = f"activation std per layer: {stds}"
    if rel and len(rel) >= 2 and rel[-1]["rel_grad"] > 0:
        observed += f"; gradient ratio first/last {rel[0]['rel_grad'] / rel[-1]['rel_grad']:.2g}"
    if not problems:
        return "pass", observed, ""
    status = "fail" if any(s == "fail" for s, _ in problems) else "warn"
    first = next(a for s, a in problems if s == status)
    return status, observed, first


def check_layer_health(model: nn.Module, data, tr: dict, *, seed: int = 0) -> tuple[Check, list[dict]]:
    """Check: activations and gradients per layer at initialisation (rows for layers.csv)."""
    from ..loop import loss_function

    n = min(len(data.x_train), LAYER_BATCH)
    idx = _seeded_rows(len(data.x_train), n, seed, data.x_train.device)
    x = data.x_train[idx]
    rows = layer_health(model, x, data.y_train[idx], loss_function(data.task, tr), data.task)
    add_hidden_unit_columns(model, x, rows)
    status, observed, advice = judge_layers(rows, input_rms(x))
    expected = (f"saturated < {SATURATED_WARN:.0%}, dead < {DEAD_WARN:.0%}, no identical units, std ratio last/first "
                f"{COLLAPSE_WARN:g}-{EXPLODE_WARN:g}, gradient ratio {GRAD_RATIO_WARN:g}-{1 / GRAD_RATIO_WARN:g}")
    return Check("layer_health", status, observed, expected, advice, details={"input_rms": input_rms(x)}), rows



def add_hidden_unit_columns(model: nn.Module, x: torch.Tensor, rows: list[dict]) -> None:
    """layers.csv gains lecture 002's hidden-unit measures (health.py: sparsity across samples, mean |correlation|
    between units, correlated and input-ignoring units) for each layer's activation; shown, not judged at init
    (the train summary judges them after training)."""
    from ..health import hidden_unit_health

    stats = {r["name"]: r for r in hidden_unit_health(check_copy(model), x)[0]}
    for row in rows:
        h = stats.get(row.get("activation_module", ""))
        for key in ("sparsity", "mean_abs_corr", "correlated_units", "ignoring_units"):
            row[key] = h[key] if h is not None else math.nan


def run(ctx) -> Check:
    check, ctx.tables["layers"] = check_layer_health(ctx.model, ctx.data, ctx.tr, seed=ctx.seed)
    return check
