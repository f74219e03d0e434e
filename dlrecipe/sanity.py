"""`dlrecipe sanity`: steps 1 and 2 of the babysitting recipe, as checks with verdicts (lectures 002 and 003).

Each check is a function that takes the model at initialisation (never modified: checks work on copies) and
returns a `Check` row: check, status (pass / warn / fail), observed, expected, advice. `run_sanity` runs them in
order, writes the run folder and returns a `SanityResult`:

  init_loss          loss at init against log C (regression: predicting the target mean), weight decay off
  gradient_check     central differences in float64 against backprop, a sample of parameters in every layer
  layer_health       per-layer activation mean/std, saturation, dead and identical units, gradient norms
  update_ratio       ||update|| / ||weights|| per layer after one step (about 1e-3 is healthy)
  input_independent  a short training on zeroed inputs must do worse than on the real inputs
  overfit_small      a small sample to ~100% training accuracy, regularisation off; diagnosis and LR retries

Every threshold below is a named constant with the reason for its value; the lectures give none of them except
log C and the 6-layer 4096-unit experiment (LECTURES.md: Diagnostics).
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import components as C
from .errors import UserError

CHECKS = ("init_loss", "gradient_check", "layer_health", "update_ratio", "input_independent", "overfit_small")

# --- init_loss ---------------------------------------------------------------------------------------------------
INIT_LOSS_BATCHES = 4          # minibatches averaged for the loss at initialisation
INIT_LOSS_WARN = 1.5           # observed - expected above this (nats; regression: target variances): warn. Exactly
                               # log C needs zero logits; He/Xavier init gives logits of std ~1-1.5, 0.3-1 nat above
INIT_LOSS_FAIL = 4.0           # above this: fail (logits of std > ~3: init far too large or unnormalised inputs)
INIT_LOSS_LOW = 0.5            # observed / expected below this: warn (the model "knows" the labels before training)

# --- gradient_check ----------------------------------------------------------------------------------------------
GRADCHECK_BATCH = 16           # examples in the check batch (float64 copy, dropout off)
GRADCHECK_PROBES = 6           # sampled entries per parameter tensor
GRADCHECK_EPS = (1e-6, 1e-4, 1e-8)  # step sizes tried per probe, the smallest error kept (a wrong backward is wrong
                               # at every step; 1e-4: less rounding noise, 1e-8: less truncation on steep losses)
GRADCHECK_FLOOR = 1e-5         # |gradient| below this is compared in absolute terms: rounding noise of the loss
                               # (logits of ~100 in float64) makes the relative error of tinier gradients meaningless
GRADCHECK_WARN = 1e-5          # max relative error above this: warn (float64 without kinks gives ~1e-8)
GRADCHECK_FAIL = 1e-3          # above this: fail (a wrong backward pass gives errors of order 1e-1 to 1)

# --- layer_health ------------------------------------------------------------------------------------------------
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
INPUT_SCALE_WARN = 10.0        # RMS of the inputs above this: advise normalising them (standardised data: ~1)

# --- update_ratio ------------------------------------------------------------------------------------------------
UPDATE_RATIO_LOW = 1e-5        # ||update|| / ||W|| after one step: about 1e-3 is healthy (CS231n); warn when the
UPDATE_RATIO_HIGH = 1e-1       # geometric mean over layers is 100x below or above it (the output layer's first
                               # step is often 10x the others': the loss is highest at init)
UPDATE_RATIO_FAIL = 1.0        # some layer's update larger than its weights: fail

# --- input_independent -------------------------------------------------------------------------------------------
INDEP_STEPS = 100              # minibatches of training for each of the two models (lecture 003: a good LR
                               # "makes the loss drop significantly within ~100 iterations")
INDEP_MIN_GAIN = 0.02          # real inputs must lower the validation loss by at least 2% against zeroed inputs
INDEP_VAL_EXAMPLES = 1000      # validation examples evaluated

# --- overfit_small -----------------------------------------------------------------------------------------------
OVERFIT_BATCHES = 8            # minibatches in the sample (lecture 003: ~5-10)
OVERFIT_MAX_EXAMPLES = 1000    # and at most this many examples (lecture 002: ~500-1000)
OVERFIT_STEPS = 3000           # iteration budget per attempt (a pass stops early: shipped recipes need 50-2000)
OVERFIT_PASS_ACC = 0.99        # classification: lecture 003 says 100%; 99% leaves room for the few examples noisy
                               # data holds twice with different labels (the spiral's arms overlap at the centre)
OVERFIT_WARN_ACC = 0.90        # warn at this or more (it learns, but not all the way within the budget)
OVERFIT_REG_PASS = 0.10        # regression: pass when the sample loss is below 10% of predicting the mean (R2 > 0.9)
OVERFIT_REG_WARN = 0.30        # warn below 30% of it
OVERFIT_FLAT = 0.10            # a loss that fell by less than 10% of its start is "flat"
OVERFIT_FLAT_STOP = 0.2        # an attempt whose best sample loss has not improved by 1% for this fraction of the
                               # budget stops: the rest would not change the diagnosis
OVERFIT_BOUNCE = 0.25          # more than a quarter of epochs ending with a higher sample loss: "bouncing"
SANITY_CPU_THREADS = 1         # torch threads on CPU while the checks run (restored afterwards): batches of <= 256
                               # examples gain little from intra-op threads, and lose 10-50x when the cores are busy
OVERFIT_RETRY_FACTORS = {      # LR multipliers retried on failure, in order, until one passes
    "high": (0.1, 0.01, 1e-3, 1e-4),
    "low": (10.0, 100.0, 1e3, 1e4),
    "unclear": (0.1, 10.0, 0.01, 100.0),
}


@dataclass
class Check:
    """One row of sanity.csv."""

    check: str
    status: str                 # pass | warn | fail
    observed: str
    expected: str
    advice: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # numbers behind the row (summary.json)


@dataclass
class SanityResult:
    run_dir: Path | None
    checks: list[Check]
    layers: list[dict]          # rows of layers.csv
    overfit: list[dict]         # rows of overfit.csv
    seconds: float = 0.0
    name: str = ""

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    def exit_code(self, strict: bool = False) -> int:
        """0 pass (warnings allowed unless strict), 1 any failure."""
        return 1 if self.status == "fail" or (strict and self.status == "warn") else 0

    @property
    def verdict(self) -> str:
        fails = [c.check for c in self.checks if c.status == "fail"]
        warns = [c.check for c in self.checks if c.status == "warn"]
        if fails:
            first = next(c for c in self.checks if c.status == "fail")
            return f"FAIL: {', '.join(fails)} failed. {first.advice}"
        if warns:
            return f"PASS with warnings ({', '.join(warns)}): the setup trains, but read the advice"
        return f"PASS: all {len(self.checks)} checks passed; next step: dlrecipe lr-find"

    def to_json(self) -> str:
        """summary.json's content plus the per-layer rows; NaN/Inf written as null."""
        import json

        from .runs import _clean

        return json.dumps(_clean(self.to_dict()), indent=2, default=str)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "command": "sanity", "status": self.status, "verdict": self.verdict,
                "run_dir": str(self.run_dir) if self.run_dir else None, "seconds": round(self.seconds, 3),
                "checks": [asdict(c) for c in self.checks], "layers": self.layers}


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the checks.

