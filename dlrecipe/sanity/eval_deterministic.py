"""eval_deterministic: two evaluation-mode passes on the same batch give the same outputs. Dropout forced on
(F.dropout(x, p, training=True)), noise or sampling inside forward make every prediction and validation score a
random draw."""
from __future__ import annotations

import torch

from .base import PLAIN_LAYERS, Check, batch, eval_copy, layer_name, record_calls, tensors

NAME = "eval_deterministic"
DET_BATCH = 64                 # examples of the two passes
DET_RTOL, DET_ATOL = 1e-5, 1e-6  # outputs equal within this (non-deterministic GPU kernels differ by ~1e-7)


def check_eval_deterministic(model, x, seed: int = 0) -> Check:
    """Check: two passes in evaluation mode with different random states; the first module whose output differs."""
    m = eval_copy(model)
    names = {mod: name for name, mod in m.named_modules()}
    passes = []
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), torch.no_grad():
        for s in (seed, seed + 1):
            torch.manual_seed(s)
            calls, remove = record_calls(m)
            out = m(x)
            remove()
            passes.append((out, calls))
    (a, ca), (b, cb) = passes
    expected = "identical outputs from two evaluation-mode passes on the same batch"
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return Check(NAME, "skip", "skipped: NaN/Inf outputs (see nan_forward)", expected)
    if torch.allclose(a, b, rtol=DET_RTOL, atol=DET_ATOL):
        return Check(NAME, "pass", f"identical outputs on {len(x)} examples", expected)
    where, note = f"{type(m).__name__}.forward", ""
    for (mod, _, oa), (_, _, ob) in zip(ca, cb):
        ta, tb = tensors(oa), tensors(ob)
        if mod is not m and ta and tb and ta[0].shape == tb[0].shape and not torch.allclose(
                ta[0], tb[0], rtol=DET_RTOL, atol=DET_ATOL):
            where = layer_name(names, mod)
            if isinstance(mod, PLAIN_LAYERS):
                note = " (this layer is deterministic, so the randomness is in the forward code just before it)"
            break
    diff = float((a - b).abs().max())
    return Check(NAME, "fail", f"outputs differ by up to {diff:.3g} between two passes, first in {where}", expected,
                 f"evaluation is random, first in {where}{note}: dropout forced on (F.dropout(..., training=True): pass "
                 f"training=self.training, or use nn.Dropout), or noise/sampling in forward that should happen only "
                 f"when self.training", details={"max_difference": diff})


def run(ctx) -> Check:
    x, _ = batch(ctx, DET_BATCH)
    return check_eval_deterministic(ctx.model, x, ctx.seed)
