"""input_independent: a short training on zeroed inputs must do worse than on the real inputs."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .. import components as C
from .base import OVERFIT_FLAT, Check, _outputs

NAME = "input_independent"
INDEP_STEPS = 100              # minibatches of training for each of the two models (lecture 003: a good LR
                               # "makes the loss drop significantly within ~100 iterations")
INDEP_MIN_GAIN = 0.02          # real inputs must lower the validation loss by at least 2% against zeroed inputs
INDEP_VAL_EXAMPLES = 1000      # validation examples evaluated
INDEP_SLOW_MARGIN = 0.05       # zeroed inputs' validation loss 5% above the best constant prediction's: the short
                               # training was too slow to learn even the class frequencies (inconclusive)

def _short_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tr: dict, task: str, *, steps: int,
                    batch_size: int, seed: int) -> list[float]:
    """`steps` minibatch updates of a copy-free model on (x, y), reshuffling each pass; the minibatch losses."""
    from ..loop import loss_function

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


def constant_loss(data, loss_fn, y) -> float:
    """The loss of the best input-free prediction on labels y: the training class frequencies, or the mean."""
    if data.task == "classification":
        counts = torch.bincount(data.y_train.cpu(), minlength=data.num_outputs).double()
        logp = (counts.clamp_min(0.5) / counts.sum()).log()
        return float(-logp[y.cpu()].mean())
    return float(loss_fn(torch.full_like(y, float(data.y_train.mean())), y))


def check_input_independent(model: nn.Module, data, tr: dict, *, batch_size: int, steps: int = INDEP_STEPS,
                            seed: int = 0, layer_failure: str = "") -> Check:
    """Check: the same short training on zeroed inputs must do worse (validation loss) than on the real inputs.

    layer_failure: layer_health's advice when it failed (a broken init also makes the real inputs useless).
    """
    from ..loop import evaluate, loss_function

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
    if layer_failure:
        return Check("input_independent", "warn", observed, expected,
                     f"inconclusive while {layer_failure}", details=details)
    learned = real["train_last"] < real["train_first"] * (1 - OVERFIT_FLAT)
    if not learned:
        return Check("input_independent", "warn", observed, expected,
                     f"inconclusive: the training loss did not go down in {steps} steps (LR too low or bad init? "
                     f"see overfit_small)", details=details)
    baseline = constant_loss(data, loss_fn, yv)
    if zero["val_loss"] > baseline * (1 + INDEP_SLOW_MARGIN):  # not even the constant prediction learned: too slow
        return Check("input_independent", "warn", observed, expected,
                     f"inconclusive: in {steps} steps even the model on zeroed inputs did not reach the best constant "
                     f"prediction (validation loss {zero['val_loss']:.4g} vs {baseline:.4g}): the training is too "
                     f"slow at lr {tr['lr']:g} to tell (see overfit_small and lr-find)", details=details)
    if gain > 0:
        return Check("input_independent", "warn", observed + f" ({gain:.1%} lower)", expected,
                     "the real inputs help only a little after a short training: weak signal, or labels only "
                     "loosely related to the inputs", details=details)
    return Check("input_independent", "fail", observed, expected,
                 "the model does no better on held-out data with the real inputs than with zeros: the labels look "
                 "unrelated to the inputs (shuffled or misaligned labels, wrong target column), or the inputs "
                 "never reach the model", details=details)



def run(ctx) -> Check:
    by, cause = ctx.cause("layer_health")
    return check_input_independent(ctx.model, ctx.data, ctx.tr, batch_size=ctx.batch_size, seed=ctx.seed,
                                   layer_failure=f"{by} fails ({cause})" if by else "")
