"""gradient_check: central differences in float64 against backprop, sampled entries of every parameter."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import components as C
from .base import Check, _outputs, _seeded_rows, _status, check_copy

NAME = "gradient_check"
GRADCHECK_BATCH = 16           # examples in the check batch (float64 copy, dropout off)
GRADCHECK_PROBES = 6           # sampled entries per parameter tensor
GRADCHECK_EPS = (1e-6, 1e-4, 1e-8)  # step sizes tried per probe, the smallest error kept (a wrong backward is wrong
                               # at every step; 1e-4: less rounding noise, 1e-8: less truncation on steep losses)
GRADCHECK_FLOOR = 1e-5         # |gradient| below this is compared in absolute terms: rounding noise of the loss
                               # (logits of ~100 in float64) makes the relative error of tinier gradients meaningless
GRADCHECK_WARN = 1e-5          # max relative error above this: warn (float64 without kinks gives ~1e-8)
GRADCHECK_FAIL = 1e-3          # above this: fail (a wrong backward pass gives errors of order 1e-1 to 1)

KINKED = (nn.ReLU, nn.LeakyReLU, nn.RReLU, nn.PReLU, nn.ELU, nn.ReLU6, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d,
          C.Maxout)


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
    parameter tensor: name, module, probes, skipped, max_rel_error. Every pass starts from the same random state,
    so that randomness inside forward (F.dropout with training=self.training, noise) is the same in each: the
    check compares one function, not several draws (the global random state is restored afterwards).
    """
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        return _gradient_check(model, x, y, loss_fn, task, probes=probes, seed=seed)


def _gradient_check(model, x, y, loss_fn, task, *, probes, seed) -> list[dict]:
    m = check_copy(model, dtype=torch.float64)
    x = x.double()
    y = y.double() if y.is_floating_point() else y
    record, remove = _kink_signature(m)

    def f() -> float:
        record.clear()
        torch.manual_seed(seed)
        with torch.no_grad():
            return float(loss_fn(_outputs(m, x, task), y))

    m.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = loss_fn(_outputs(m, x, task), y)
    loss.backward()
    base = abs(float(loss.detach()))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        module = name.rsplit(".", 1)[0] if "." in name else name
        if p.grad is None:  # no gradient reaches it (a graph cut): gradient_flow's finding, not a wrong backward
            rows.append({"param": name, "module": module, "probes": 0, "skipped": 0, "max_rel_error": None,
                         "no_gradient": True})
            continue
        grad = p.grad.detach().flatten()
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
        rows.append({"param": name, "module": module, "probes": used, "skipped": skipped,
                     "max_rel_error": worst if used else None})
    remove()
    return rows


def check_gradients(model: nn.Module, data, tr: dict, *, seed: int = 0) -> Check:
    """Check: the largest relative error of backprop against central differences over every layer."""
    from ..loop import loss_function

    idx = _seeded_rows(len(data.x_train), GRADCHECK_BATCH, seed, data.x_train.device)
    rows = gradient_check(model, data.x_train[idx], data.y_train[idx], loss_function(data.task, tr), data.task,
                          seed=seed)
    errors = [r["max_rel_error"] for r in rows if r["max_rel_error"] is not None]
    used, skipped = sum(r["probes"] for r in rows), sum(r["skipped"] for r in rows)
    expected = f"max relative error < {GRADCHECK_WARN:g} (fail above {GRADCHECK_FAIL:g})"
    cut = [r["param"] for r in rows if r.get("no_gradient")]
    cut_txt = f"; {len(cut)} tensors without a gradient left out (see gradient_flow)" if cut else ""
    if not errors and cut and not skipped:
        return Check("gradient_check", "warn", f"0 probes{cut_txt}", expected,
                     "no parameter gets a gradient, so nothing could be checked (see gradient_flow)",
                     details={"rows": rows})
    if not errors:
        return Check("gradient_check", "warn", f"0 probes ({skipped} on kinks)", expected,
                     "every sampled entry sat on a kink (a ReLU at 0): nothing could be checked", details={"rows": rows})
    worst_row = max((r for r in rows if r["max_rel_error"] is not None), key=lambda r: r["max_rel_error"])
    worst = worst_row["max_rel_error"]
    observed = f"{worst:.2g} in {worst_row['param']} ({used} probes, {skipped} skipped at kinks{cut_txt})"
    advice = ""
    if worst > GRADCHECK_WARN:
        advice = (f"backprop disagrees with finite differences in {worst_row['param']}: a custom layer's backward "
                  f"(or a non-differentiable operation) computes a wrong gradient there")
    return Check("gradient_check", _status(worst > GRADCHECK_FAIL, worst > GRADCHECK_WARN), observed, expected,
                 advice, details={"max_rel_error": worst, "probes": used, "skipped": skipped, "rows": rows})



def run(ctx) -> Check:
    check = check_gradients(ctx.model, ctx.data, ctx.tr, seed=ctx.seed)
    per_module: dict[str, float] = {}  # the largest error per module, for layers.csv
    for r in check.details.get("rows", []):
        if r["max_rel_error"] is not None:
            per_module[r["module"]] = max(per_module.get(r["module"], 0.0), r["max_rel_error"])
    check.details["per_module"] = per_module
    return check
