"""batch_independence: in evaluation mode, example i's output depends on example i alone (Karpathy's recipe: "use
backprop to chart dependencies"). The gradient of output i with respect to every other example's input must be
zero; a reshape or view that crosses the batch dimension, or a mean over it, breaks that, and the model learns
from its batch neighbours. The layer where the mixing first shows is named."""
from __future__ import annotations

import torch
from torch import nn

from .base import PLAIN_LAYERS, Check, batch, eval_copy, layer_name, record_calls, tensors

NAME = "batch_independence"
INDEP_BATCH = 8                # examples in the batch (the dependency chart of two of them is computed)
MIX_TOL = 1e-6                 # a gradient on other examples above this fraction of the own one: mixing
LOCATE_MAX_MODULES = 64        # modules whose outputs are searched for the first mixing one


def _mixes(out: torch.Tensor, x: torch.Tensor, rows: list[int]) -> float:
    """The largest gradient of out[i] on other examples' inputs, relative to the one on x[i], over rows i."""
    worst = 0.0
    for i in rows:
        (g,) = torch.autograd.grad(out[i].sum(), x, retain_graph=True, allow_unused=True)
        if g is None:
            return 0.0
        g = g.detach().abs().flatten(1)
        own = float(g[i].max())
        others = float(torch.cat([g[:i], g[i + 1:]]).max())
        worst = max(worst, others / own if own > 0 else (others and float("inf")))
    return worst


def check_batch_independence(model, x) -> Check:
    """Check: the dependency chart of examples 0 and B/2 over a batch of B, in evaluation mode."""
    m = eval_copy(model)
    names = {mod: name for name, mod in m.named_modules()}
    x = x.detach().clone().requires_grad_(True)
    n = len(x)
    calls, remove = record_calls(m)
    out = m(x)
    remove()
    rows = [0, n // 2]
    expected = "zero gradient of each example's output on the other examples' inputs (evaluation mode)"
    if not bool(torch.isfinite(out).all()):
        return Check(NAME, "skip", "skipped: NaN/Inf outputs (see nan_forward)", expected)
    if not out.requires_grad or out.shape[0] != n:
        return Check(NAME, "pass", "no gradient path from the inputs (see uses_input)", expected)
    ratio = _mixes(out, x, rows)
    if ratio <= MIX_TOL:
        return Check(NAME, "pass", f"each output depends on its own example only (batch of {n})", expected)
    where, note = "", ""
    for mod, _, o in calls[:LOCATE_MAX_MODULES]:
        outs = [t for t in tensors(o) if t.requires_grad]
        if mod is m or not outs:
            continue
        t = outs[0]
        if t.shape[0] != n:
            where, note = layer_name(names, mod), f" (its output has shape {list(t.shape)}: the batch dimension is gone)"
            break
        if _mixes(t, x, rows) > MIX_TOL:
            where = layer_name(names, mod)
            if isinstance(mod, (*PLAIN_LAYERS, nn.Dropout)):
                note = " (this layer keeps examples apart, so the mixing is in the forward code just before it)"
            break
    if not where:
        where = f"{type(m).__name__}.forward, after its last layer"
    return Check(NAME, "fail", f"output {rows[0]} has a gradient {ratio:.3g}x its own on other examples' inputs; "
                 f"first seen in {where}", expected,
                 f"the model mixes the examples of a batch, first in {where}{note}: a view/reshape across the batch "
                 f"dimension (use x.flatten(1) or x.view(x.size(0), -1), never x.view(-1, ...) with a wrong size), "
                 f"a transpose of dimension 0, or a mean/sum over dim 0. Predictions then depend on the other "
                 f"examples in the batch", details={"ratio": ratio})


def run(ctx) -> Check:
    x, _ = batch(ctx, INDEP_BATCH)
    return check_batch_independence(ctx.model, x)
