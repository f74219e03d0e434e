"""logits: the model must output raw scores. Probabilities (a softmax or sigmoid at the end) fed to cross-entropy,
which applies its own softmax, squash the gradients; a clamp after the last layer (ReLU and the like) cuts off
every score below it. Log-probabilities (log_softmax) are fine: cross-entropy of them is the same loss."""
from __future__ import annotations

import torch

from .base import Check, batch, eval_copy, layer_name, record_calls

NAME = "logits"
LOGITS_BATCH = 256             # examples the outputs are read on
SUM_TOL = 1e-4                 # rows summing to 1 within this are probabilities (float32 softmax: ~1e-7)
CLAMPED_FRACTION = 0.05        # more than 5% of the outputs exactly at their minimum (or maximum): clamped


def _last_module(model, out, calls, names) -> str:
    """The innermost module whose output is the model's output tensor itself (the one that made it)."""
    for mod, _, o in calls:
        if o is out and mod is not model:
            return layer_name(names, mod)
    return f"the end of {type(model).__name__}.forward"


def check_logits(model, x, y, task: str, loss_name: str) -> Check:
    """Check: the outputs on a batch in evaluation mode are logits (classification) or unclamped (regression)."""
    m = eval_copy(model)
    names = {mod: name for name, mod in m.named_modules()}
    calls, remove = record_calls(m)
    with torch.no_grad():
        raw = m(x)
    remove()
    out = raw.squeeze(-1) if task == "regression" else raw
    o = out.double()
    where = _last_module(m, raw, calls, names)
    if not bool(torch.isfinite(o).all()):
        return Check(NAME, "skip", "skipped: NaN/Inf outputs (see nan_forward)", "finite outputs")
    if len(o) > 1 and float((o - o[:1]).abs().max()) == 0:
        return Check(NAME, "skip", "skipped: the outputs are the same for every example (see uses_input)",
                     "outputs that vary")
    if task == "classification":
        expected = f"raw scores (logits) for {loss_name}, which applies its own softmax; log_softmax is fine too"
        in_unit = bool(((o >= 0) & (o <= 1)).all())
        sums = o.sum(dim=1)
        if in_unit and bool(((sums - 1).abs() < SUM_TOL).all()):
            return Check(NAME, "fail", f"every row is in [0, 1] and sums to 1 (probabilities), made by {where}",
                         expected, f"the model outputs softmax probabilities and {loss_name} applies a softmax "
                         f"again: return the last layer's raw output (remove the softmax from {where}; apply it "
                         f"only to read probabilities)")
        if in_unit and len(o) > 1 and bool(((o.sum(dim=0) - 1).abs() < SUM_TOL).all()):
            return Check(NAME, "fail", f"every column sums to 1 over the batch: a softmax over dimension 0, made by "
                         f"{where}", expected, f"a softmax over the batch dimension (dim=0) in {where}: each "
                         f"example's scores then depend on the others. Return the raw scores (or softmax over dim=1 "
                         f"only to read probabilities)")
        if in_unit and float(o.std()) > 0:
            return Check(NAME, "fail", f"every output is in [0, 1] (sigmoid-like), made by {where}", expected,
                         f"the model outputs probabilities (a sigmoid?) that {loss_name} treats as scores: return "
                         f"the last layer's raw output (remove the squashing in {where})")
        lse = torch.logsumexp(o, dim=1)
        if bool((o <= 0).all()) and bool(((lse).abs() < SUM_TOL).all()):
            return Check(NAME, "pass", "log-probabilities (log_softmax): fine for cross-entropy", expected)
    else:
        expected = "unclamped outputs (the standardised target is negative half the time)"
    low, high = o.min(), o.max()
    for edge, side in ((low, "minimum"), (high, "maximum")):
        frac = float((o == edge).double().mean())
        if frac > CLAMPED_FRACTION and float(high - low) > 0:
            return Check(NAME, "fail", f"{frac:.0%} of the outputs equal their {side} {float(edge):.3g} exactly "
                         f"(clamped), made by {where}", expected,
                         f"an activation after the last layer (ReLU, clamp, ...) cuts the outputs at {float(edge):.3g}:"
                         f" remove it from {where}; the last layer must be linear")
    return Check(NAME, "pass", f"outputs from {float(low):.3g} to {float(high):.3g}: raw scores", expected)


def run(ctx) -> Check:
    from ..components import default_loss

    x, y = batch(ctx, LOGITS_BATCH)
    loss = ctx.tr.get("loss", "auto")
    return check_logits(ctx.model, x, y, ctx.data.task, default_loss(ctx.data.task) if loss == "auto" else loss)
