"""unregistered: layers and tensors that take part in forward but are not registered with the module (layers in a
plain list or dict, a tensor that is not an nn.Parameter): they are not in model.parameters(), so never trained,
and .to(device), .double() and the state dict never reach them."""
from __future__ import annotations

import torch

from .base import Check, _outputs, batch, check_copy
from .preflight import unregistered

NAME = "unregistered"
UNREGISTERED_BATCH = 16        # examples of the forward pass whose autograd graph is searched for stray leaves


def stray_leaves(model, x, task: str) -> list[torch.Tensor]:
    """Tensors requiring grad that the outputs' autograd graph reaches but model.parameters() does not hold."""
    known = {id(p) for p in model.parameters()}
    out = _outputs(model, x, task)
    seen, stack, found = set(), [out.grad_fn] if out.grad_fn is not None else [], []
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)  # AccumulateGrad: a leaf tensor that would receive .grad
        if var is not None and id(var) not in known:
            found.append(var)
        stack.extend(f for f, _ in fn.next_functions)
    return found


def check_unregistered(model, x, task: str) -> Check:
    """Check: no module attribute holds layers or tensors outside PyTorch's registry, and the autograd graph of the
    outputs reaches no trainable tensor that is not a parameter."""
    expected = "every layer and trainable tensor registered (nn.Module attribute, nn.ModuleList/Dict, nn.Parameter)"
    loose = unregistered(model)
    m = check_copy(model)
    try:
        leaves = stray_leaves(m, x, task)
    except RuntimeError:  # the stray layers sit on another device or dtype: the attributes below name them
        if not loose:
            raise
        leaves = []
    trainable = [f"{where} ({what})" for where, what, grad in loose if grad]
    constant = [f"{where} ({what})" for where, what, grad in loose if not grad]
    if trainable or (leaves and not loose):
        items = trainable or [f"a tensor of shape {list(t.shape)} (requires_grad, held outside the module)"
                              for t in leaves[:3]]
        return Check(NAME, "fail", f"not registered: {', '.join(items[:4])}", expected,
                     f"{', '.join(items[:4])} take{'s' if len(items) == 1 else ''} part in forward but "
                     f"model.parameters() does not hold {'it' if len(items) == 1 else 'them'}: never trained, not "
                     f"moved by .to(device), not saved. Use nn.ModuleList / nn.ModuleDict for layers in a list or "
                     f"dict, nn.Parameter for trainable tensors")
    if constant:
        return Check(NAME, "warn", f"tensor attributes outside the registry: {', '.join(constant[:4])}", expected,
                     f"{', '.join(constant[:4])}: not moved by .to(device) nor saved in the state dict; use "
                     f"self.register_buffer(name, tensor) for a constant (or nn.Parameter if it should be trained)")
    return Check(NAME, "pass", "every layer and tensor is registered", expected)


def run(ctx) -> Check:
    x, _ = batch(ctx, UNREGISTERED_BATCH)
    return check_unregistered(ctx.model, x, ctx.data.task)
