"""init_loss: the loss at initialisation against log C (regression: predicting the target mean)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .. import components as C
from .base import INPUT_SCALE_WARN, Check, _outputs, _seeded_rows, _status, check_copy, input_rms

NAME = "init_loss"
INIT_LOSS_BATCHES = 4          # minibatches averaged for the loss at initialisation
INIT_LOSS_WARN = 1.5           # classification: observed - expected above this (nats): warn. Exactly
                               # log C needs zero logits; He/Xavier init gives logits of std ~1-1.5, 0.3-1 nat above
INIT_LOSS_FAIL = 4.0           # above this: fail (logits of std > ~3: init far too large or unnormalised inputs)
INIT_LOSS_LOW = 0.5            # observed / expected below this: warn (the model "knows" the labels before training)
INIT_LOSS_WARN_REG = 3.0       # regression (MSE on the standardised target): the excess is the outputs' variance at
INIT_LOSS_FAIL_REG = 9.0       # init; warn above std ~1.7 target stds, fail above 3 (as logits of std > ~3). A
                               # Xavier output layer over 128 He-initialised ReLUs gives std ~1.2 (excess ~1.5)

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
                    seed: int = 0, own_init: bool = False) -> Check:
    """Loss at initialisation with weight decay and dropout off, against log C (regression: the target mean).

    own_init: the model is the user's factory keeping its own init; a loss far above the expected one is then a
    warning, not a failure (unless the inputs are unnormalised)."""
    from ..loop import loss_function

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
    warn_at, fail_at = ((INIT_LOSS_WARN, INIT_LOSS_FAIL) if data.task == "classification"
                        else (INIT_LOSS_WARN_REG, INIT_LOSS_FAIL_REG))
    expected_txt = f"{expected:.4g} = {what}; pass up to {warn_at:g} above (fail {fail_at:g})"
    if not math.isfinite(loss):
        return Check("init_loss", "fail", "NaN/Inf", expected_txt,
                     "the loss is NaN/Inf before any update: check the inputs for NaN/Inf and the init scale",
                     details=details)
    advice = ""
    if excess > warn_at:
        advice = (f"the initial loss is {excess:.3g} above the expected value: the outputs are too large at init; "
                  + (f"the inputs are not normalised (RMS {details['input_rms']:.3g}): set data.preprocess = "
                     f"'standardize'" if details["input_rms"] > INPUT_SCALE_WARN else
                     "scale the init down (model.init = 'auto': xavier/he) or normalise the inputs"))
    elif ratio < INIT_LOSS_LOW:
        advice = (f"the initial loss is only {ratio:.2f}x the expected value: the model predicts the labels before "
                  f"training; check for a label leaking into the inputs, or a wrong loss")
    status = _status(excess > fail_at, excess > warn_at or ratio < INIT_LOSS_LOW)
    if own_init and status == "fail" and details["input_rms"] <= INPUT_SCALE_WARN:
        # the user's factory chose this init (model.init = 'auto' keeps it): large initial outputs slow the start
        # but are a choice, not a broken setup; overfit_small tells whether it still trains
        status = "warn"
        advice += " (the init is your factory's own; large outputs at init slow the first steps)"
    return Check("init_loss", status, observed, expected_txt, advice, details=details)



def run(ctx) -> Check:
    own = ctx.recipe["model.kind"] == "python" and ctx.recipe["model.init"] == "auto"
    return check_init_loss(ctx.model, ctx.data, ctx.tr, batch_size=ctx.batch_size,
                           output_bias=ctx.recipe["model.output_bias"], seed=ctx.seed, own_init=own)
