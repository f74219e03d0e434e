"""uses_input: the outputs depend on the input. A forward that never reads x (or overwrites it), or a layer that
cuts the path from it, gives the same prediction for every example: outputs identical across a batch, or a zero
gradient of the outputs with respect to the input."""
from __future__ import annotations

import torch

from .base import Check, batch, eval_copy

NAME = "uses_input"
USES_BATCH = 32                # examples compared


def check_uses_input(model, x) -> Check:
    """Check: in evaluation mode, the outputs vary over a batch and have a non-zero gradient on the input."""
    from ..models import weight_layers

    m = eval_copy(model)
    x = x.detach().clone().requires_grad_(True)
    out = m(x)
    spread = float((out - out[:1]).detach().abs().max())
    g = None
    if out.requires_grad:
        (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    reach = 0.0 if g is None else float(g.abs().max())
    expected = "outputs that differ between examples and a non-zero gradient on the input"
    if not bool(torch.isfinite(out).all()):
        return Check(NAME, "skip", "skipped: NaN/Inf outputs (see nan_forward)", expected)
    observed = f"outputs spread {spread:.3g} over {len(x)} examples, max |d output / d input| {reach:.3g}"
    if spread > 0 and (reach > 0 or g is None):  # no gradient path at all (g None): gradient_flow names the cut
        return Check(NAME, "pass", observed, expected)
    if spread > 0:
        return Check(NAME, "warn", observed, expected,
                     "the outputs vary with the input but their gradient on it is exactly zero: the input reaches "
                     "them only through a step with no gradient (round, argmax, a comparison), so the layers before "
                     "it cannot learn")
    equal = [i for i, lay in enumerate(weight_layers(m)) if lay.weight.numel() > 1
             and float((lay.weight.max() - lay.weight.min()).detach()) == 0.0]
    if equal:
        advice = (f"every weight of weight layer {equal[0] + 1} has the same value (zero or constant init): the "
                  f"outputs cannot depend on the input until the init is random (see layer_health)")
    else:
        advice = ("the outputs are the same for every example: forward ignores the input (a wrong variable, "
                  "x overwritten, zeros_like(x)), or every unit is dead on this batch")
    return Check(NAME, "fail", observed, expected, advice)


def run(ctx) -> Check:
    x, _ = batch(ctx, USES_BATCH)
    return check_uses_input(ctx.model, x)
