"""gradient_flow: every trainable parameter gets a gradient from the loss. No gradient reaches a layer forward never
calls, nor one cut off by .detach(), .data or torch.no_grad() inside forward: such a layer keeps its initial
weights. Parameters frozen with requires_grad=False are listed (a warning: freezing can be deliberate)."""
from __future__ import annotations

from .base import Check, _outputs, batch, check_copy, layer_name

NAME = "gradient_flow"
FLOW_BATCH = 64                # examples of the one backward pass


def _group(names: list[str]) -> str:
    """'fc1.weight, fc1.bias, fc2.weight' -> 'fc1, fc2 (weight, bias)'-like short list: the module names."""
    mods = list(dict.fromkeys(n.rsplit(".", 1)[0] if "." in n else n for n in names))
    return ", ".join(mods[:6]) + (f" and {len(mods) - 6} more" if len(mods) > 6 else "")


def check_gradient_flow(model, x, y, loss_fn, task: str) -> Check:
    """Check: one backward pass on a copy (dropout off): which parameters got no gradient, and why."""
    m = check_copy(model)
    names = {mod: name for name, mod in m.named_modules()}
    called = set()
    handles = [mod.register_forward_hook(lambda mod, i, o: called.add(mod)) for mod in m.modules()]
    loss = loss_fn(_outputs(m, x, task), y)
    for h in handles:
        h.remove()
    if loss.requires_grad:
        loss.backward()
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    unreached = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    total = sum(1 for _ in m.parameters())
    expected = "a gradient for every parameter that requires one"
    if unreached:
        owners = {n: m.get_submodule(n.rsplit(".", 1)[0]) if "." in n else m for n in unreached}
        never = [mod for mod in dict.fromkeys(owners.values()) if mod not in called and mod is not m]
        if never:
            advice = (f"{', '.join(layer_name(names, mod) for mod in never[:4])} "
                      f"{'is' if len(never) == 1 else 'are'} never called in forward: remove "
                      f"{'it' if len(never) == 1 else 'them'}, or call {'it' if len(never) == 1 else 'them'} "
                      f"(a layer defined but skipped is a classic bug)")
        else:
            advice = (f"{_group(unreached)} run{'s' if len(owners) == 1 else ''} in forward but the loss sends no "
                      f"gradient back to {'it' if len(set(owners.values())) == 1 else 'them'}: a .detach(), .data, "
                      f".item() or torch.no_grad() between {'it' if len(set(owners.values())) == 1 else 'them'} and "
                      f"the output cuts the graph; remove it")
        return Check(NAME, "fail", f"no gradient reaches {len(unreached)} of {total} parameter tensors: "
                     f"{_group(unreached)}", expected, advice,
                     details={"unreached": unreached, "frozen": frozen})
    if frozen:
        return Check(NAME, "warn", f"{len(frozen)} of {total} parameter tensors frozen (requires_grad=False): "
                     f"{_group(frozen)}", expected,
                     f"{_group(frozen)} will not train: fine when deliberate (a pretrained or fixed layer); otherwise "
                     f"remove the requires_grad_(False)", details={"frozen": frozen})
    return Check(NAME, "pass", f"all {total} parameter tensors get a gradient", expected)


def run(ctx) -> Check:
    from ..loop import loss_function

    x, y = batch(ctx, FLOW_BATCH)
    return check_gradient_flow(ctx.model, x, y, loss_function(ctx.data.task, ctx.tr), ctx.data.task)
