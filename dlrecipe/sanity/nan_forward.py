"""nan_forward: NaN or Inf born inside forward, or in the gradients of the first backward pass: the first module
whose output turns non-finite from finite inputs is named (forward hooks), or the parameter whose gradient does."""
from __future__ import annotations

import torch

from .base import Check, _outputs, batch, check_copy, layer_name, record_calls, tensors

NAME = "nan_forward"
NAN_BATCH = 256                # examples of the forward and backward pass


def _finite(values) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors(values) if t.is_floating_point())


def check_nan_forward(model, x, y, loss_fn, task: str) -> Check:
    """Check: outputs, loss and gradients finite on a batch (a copy, dropout off); where the first NaN/Inf appears."""
    expected = "finite activations, loss and gradients at initialisation"
    if not _finite(x):
        return Check(NAME, "fail", "the inputs contain NaN/Inf", expected,
                     "the data holds NaN/Inf values (missing values?): fill or drop them before training")
    m = check_copy(model)
    names = {mod: name for name, mod in m.named_modules()}
    calls, remove = record_calls(m)
    out = _outputs(m, x, task)
    remove()
    if not _finite(out):
        where = f"{type(m).__name__}.forward, between its layers"
        for mod, inputs, o in calls:
            if _finite(inputs) and not _finite(o):
                where = layer_name(names, mod) if mod is not m else where
                break
        return Check(NAME, "fail", f"NaN/Inf outputs, first produced by {where}", expected,
                     f"{where} turns finite inputs into NaN/Inf: a log or sqrt of a negative or zero value, a "
                     f"division by zero or an overflowing exp; guard it (clamp(min=eps), log1p, logsumexp)")
    loss = loss_fn(out, y)
    if not bool(torch.isfinite(loss)):
        return Check(NAME, "fail", f"the loss is {float(loss.detach())} on finite outputs", expected,
                     "the loss itself overflows on these outputs (huge logits or targets?): see init_loss")
    if loss.requires_grad:
        loss.backward()
    bad = [n for n, p in m.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        return Check(NAME, "fail", f"NaN/Inf gradients in {', '.join(bad[:4])}", expected,
                     f"the forward pass is finite but the gradient of {bad[0]} is not: sqrt or pow at 0, or a "
                     f"norm of a zero vector, in the backward path; add an eps inside")
    return Check(NAME, "pass", f"finite outputs, loss {float(loss.detach()):.4g} and gradients", expected)


def run(ctx) -> Check:
    from ..loop import loss_function

    x, y = batch(ctx, NAN_BATCH)
    return check_nan_forward(ctx.model, x, y, loss_function(ctx.data.task, ctx.tr), ctx.data.task)