KINKED = (nn.ReLU, nn.LeakyReLU, nn.RReLU, nn.PReLU, nn.ELU, nn.ReLU6, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d,
          C.Maxout)
ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.RReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU,
               nn.Identity, nn.ReLU6, nn.Hardtanh, C.Maxout)
ZERO_BELOW = (nn.ReLU, nn.ReLU6)   # activations whose units can die (exactly 0 for every input)


def _status(bad_fail: bool, bad_warn: bool) -> str:
    return "fail" if bad_fail else "warn" if bad_warn else "pass"


def check_copy(model: nn.Module, *, dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy in training mode with dropout, DropConnect and RReLU's random slope off (deterministic)."""
    from .models import DropConnectLinear

    m = copy.deepcopy(model)
    if dtype is not None:
        m = m.to(dtype)
    m.train()
    for mod in m.modules():
        if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.RReLU)):
            mod.eval()
        if isinstance(mod, DropConnectLinear):
            mod.p = 0.0
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = 0.0  # batch statistics in the forward pass, running averages left alone
    return m


def _outputs(model: nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    out = model(x)
    return out.squeeze(-1) if task == "regression" else out


def _seeded_rows(n: int, k: int, seed: int, device) -> torch.Tensor:
    """k row indices out of n, a seeded permutation (the same rows on every run)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:k].to(device)


def _units(a: torch.Tensor) -> torch.Tensor:
    """Activations as (units, observations): MLP (B, H) -> (H, B); conv (B, C, ...) -> (C, B * positions)."""
    if a.dim() == 2:
        return a.t()
    return a.transpose(0, 1).reshape(a.shape[1], -1)


def input_rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


# ---------------------------------------------------------------------------------------------------------------
# 1. init_loss


def expected_init_loss(data, loss_fn: nn.Module, y: torch.Tensor, output_bias: str = "zero") -> tuple[float, str]:
    """The loss a model that knows nothing should have on labels y: log C, the prior's entropy, or the mean's loss."""
    if data.task == "classification":
        if output_bias == "prior":
            counts = torch.bincount(data.y_train.cpu(), minlength=data.num_outputs).double()
            p = counts.clamp_min(1) / counts.sum()
            yy = y.cpu()
            return float(-p.log()[yy].mean()), "cross-entropy of the class prior (output_bias = prior)"
        return C.log_c(data.num_outputs), f"log C = log {data.num_outputs}"
    mean = torch.full_like(y, float(data.y_train.mean()))
    return float(loss_fn(mean, y)), "loss of predicting the training target mean"


def check_init_loss(model: nn.Module, data, tr: dict, *, batch_size: int, output_bias: str = "zero",
                    seed: int = 0) -> Check:
    """Loss at initialisation with weight decay and dropout off, against log C (regression: the target mean)."""
    from .loop import loss_function

    loss_fn = loss_function(data.task, tr)
    n = min(len(data.x_train), INIT_LOSS_BATCHES * batch_size)
    idx = _seeded_rows(len(data.x_train), n, seed, data.x_train.device)
    x, y = data.x_train[idx], data.y_train[idx]
    m = check_copy(model)
    with torch.no_grad():
        losses = [float(loss_fn(_outputs(m, xb, data.task), yb)) for xb, yb in
                  zip(x.split(batch_size), y.split(batch_size))]
        loss = sum(losses) / len(losses)
        # the same batches with the recipe's regularisation: dropout on, weight decay and L1 penalties added (higher
        # by the penalty; dropout adds noise to the logits, which raises the loss on average, not on every batch)
        mr = copy.deepcopy(model).train()
        torch.manual_seed(seed)
        reg_losses = [float(loss_fn(_outputs(mr, xb, data.task), yb)) for xb, yb in
                      zip(x.split(batch_size), y.split(batch_size))]
        weights = [p for p in model.parameters() if p.ndim > 1]
        penalty = (tr.get("weight_decay", 0.0) / 2 * sum(float(w.pow(2).sum()) for w in weights)
                   + tr.get("l1", 0.0) * sum(float(w.abs().sum()) for w in weights))
        reg_loss = sum(reg_losses) / len(reg_losses) + penalty
    expected, what = expected_init_loss(data, loss_fn, y, output_bias)
    ratio = loss / expected if expected > 0 else math.inf
    excess = loss - expected
    details = {"loss": loss, "expected": expected, "excess": excess, "ratio": ratio, "loss_regularised": reg_loss,
               "penalty": penalty, "input_rms": input_rms(x)}
    observed = f"{loss:.4g} (with the recipe's regularisation {reg_loss:.4g}: L2/L1 penalty {penalty:.3g}, dropout)"
    expected_txt = f"{expected:.4g} = {what}; pass up to {INIT_LOSS_WARN:g} above (fail {INIT_LOSS_FAIL:g})"
    if not math.isfinite(loss):
        return Check("init_loss", "fail", "NaN/Inf", expected_txt,
                     "the loss is NaN/Inf before any update: check the inputs for NaN/Inf and the init scale",
                     details=details)
    advice = ""
    if excess > INIT_LOSS_WARN:
        advice = (f"the initial loss is {excess:.3g} above the expected value: the outputs are too large at init; "
                  + (f"the inputs are not normalised (RMS {details['input_rms']:.3g}): set data.preprocess = "
                     f"'standardize'" if details["input_rms"] > INPUT_SCALE_WARN else
                     "scale the init down (model.init = 'auto': xavier/he) or normalise the inputs"))
    elif ratio < INIT_LOSS_LOW:
        advice = (f"the initial loss is only {ratio:.2f}x the expected value: the model predicts the labels before "
                  f"training; check for a label leaking into the inputs, or a wrong loss")
    status = _status(excess > INIT_LOSS_FAIL, excess > INIT_LOSS_WARN or ratio < INIT_LOSS_LOW)
    return Check("init_loss", status, observed, expected_txt, advice, details=details)


# ---------------------------------------------------------------------------------------------------------------
# 2. gradient_check


def _kink_signature(model: nn.Module) -> tuple[list, Callable[[], None]]:
    """Forward hooks that record which side of every kink (ReLU at 0, max pool / maxout argmax) each unit is on."""
    import torch.nn.functional as F

    record: list = []

    def hook(mod, inputs, output):
        z = inputs[0]
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
            pool = F.max_pool1d if isinstance(mod, nn.MaxPool1d) else F.max_pool2d
            _, idx = pool(z, mod.kernel_size, mod.stride, mod.padding, mod.dilation, ceil_mode=mod.ceil_mode,
                          return_indices=True)
            record.append(idx)
        elif isinstance(mod, C.Maxout):
            pre = mod.linear(z)
            record.append(pre.view(*pre.shape[:-1], mod.out_features, mod.k).argmax(dim=-1))
        elif isinstance(mod, (nn.ReLU6, nn.Hardtanh)):
            lo, hi = (0.0, 6.0) if isinstance(mod, nn.ReLU6) else (mod.min_val, mod.max_val)
            record.append((z > lo).to(torch.int8) + (z > hi).to(torch.int8))
        else:
            record.append(z > 0)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, KINKED)]
    return record, lambda: [h.remove() for h in handles]


def gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, task: str, *,
                   probes: int = GRADCHECK_PROBES, seed: int = 0) -> list[dict]:
    """Central differences in float64 on a copy of `model` against backprop, for sampled entries of every parameter.

    Probes whose +eps and -eps evaluations fall on different sides of a kink (a ReLU pre-activation crossing 0, a
    max-pool argmax changing) are skipped: the derivative is undefined there, not wrong. Returns one row per
    parameter tensor: name, module, probes, skipped, max_rel_error.
    """
    m = check_copy(model, dtype=torch.float64)
    x = x.double()
    y = y.double() if y.is_floating_point() else y
    record, remove = _kink_signature(m)

    def f() -> float:
        record.clear()
        with torch.no_grad():
            return float(loss_fn(_outputs(m, x, task), y))

    m.zero_grad(set_to_none=True)
    loss = loss_fn(_outputs(m, x, task), y)
    loss.backward()
    base = abs(float(loss.detach()))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        grad = p.grad.detach().flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
        flat = p.data.view(-1)
        picks = torch.randperm(p.numel(), generator=g)[:probes].tolist()
        worst, skipped, used = 0.0, 0, 0
        for i in picks:
            analytic = float(grad[i])
            best, kinked = math.inf, True
            for eps in GRADCHECK_EPS:
                old = float(flat[i])
                flat[i] = old + eps
                f_plus, sig_plus = f(), list(record)
                flat[i] = old - eps
                f_minus, sig_minus = f(), list(record)
                flat[i] = old
                if any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(sig_plus, sig_minus)):
                    continue  # straddles a kink at this eps: try the next one
                kinked = False
                numeric = (f_plus - f_minus) / (2 * eps)
                floor = GRADCHECK_FLOOR * max(1.0, base)
                err = abs(analytic - numeric) / max(abs(analytic), abs(numeric), floor)
                best = min(best, err) if math.isfinite(err) else best
                if best <= GRADCHECK_WARN / 100:
                    break  # clearly right: no need for the other step sizes
            if kinked:
                skipped += 1
                continue
            used += 1
            worst = max(worst, best)
        module = name.rsplit(".", 1)[0] if "." in name else name
        rows.append({"param": name, "module": module, "probes": used, "skipped": skipped,
                     "max_rel_error": worst if used else None})
    remove()
    return rows


def check_gradients(model: nn.Module, data, tr: dict, *, seed: int = 0) -> Check:
    """Check: the largest relative error of backprop against central differences over every layer."""
    from .loop import loss_function

    idx = _seeded_rows(len(data.x_train), GRADCHECK_BATCH, seed, data.x_train.device)
    rows = gradient_check(model, data.x_train[idx], data.y_train[idx], loss_function(data.task, tr), data.task,
                          seed=seed)
    errors = [r["max_rel_error"] for r in rows if r["max_rel_error"] is not None]
    used, skipped = sum(r["probes"] for r in rows), sum(r["skipped"] for r in rows)
    expected = f"max relative error < {GRADCHECK_WARN:g} (fail above {GRADCHECK_FAIL:g})"
    if not errors:
        return Check("gradient_check", "warn", f"0 probes ({skipped} on kinks)", expected,
                     "every sampled entry sat on a kink (a ReLU at 0): nothing could be checked", details={"rows": rows})
    worst_row = max((r for r in rows if r["max_rel_error"] is not None), key=lambda r: r["max_rel_error"])
    worst = worst_row["max_rel_error"]
    observed = f"{worst:.2g} in {worst_row['param']} ({used} probes, {skipped} skipped at kinks)"
    advice = ""
    if worst > GRADCHECK_WARN:
        advice = (f"backprop disagrees with finite differences in {worst_row['param']}: a custom layer's backward "
                  f"(or a non-differentiable operation) computes a wrong gradient there")
    return Check("gradient_check", _status(worst > GRADCHECK_FAIL, worst > GRADCHECK_WARN), observed, expected,
                 advice, details={"max_rel_error": worst, "probes": used, "skipped": skipped, "rows": rows})


# ---------------------------------------------------------------------------------------------------------------
# 3. layer_health


def layer_health(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, loss_fn: nn.Module | None = None,
                 task: str = "classification") -> list[dict]:
    """Per weight layer at initialisation: activation statistics of the non-linearity after it and its gradient.

    Runs a copy of `model` (dropout off) on the batch x, backpropagates loss_fn(outputs, y) (without y: half the
    mean squared output, enough for gradient norms) and returns one row per weight layer (Linear/Conv, in forward
    order): activation mean/std, saturated fraction (tanh, sigmoid), zero fraction, dead units (0 on the whole batch),
    constant units, duplicate units (identical to another unit), weight std, gradient norm and relative gradient
    ||dW|| / ||W||. The output layer's "activation" is its raw output.
    """
    from .models import weight_layers

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
    from .loop import loss_function

    n = min(len(data.x_train), LAYER_BATCH)
    idx = _seeded_rows(len(data.x_train), n, seed, data.x_train.device)
    x = data.x_train[idx]
    rows = layer_health(model, x, data.y_train[idx], loss_function(data.task, tr), data.task)
    status, observed, advice = judge_layers(rows, input_rms(x))
    expected = (f"saturated < {SATURATED_WARN:.0%}, dead < {DEAD_WARN:.0%}, no identical units, std ratio last/first "
                f"{COLLAPSE_WARN:g}-{EXPLODE_WARN:g}, gradient ratio {GRAD_RATIO_WARN:g}-{1 / GRAD_RATIO_WARN:g}")
    return Check("layer_health", status, observed, expected, advice, details={"input_rms": input_rms(x)}), rows


# ---------------------------------------------------------------------------------------------------------------
# 4. update_ratio


def update_ratios(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tr: dict, task: str) -> list[float | None]:
    """||W_after - W_before|| / ||W_before|| per weight layer after one optimizer step (None where W = 0)."""
    from .loop import loss_function
    from .models import weight_layers

    m = copy.deepcopy(model).train()
    layers = weight_layers(m)
    before = [lay.weight.detach().clone() for lay in layers]
    opt = C.build_optimizer(m, tr)
    opt.zero_grad(set_to_none=True)
    loss = loss_function(task, tr)(_outputs(m, x, task), y)
    if tr.get("l1", 0.0) > 0:
        loss = loss + C.weight_penalty(m, tr["l1"])
    loss.backward()
    if tr.get("grad_clip", 0.0) > 0:
        nn.utils.clip_grad_norm_(m.parameters(), tr["grad_clip"])
    opt.step()
    out = []
    for lay, w0 in zip(layers, before):
        n0 = float(w0.norm())
        out.append(float((lay.weight.detach() - w0).norm()) / n0 if n0 > 0 else None)
    return out


def check_update_ratio(model: nn.Module, data, tr: dict, *, batch_size: int, seed: int = 0) -> tuple[Check, list]:
    """Check: the size of one update against the weights, per layer (about 1e-3 is healthy)."""
    idx = _seeded_rows(len(data.x_train), min(batch_size, len(data.x_train)), seed, data.x_train.device)
    torch.manual_seed(seed)
    ratios = update_ratios(model, data.x_train[idx], data.y_train[idx], tr, data.task)
    known = [r for r in ratios if r is not None]   # None: a layer whose weights are all 0
    finite = [r for r in known if math.isfinite(r)]
    expected = (f"about 1e-3; warn when the geometric mean is outside {UPDATE_RATIO_LOW:g}-{UPDATE_RATIO_HIGH:g}, "
                f"fail when a layer is above {UPDATE_RATIO_FAIL:g}")
    if not known:
        return Check("update_ratio", "warn", "every weight is 0", expected,
                     "the weights are all zero, so the ratio is undefined (see layer_health)"), ratios
    if len(finite) < len(known):
        return Check("update_ratio", "fail", "NaN/Inf", expected,
                     "the first update is NaN/Inf: the LR is far too high or the gradients explode"), ratios
    hi, lo = max(finite), min(finite)
    typical = math.exp(sum(math.log(max(r, 1e-30)) for r in finite) / len(finite))  # geometric mean
    lr = tr["lr"]
    observed = f"{typical:.2g} (geometric mean; {lo:.2g} to {hi:.2g} over {len(finite)} layers, lr {lr:g})"
    advice = ""
    if hi > UPDATE_RATIO_FAIL or typical > UPDATE_RATIO_HIGH:
        advice = (f"one step changes the weights by {typical:.2g} of their size (up to {hi:.2g}): the LR ({lr:g}) "
                  f"is probably too high (try about {lr * 1e-3 / typical:.2g})")
    elif typical < UPDATE_RATIO_LOW:
        advice = (f"one step changes the weights by only {typical:.2g} of their size: the LR ({lr:g}) is probably "
                  f"too low (try about {lr * 1e-3 / max(typical, 1e-30):.2g})")
    status = _status(hi > UPDATE_RATIO_FAIL, typical > UPDATE_RATIO_HIGH or typical < UPDATE_RATIO_LOW)
    return Check("update_ratio", status, observed, expected, advice,
                 details={"geometric_mean": typical, "min": lo, "max": hi, "ratios": ratios}), ratios


# ---------------------------------------------------------------------------------------------------------------
# 5. input_independent


def _short_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tr: dict, task: str, *, steps: int,
                    batch_size: int, seed: int) -> list[float]:
    """`steps` minibatch updates of a copy-free model on (x, y), reshuffling each pass; the minibatch losses."""
    from .loop import loss_function

    loss_fn = loss_function(task, tr)
    opt = C.build_optimizer(model, tr)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    while len(losses) < steps:
        for idx in torch.randperm(len(x), generator=g).to(x.device).split(batch_size):
            if len(losses) >= steps:
                break
            loss = loss_fn(_outputs(model, x[idx], task), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tr.get("grad_clip", 0.0) > 0:
                nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
            opt.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                return losses
    return losses


def check_input_independent(model: nn.Module, data, tr: dict, *, batch_size: int, steps: int = INDEP_STEPS,
                            seed: int = 0, layer_failure: str = "") -> Check:
    """Check: the same short training on zeroed inputs must do worse (validation loss) than on the real inputs.

    layer_failure: layer_health's advice when it failed (a broken init also makes the real inputs useless).
    """
    from .loop import evaluate, loss_function

    loss_fn = loss_function(data.task, tr)
    xv, yv = data.x_val[:INDEP_VAL_EXAMPLES], data.y_val[:INDEP_VAL_EXAMPLES]
    results = {}
    for which, x in (("real", data.x_train), ("zeroed", torch.zeros_like(data.x_train))):
        m = copy.deepcopy(model)
        losses = _short_training(m, x, data.y_train, tr, data.task, steps=steps, batch_size=batch_size, seed=seed)
        val_x = xv if which == "real" else torch.zeros_like(xv)
        val = evaluate(m, val_x, yv, data.task, loss_fn) if math.isfinite(losses[-1]) else {"loss": math.nan}
        results[which] = {"train_first": losses[0], "train_last": sum(losses[-10:]) / len(losses[-10:]),
                          "val_loss": val["loss"], "val_acc": val.get("acc")}
    real, zero = results["real"], results["zeroed"]
    expected = f"real inputs: validation loss at least {INDEP_MIN_GAIN:.0%} below zeroed inputs' after {steps} steps"
    observed = f"validation loss {real['val_loss']:.4g} (real) vs {zero['val_loss']:.4g} (zeroed inputs)"
    if not math.isfinite(real["val_loss"]):
        return Check("input_independent", "warn", "training diverged", expected,
                     "inconclusive: the loss became NaN/Inf during the short training (LR too high? see "
                     "overfit_small)", details=results)
    gain = (zero["val_loss"] - real["val_loss"]) / zero["val_loss"] if zero["val_loss"] > 0 else math.inf
    details = {**results, "gain": gain}
    if gain >= INDEP_MIN_GAIN:
        return Check("input_independent", "pass", observed + f" ({gain:.0%} lower)", expected, details=details)
    learned = real["train_last"] < real["train_first"] * (1 - OVERFIT_FLAT)
    if not learned:
        return Check("input_independent", "warn", observed, expected,
                     f"inconclusive: the training loss did not go down in {steps} steps (LR too low or bad init? "
                     f"see overfit_small)", details=details)
    if layer_failure:
        return Check("input_independent", "warn", observed, expected,
                     f"inconclusive while layer_health fails ({layer_failure})", details=details)
    if gain > 0:
        return Check("input_independent", "warn", observed + f" ({gain:.1%} lower)", expected,
                     "the real inputs help only a little after a short training: weak signal, or labels only "
                     "loosely related to the inputs", details=details)
    return Check("input_independent", "fail", observed, expected,
                 "the model does no better on held-out data with the real inputs than with zeros: the labels look "
                 "unrelated to the inputs (shuffled or misaligned labels, wrong target column), or the inputs "
                 "never reach the model", details=details)


# ---------------------------------------------------------------------------------------------------------------
# 6. overfit_small


def overfit_attempt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tr: dict, task: str, *, batch_size: int,
                    steps: int, seed: int, attempt: int = 1) -> list[dict]:
    """Train `model` (in place) on the small sample (x, y) for up to `steps` iterations.

    One row per iteration: attempt, lr, iteration, loss (minibatch, before the update), acc; at the end of each
    pass over the sample also sample_loss and sample_acc (the whole sample, after the pass). Stops at 100%
    training accuracy (regression: loss below OVERFIT_REG_PASS of the mean's loss) or at NaN/Inf; otherwise runs
    the whole budget (at the end, OVERFIT_PASS_ACC passes).
    """
    from .loop import loss_function

    loss_fn = loss_function(task, tr)
    opt = C.build_optimizer(model, tr)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    baseline = float(loss_fn(torch.full_like(y, float(y.mean())), y)) if task == "regression" else None
    def sample_metrics() -> tuple[float, float | None]:
        with torch.no_grad():  # the whole sample in training mode (batch norm on batch statistics, dropout is off)
            outs = torch.cat([_outputs(model, x[i:i + batch_size], task) for i in range(0, len(x), batch_size)])
            acc = float((outs.argmax(1) == y).double().mean()) if task == "classification" else None
            return float(loss_fn(outs, y)), acc

    model.train()
    loss0, acc0 = sample_metrics()
    rows: list[dict] = [{"attempt": attempt, "lr": tr["lr"], "iteration": 0, "loss": loss0, "acc": acc0,
                         "sample_loss": loss0, "sample_acc": acc0}]
    it, best, best_it = 0, loss0, 0
    while it < steps:
        model.train()
        for idx in torch.randperm(len(x), generator=g).to(x.device).split(batch_size):
            out = _outputs(model, x[idx], task)
            loss = loss_fn(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tr.get("grad_clip", 0.0) > 0:
                nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
            opt.step()
            it += 1
            row = {"attempt": attempt, "lr": tr["lr"], "iteration": it, "loss": float(loss.detach()),
                   "acc": float((out.argmax(1) == y[idx]).double().mean()) if task == "classification" else None,
                   "sample_loss": None, "sample_acc": None}
            rows.append(row)
            if not math.isfinite(row["loss"]) or it >= steps:
                break
        if not math.isfinite(rows[-1]["loss"]):
            break
        rows[-1]["sample_loss"], rows[-1]["sample_acc"] = sample_metrics()
        if rows[-1]["sample_loss"] < 0.99 * best:
            best, best_it = rows[-1]["sample_loss"], it
        elif it - best_it >= OVERFIT_FLAT_STOP * steps:
            break  # stuck
        if task == "classification" and rows[-1]["sample_acc"] == 1.0:
            break
        if task == "regression" and rows[-1]["sample_loss"] < OVERFIT_REG_PASS * baseline:
            break
    return rows


def _final(rows: list[dict], task: str, baseline: float | None) -> tuple[str, float]:
    """(status, score) of one attempt: accuracy (classification) or loss / mean's loss (regression)."""
    ends = [r for r in rows if r["sample_loss"] is not None]
    if not ends or not math.isfinite(rows[-1]["loss"]) or not math.isfinite(ends[-1]["sample_loss"]):
        return "fail", math.nan
    if task == "classification":
        acc = ends[-1]["sample_acc"]
        return ("pass" if acc >= OVERFIT_PASS_ACC else "warn" if acc >= OVERFIT_WARN_ACC else "fail"), acc
    frac = ends[-1]["sample_loss"] / baseline
    return ("pass" if frac < OVERFIT_REG_PASS else "warn" if frac < OVERFIT_REG_WARN else "fail"), frac


def diagnose(rows: list[dict]) -> tuple[str, str]:
    """(kind, words) from one attempt's loss trajectory: diverged, rising, flat, bouncing or slow."""
    bad = next((r for r in rows if not math.isfinite(r["loss"])), None)
    if bad is not None:
        return "high", f"the loss became NaN/Inf at iteration {bad['iteration']}: LR too high (or bad init)"
    ends = [r["sample_loss"] for r in rows if r["sample_loss"] is not None]  # whole-sample loss: init, each pass
    start, end = ends[0], ends[-1]
    if end > start * 1.05:
        return "high", f"the loss rose from {start:.3g} to {end:.3g}: LR too high (or bad init)"
    if end > start * (1 - OVERFIT_FLAT):
        return "low", (f"the loss stayed flat ({start:.3g} -> {end:.3g}): LR too low, bad init or dead units")
    ups = sum(b > a * 1.05 for a, b in itertools.pairwise(ends))
    if len(ends) > 4 and ups / (len(ends) - 1) > OVERFIT_BOUNCE:
        return "high", (f"the loss bounces up and down ({ups} of {len(ends) - 1} passes ended higher): "
                        f"decrease the LR")
    return "unclear", (f"the loss fell ({start:.3g} -> {end:.3g}) but not far enough within the budget: a higher LR, "
                       f"more iterations (--overfit-steps) or a bigger model")


def check_overfit_small(model: nn.Module, data, tr: dict, *, batch_size: int, batches: int = OVERFIT_BATCHES,
                        steps: int = OVERFIT_STEPS, seed: int = 0, retry: bool = True,
                        layer_failure: str = "") -> tuple[Check, list[dict]]:
    """Check: a small sample to (nearly) 100% training accuracy with regularisation, dropout and augmentation off.

    On failure the loss trajectory names the likely cause and other LRs are retried to tell which (not when
    layer_failure, layer_health's advice, already names the cause).
    """
    from .loop import loss_function

    n = min(len(data.x_train), batches * batch_size, OVERFIT_MAX_EXAMPLES)
    idx = _seeded_rows(len(data.x_train), n, seed, data.x_train.device)
    x, y = data.x_train[idx], data.y_train[idx]
    tr0 = {**tr, "weight_decay": 0.0, "l1": 0.0}
    baseline = (float(loss_function(data.task, tr0)(torch.full_like(y, float(y.mean())), y))
                if data.task == "regression" else None)
    goal = (f"{OVERFIT_PASS_ACC:.0%} training accuracy" if data.task == "classification" else
            f"loss below {OVERFIT_REG_PASS:.0%} of predicting the mean")
    expected = f"{goal} on {n} examples within {steps} iterations"

    def attempt(lr: float, number: int) -> tuple[list[dict], str, float]:
        m = check_copy(model)
        rows = overfit_attempt(m, x, y, {**tr0, "lr": lr}, data.task, batch_size=batch_size, steps=steps,
                               seed=seed, attempt=number)
        return (rows, *_final(rows, data.task, baseline))

    lr = tr["lr"]
    rows, status, score = attempt(lr, 1)
    all_rows = list(rows)
    def score_txt(s: float) -> str:
        if not math.isfinite(s):
            return "diverged (NaN/Inf)"
        return f"{s:.1%} accuracy" if data.task == "classification" else f"loss {s:.3g} x the mean's"
    its = rows[-1]["iteration"]
    observed = f"{score_txt(score)} after {its} iterations at lr {lr:g}"
    if data.task == "classification" and status == "pass" and score < 1.0:
        observed += f" ({round((1 - score) * n)} of {n} examples not fitted: noisy or duplicate labels?)"
    details: dict[str, Any] = {"examples": n, "iterations": its, "score": score, "lr": lr, "attempts": []}
    if status == "pass":
        return Check("overfit_small", "pass", observed, expected, details=details), all_rows
    kind, words = diagnose(rows)
    advice = words
    if layer_failure:
        advice = f"{words}. The cause, found by layer_health: {layer_failure}"
    if retry and status == "fail" and not layer_failure:
        for number, factor in enumerate(OVERFIT_RETRY_FACTORS[kind], start=2):
            lr2 = lr * factor
            rows2, status2, score2 = attempt(lr2, number)
            all_rows += rows2
            details["attempts"].append({"lr": lr2, "status": status2, "score": score2})
            if status2 == "pass":
                side = "too high" if factor < 1 else "too low"
                advice = (f"passes at lr {lr2:g} ({score_txt(score2)} in {rows2[-1]['iteration']} iterations): your "
                          f"lr {lr:g} is {side}. {words}")
                break
        else:
            tried = ", ".join(f"{lr * f:g}" for f in OVERFIT_RETRY_FACTORS[kind])
            advice += f" (no pass at lr {tried} either: look at the init, the data and the model)"
    details.update(kind=kind)
    return Check("overfit_small", status, observed, expected, advice, details=details), all_rows


# ---------------------------------------------------------------------------------------------------------------
# Running everything, writing the run folder.


def parse_only(only: str | list[str] | None) -> list[str]:
    """'init_loss,overfit_small' -> the checks to run, in their standard order; unknown names are a UserError."""
    if only is None or only == "" or only == []:
        return list(CHECKS)
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    unknown = [s for s in names if s not in CHECKS]
    if unknown:
        raise UserError(f"--only {','.join(unknown)}: unknown check; allowed: {', '.join(CHECKS)}")
    return [c for c in CHECKS if c in names]


def run_sanity(recipe, *, device: str = "auto", runs_dir: str | Path | None = "runs",
               only: str | list[str] | None = None, overfit_batches: int = OVERFIT_BATCHES,
               overfit_steps: int = OVERFIT_STEPS, retry: bool = True, threads: int | None = SANITY_CPU_THREADS,
               progress: Callable[[str], None] | None = None, folder: str | None = None) -> SanityResult:
    """Run the sanity checks of `recipe` and write sanity.csv, layers.csv, overfit.csv, summary.json and plots.

    runs_dir=None runs the checks without writing a run folder. progress(message) is called before and after each
    check. threads: torch CPU threads while the checks run (None: leave torch's setting). folder: the run folder's
    exact name under runs_dir (default: <time>-<name>-sanity).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_sanity(recipe, device=device, runs_dir=runs_dir, only=only, overfit_batches=overfit_batches,
                           overfit_steps=overfit_steps, retry=retry, progress=progress, folder=folder)
    finally:
        torch.set_num_threads(previous)


def _run_sanity(recipe, *, device, runs_dir, only, overfit_batches, overfit_steps, retry, progress,
                folder) -> SanityResult:
    from .data import load_data
    from .models import build_model
    from .runs import marks_interrupted, resolve_device, start_run

    if overfit_batches < 1 or overfit_steps < 1:
        raise UserError(f"--overfit-batches {overfit_batches} / --overfit-steps {overfit_steps}: both must be >= 1")
    names = parse_only(only)
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    device = resolve_device(device)
    data = load_data(recipe, device)  # before the run folder: a bad data file leaves nothing behind
    run_dir = start_run(recipe, runs_dir, "sanity", device, folder) if runs_dir is not None else None
    with marks_interrupted(run_dir, recipe.name, "sanity"):
        seed = recipe["seed"]
        tr = dict(recipe.section("train"))
        bs = recipe["data.batch_size"]
        model = build_model(recipe, data, seed=seed).to(device)
        model.requires_grad_(True)

        checks: list[Check] = []
        layer_rows: list[dict] = []
        overfit_rows: list[dict] = []
        layer_failure = ""   # layer_health's advice when it failed: the cause of later failures
        for name in names:
            say(f"sanity: {name}")
            t = time.perf_counter()
            if name == "init_loss":
                check = check_init_loss(model, data, tr, batch_size=bs, output_bias=recipe["model.output_bias"],
                                        seed=seed)
            elif name == "gradient_check":
                check = check_gradients(model, data, tr, seed=seed)
                per_module: dict[str, float] = {}
                for r in check.details.get("rows", []):
                    if r["max_rel_error"] is not None:
                        per_module[r["module"]] = max(per_module.get(r["module"], 0.0), r["max_rel_error"])
                check.details["per_module"] = per_module
            elif name == "layer_health":
                check, layer_rows = check_layer_health(model, data, tr, seed=seed)
                layer_failure = check.advice if check.status == "fail" else ""
            elif name == "update_ratio":
                check, _ = check_update_ratio(model, data, tr, batch_size=bs, seed=seed)
            elif name == "input_independent":
                check = check_input_independent(model, data, tr, batch_size=bs, seed=seed, layer_failure=layer_failure)
            else:
                check, overfit_rows = check_overfit_small(model, data, tr, batch_size=bs, batches=overfit_batches,
                                                          steps=overfit_steps, seed=seed, retry=retry,
                                                          layer_failure=layer_failure)
            check.seconds = time.perf_counter() - t
            checks.append(check)
            say(f"sanity: {name} {check.status} ({check.seconds:.1f} s)")
        _merge_layer_columns(layer_rows, checks)
        result = SanityResult(run_dir, checks, layer_rows, overfit_rows, time.perf_counter() - t0, recipe.name)
        if run_dir is not None:
            write_outputs(result, data.task)
    return result


def _merge_layer_columns(rows: list[dict], checks: list[Check]) -> None:
    """Add update_ratio and gradcheck_max_error to the layers.csv rows (by layer order / module name)."""
    by = {c.check: c for c in checks}
    ratios = by["update_ratio"].details.get("ratios", []) if "update_ratio" in by else []
    per_module = by["gradient_check"].details.get("per_module", {}) if "gradient_check" in by else {}
    for r in rows:
        i = r["layer"] - 1
        r["update_ratio"] = ratios[i] if i < len(ratios) else None
        r["gradcheck_max_error"] = per_module.get(r["name"])
    for c in checks:  # the per-layer lists now live in layers.csv
        c.details.pop("ratios", None)


LAYER_COLUMNS = ["layer", "name", "desc", "kind", "activation", "units", "weight_std", "pre_std", "act_mean", "act_std",
                 "saturated", "zero_frac", "dead", "constant", "duplicate", "grad_norm", "rel_grad", "update_ratio",
                 "gradcheck_max_error"]


def write_outputs(result: SanityResult, task: str) -> None:
    """sanity.csv, layers.csv, overfit.csv, summary.json, overfit.png and layers.png in the run folder."""
    from .runs import CsvLog, write_json

    d = result.run_dir
    with CsvLog(d / "sanity.csv", ["check", "status", "observed", "expected", "advice", "seconds"]) as log:
        for c in result.checks:
            log.write(asdict(c))
    if result.layers:
        with CsvLog(d / "layers.csv", LAYER_COLUMNS) as log:
            for r in result.layers:
                log.write(r)
        plot_layers(result.layers, d / "layers.png")
    if result.overfit:
        with CsvLog(d / "overfit.csv", ["attempt", "lr", "iteration", "loss", "acc", "sample_loss",
                                        "sample_acc"]) as log:
            for r in result.overfit:
                log.write(r)
        plot_overfit(result.overfit, d / "overfit.png", task)
    summary = result.to_dict()
    summary.pop("layers")
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(d / "summary.json", summary)


def plot_overfit(rows: list[dict], path: Path, task: str) -> None:
    """The overfitting runs' loss per iteration (one line per LR tried) and the sample accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if task == "classification" else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    for attempt in sorted({r["attempt"] for r in rows}):
        rr = [r for r in rows if r["attempt"] == attempt]
        label = f"lr {rr[0]['lr']:g}" + (" (recipe)" if attempt == 1 else "")
        axes[0][0].plot([r["iteration"] for r in rr], [r["loss"] for r in rr], label=label, lw=1)
        if task == "classification":
            ends = [r for r in rr if r["sample_acc"] is not None]
            axes[0][1].plot([r["iteration"] for r in ends], [r["sample_acc"] for r in ends], label=label)
    axes[0][0].set(xlabel="iteration", ylabel="minibatch loss", title="overfit a small sample: loss")
    if all(r["loss"] > 0 for r in rows if math.isfinite(r["loss"])):
        axes[0][0].set_yscale("log")
    starts = [r["loss"] for r in rows if r["iteration"] == 0 and math.isfinite(r["loss"])]
    if starts:  # a diverged attempt's 1e30 would flatten every other curve
        axes[0][0].set_ylim(top=10 * max(starts))
    axes[0][0].legend()
    if task == "classification":
        axes[0][1].set(xlabel="iteration", ylabel="accuracy on the sample", ylim=(0, 1.02),
                       title="training accuracy (goal: 100%)")
        axes[0][1].axhline(1.0, color="gray", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layers(rows: list[dict], path: Path) -> None:
    """Per layer at initialisation: activation mean and std, saturated/dead fractions, relative gradient."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r["layer"] for r in rows]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
    a1.errorbar(layers, [r["act_mean"] for r in rows], yerr=[r["act_std"] for r in rows], fmt="o-", capsize=3)
    a1.set(xlabel="layer", ylabel="activation mean +- std", title="activations at init")
    a2.plot(layers, [r["saturated"] for r in rows], "o-", label="saturated")
    a2.plot(layers, [r["dead"] for r in rows], "s-", label="dead units")
    a2.plot(layers, [r["duplicate"] for r in rows], "^-", label="identical units")
    a2.set(xlabel="layer", ylabel="fraction", ylim=(-0.02, 1.02), title="saturated / dead / identical")
    a2.legend()
    rel = [r["rel_grad"] if r["rel_grad"] and math.isfinite(r["rel_grad"]) and r["rel_grad"] > 0 else math.nan
           for r in rows]
    a3.plot(layers, rel, "o-", label="||dW|| / ||W||")
    upd = [r.get("update_ratio") for r in rows]
    if any(u is not None and math.isfinite(u) and u > 0 for u in upd):
        a3.plot(layers, [u if u is not None and u > 0 else math.nan for u in upd], "s-", label="update ratio")
        a3.axhline(1e-3, color="gray", lw=0.5, ls="--")
    if any(math.isfinite(v) for v in rel):
        a3.set_yscale("log")
    a3.set(xlabel="layer", title="gradients")
    a3.legend()
    for ax in (a1, a2, a3):
        ax.set_xticks(layers)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
