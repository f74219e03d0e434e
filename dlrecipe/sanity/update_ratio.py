"""update_ratio: ||update|| / ||weights|| per layer after one step (about 1e-3 is healthy)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .. import components as C
from .base import Check, _outputs, _seeded_rows, _status

NAME = "update_ratio"
UPDATE_RATIO_LOW = 1e-5        # ||update|| / ||W|| after one step: about 1e-3 is healthy (CS231n); warn when the
UPDATE_RATIO_HIGH = 1e-1       # geometric mean over layers is 100x below or above it (the output layer's first
                               # step is often 10x the others': the loss is highest at init)
UPDATE_RATIO_FAIL = 1.0
LR_SUGGEST_RANGE = (1e-6, 10.0)  # LRs advised at most; a ratio that needs one outside is not the LR's fault        # some layer's update larger than its weights: fail

def update_ratios(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tr: dict, task: str) -> list[float | None]:
    """||W_after - W_before|| / ||W_before|| per weight layer after one optimizer step (None where W = 0)."""
    from ..loop import loss_function
    from ..models import weight_layers

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
    still = len([r for r in finite if r == 0])  # layers no update reached (frozen, or no gradient: gradient_flow)
    finite = [r for r in finite if r > 0]
    if not finite:
        return Check("update_ratio", "warn", f"no layer changed ({still} of {len(known)})", expected,
                     "one step updates no weight at all: no gradient reaches them or they are frozen (see "
                     "gradient_flow)"), ratios
    hi, lo = max(finite), min(finite)
    typical = math.exp(sum(math.log(r) for r in finite) / len(finite))  # geometric mean
    lr = tr["lr"]
    observed = (f"{typical:.2g} (geometric mean; {lo:.2g} to {hi:.2g} over {len(finite)} layers, lr {lr:g})"
                + (f"; {still} of {len(known)} layers not updated (frozen or no gradient: see gradient_flow)" if still else ""))
    advice = ""
    suggested = lr * 1e-3 / typical  # the LR that would make the geometric mean 1e-3 (the ratio is ~linear in lr)

    def try_lr() -> str:
        if LR_SUGGEST_RANGE[0] <= suggested <= LR_SUGGEST_RANGE[1]:
            return f"try about {suggested:.2g}"
        return (f"1e-3 would need lr {suggested:.2g}, outside the range where any LR helps ({LR_SUGGEST_RANGE[0]:g}"
                f"..{LR_SUGGEST_RANGE[1]:g}): the scale of the weights or gradients is wrong, not the LR (see "
                f"layer_health and init_loss)")
    if hi > UPDATE_RATIO_FAIL or typical > UPDATE_RATIO_HIGH:
        advice = (f"one step changes the weights by {typical:.2g} of their size (up to {hi:.2g}): the LR ({lr:g}) "
                  f"is probably too high ({try_lr()})")
    elif typical < UPDATE_RATIO_LOW:
        advice = (f"one step changes the weights by only {typical:.2g} of their size: the LR ({lr:g}) is probably "
                  f"too low ({try_lr()})")
    status = _status(hi > UPDATE_RATIO_FAIL, typical > UPDATE_RATIO_HIGH or typical < UPDATE_RATIO_LOW)
    return Check("update_ratio", status, observed, expected, advice,
                 details={"geometric_mean": typical, "min": lo, "max": hi, "ratios": ratios}), ratios



def run(ctx) -> Check:
    check, _ = check_update_ratio(ctx.model, ctx.data, ctx.tr, batch_size=ctx.batch_size, seed=ctx.seed)
    return check
