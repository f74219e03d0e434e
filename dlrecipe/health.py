"""Hidden-unit health (lecture 002, "Visualization"): good training has hidden units that are sparse across samples
and uncorrelated; bad training has many units that ignore the input or are strongly correlated. And when a
network underperforms, "compute flops and nr. params".

`hidden_unit_health(model, x)` measures, for each hidden layer's activation output (a unit = a neuron, or a conv
channel with every position counted as a sample):
  sparsity          fraction of (sample, unit) activations with |h| <= SPARSE_REL x the layer's largest |h|
  mean_abs_corr     mean |Pearson r| over pairs of live units (across samples)
  correlated_units  units with |r| > CORRELATED to at least one other unit
  ignoring_units    units whose output does not vary with the input (std <= CONSTANT_REL x the layer's largest std)
and returns warnings when more than WARN_FRACTION of a layer's units are correlated or ignore the input.
"""
from __future__ import annotations

import torch
from torch import nn

SPARSE_REL = 0.05        # "off": within 5% of zero, relative to the layer's largest activation
CORRELATED = 0.9         # |r| above this: two units carry (nearly) the same signal
CONSTANT_REL = 1e-3      # std below 0.1% of the layer's most variable unit: the unit ignores the input
WARN_FRACTION = 0.1      # warn when more than 10% of a layer's units are correlated / ignore the input


def _activation_types() -> tuple[type, ...]:
    from .components import ACTIVATIONS, Maxout

    types = {Maxout}
    for c in ACTIVATIONS.values():
        if c.build is not None:
            types.add(type(c.build({"slope": 0.01, "elu_alpha": 1.0})))
    types.discard(nn.Identity)
    return tuple(types)


def hidden_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are hidden-unit activations (the non-linearities), in forward order."""
    kinds = _activation_types()
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


@torch.no_grad()
def hidden_unit_health(model: nn.Module, x: torch.Tensor) -> tuple[list[dict], list[str]]:
    """(one row per hidden layer, warnings) from one eval-mode forward pass over x."""
    layers = hidden_layers(model)
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: seen.__setitem__(n, out.detach()))
             for name, m in layers]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    rows, warnings = [], []
    for i, (name, _) in enumerate(layers):
        if name not in seen:
            continue
        a = seen[name].float()
        h = a.transpose(0, 1).reshape(a.shape[1], -1).T if a.dim() > 2 else a  # (samples, units)
        row = unit_stats(h)
        rows.append({"layer": i, "name": name, **row})
        units = row["units"]
        if row["correlated_units"] > WARN_FRACTION * units:
            warnings.append(f"hidden layer {i} (module {name}): {row['correlated_units']} of {units} units are strongly "
                            f"correlated (|r| > {CORRELATED}) with another: they carry the same signal (lecture 002)")
        if row["ignoring_units"] > WARN_FRACTION * units:
            warnings.append(f"hidden layer {i} (module {name}): {row['ignoring_units']} of {units} units ignore the "
                            f"input "
                            f"(constant output): dead or saturated units (lecture 002)")
    return rows, warnings


def unit_stats(h: torch.Tensor) -> dict:
    """Sparsity, mean |correlation| and the counts above for activations h (samples, units)."""
    n, units = h.shape
    top = h.abs().max()
    sparsity = float((h.abs() <= SPARSE_REL * top).float().mean()) if top > 0 else 1.0
    std = h.std(0) if n > 1 else torch.zeros(units)
    ignoring = std <= CONSTANT_REL * std.max() if std.max() > 0 else torch.ones(units, dtype=torch.bool)
    live = ~ignoring
    corr_mean, correlated = float("nan"), 0
    if int(live.sum()) >= 2:
        r = torch.corrcoef(h[:, live].T.double()).abs()
        r.fill_diagonal_(0)
        k = r.shape[0]
        corr_mean = float(r.sum() / (k * (k - 1)))
        correlated = int((r > CORRELATED).any(1).sum())
    return {"units": units, "sparsity": sparsity, "mean_abs_corr": corr_mean, "correlated_units": correlated,
            "ignoring_units": int(ignoring.sum())}


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of one example: 2 x the multiply-accumulates of every linear and conv layer
    (activations, norms and pooling are not counted; they are a few % of it)."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Linear):
            total[0] += 2 * mod.in_features * mod.out_features * (out.numel() // out.shape[-1])
        else:  # conv: each output value is in_channels / groups x kernel multiply-adds
            per_value = mod.in_channels // mod.groups * int(torch.tensor(mod.kernel_size).prod())
            total[0] += 2 * per_value * out.numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters(), None)
            model(torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu"))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total[0]
