"""Transfer learning (lecture 003: "use this if you can!"): load a trained network's matching layers, freeze the
lower ones, re-learn the upper ones, and unfreeze more of them in stages.

A *layer* here is what a person would point at in the model: a linear / conv / maxout layer together with the
batch norm or PReLU that follows it, or a whole residual block. Layers are numbered from the input (0) to the
output layer (`layer_groups`); `train.freeze` and `model.pretrained_skip` name them by number, by 'output', or
(python models) by module name. A run writes the numbering and what happened to each layer to layers.csv.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import RecipeError

WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def resolve_pretrained(spec: str, recipe_path: Path | None) -> Path:
    """The state-dict file `model.pretrained` names: a .pt file, or a run folder's model.pt (a train or search run,
    `dlrecipe run`'s 3-search step) or pretrain.pt (`dlrecipe pretrain`). Relative paths are looked for in the
    working folder, then beside the recipe."""
    given = Path(spec).expanduser()
    bases = [given] if given.is_absolute() else [given] + ([Path(recipe_path).parent / given] if recipe_path else [])
    for base in bases:
        if base.is_file():
            return base
        if base.is_dir():
            for name in ("model.pt", "3-search/model.pt", "pretrain.pt"):
                if (base / name).is_file():
                    return base / name
            raise RecipeError(f"model.pretrained = {spec!r}: the folder has no model.pt (train, search, run) or "
                              f"pretrain.pt (dlrecipe pretrain)")
    raise RecipeError(f"model.pretrained = {spec!r}: no such file or run folder (looked in the working folder"
                      f"{' and beside the recipe' if recipe_path else ''})")


def _is_layer(module: nn.Module) -> bool:
    from .components import Maxout
    from .models import Residual

    return isinstance(module, (*WEIGHT_TYPES, Maxout, Residual))


def layer_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """[(layer name, [module names it covers])] from the input to the output. A weight layer (or residual block,
    or maxout) starts a layer; a module with parameters of its own that follows it (batch norm, PReLU) joins it."""
    groups: list[tuple[str, list[str]]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if _is_layer(child):
                groups.append((full, [full]))
            elif any(True for _ in child.parameters(recurse=False)):
                if groups:
                    groups[-1][1].append(full)
                else:
                    groups.append((full, [full]))
            else:
                walk(child, full + ".")

    walk(model, "")
    return groups


def _owner(key: str, groups: list[tuple[str, list[str]]]) -> int | None:
    """Index of the layer a state-dict key ('3.weight', '2.body.0.bias') belongs to."""
    for i, (_, modules) in enumerate(groups):
        if any(key.startswith(m + ".") for m in modules):
            return i
    return None


def select_layers(model: nn.Module, names: list, key: str) -> list[int]:
    """Layer indices for entries of train.freeze / model.pretrained_skip: an integer counts layers from the input
    (negative: from the output); a string is 'output', a layer's name or any module name (every layer inside it;
    the names of a Sequential's children are digits: "3" is module 3, 3 is the fourth layer)."""
    groups = layer_groups(model)
    listing = ", ".join(f"{i}={name}" for i, (name, _) in enumerate(groups))
    chosen: list[int] = []
    for entry in names:
        text = str(entry)
        if isinstance(entry, int):
            i = int(text)
            if not -len(groups) <= i < len(groups):
                raise RecipeError(f"{key} = {entry!r}: the model has {len(groups)} layers, 0..{len(groups) - 1} from "
                                  f"the input ({listing})")
            hits = [i % len(groups)]
        elif text == "output":
            hits = [len(groups) - 1]
        else:
            hits = [i for i, (_, modules) in enumerate(groups)
                    if any(m == text or m.startswith(text + ".") for m in modules)]
            if not hits:
                raise RecipeError(f"{key} = {text!r} names no layer of the model; its layers: {listing}")
        chosen += [i for i in hits if i not in chosen]
    return sorted(chosen)


def _params_of(model: nn.Module, groups, indices: list[int]) -> list[nn.Parameter]:
    prefixes = [m + "." for i in indices for m in groups[i][1]]
    return [p for name, p in model.named_parameters() if name.startswith(tuple(prefixes))]


def load_pretrained(model: nn.Module, path: Path, skip: list | None = None) -> list[dict]:
    """Copy every tensor of the state dict at `path` whose name and shape match the model's (weights_only loading).
    Returns one row per layer: loaded, new (shape changed, not in the file, or skipped) or ignored (in the file,
    not in the model)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated file, not a torch file at all
        what = ("it holds pickled objects other than tensors, which could run code: refused"
                if "GLOBAL" in str(e) or "Unsupported global" in str(e) else
                f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
        raise RecipeError(f"model.pretrained {str(path)!r} cannot be loaded with weights_only=True ({what}); "
                          f"expected a state dict saved with torch.save(model.state_dict(), path) or a run "
                          f"folder") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RecipeError(f"model.pretrained {str(path)!r} is not a state dict (name -> tensor)")
    groups = layer_groups(model)
    skipped = set(select_layers(model, skip or [], "model.pretrained_skip"))
    own = model.state_dict()
    rows: list[dict] = []
    for i, (name, _) in enumerate(groups):
        keys = [k for k in own if _owner(k, groups) == i]
        if i in skipped:
            status, detail = "new", "skipped (model.pretrained_skip)"
        elif not all(k in state for k in keys):
            status, detail = "new", "not in the file"
        elif any(state[k].shape != own[k].shape for k in keys):
            bad = next(k for k in keys if state[k].shape != own[k].shape)
            status, detail = "new", f"shape changed: {bad} {list(state[bad].shape)} -> {list(own[bad].shape)}"
        else:
            status, detail = "loaded", f"{len(keys)} tensors"
            with torch.no_grad():
                for k in keys:
                    own[k].copy_(state[k].to(own[k].dtype))
        rows.append({"layer": i, "name": name, "status": status, "detail": detail,
                     "parameters": sum(own[k].numel() for k in keys)})
    for k in state:
        if k not in own:
            rows.append({"layer": "", "name": k, "status": "ignored", "detail": "in the file, not in the model",
                         "parameters": state[k].numel()})
    return rows


@dataclass
class FineTuning:
    """train.freeze and train.unfreeze for one fit: frozen layers get requires_grad = False (so the optimizer, weight
    decay and L1 never see them) and their batch norms stay in eval mode (running statistics unchanged); at each
    epoch of train.unfreeze the top-most frozen layer joins the optimizer, at train.unfreeze_lr x the current LR."""

    model: nn.Module
    frozen: list[int] = field(default_factory=list)     # layer indices still frozen, from the input
    schedule: list[int] = field(default_factory=list)   # epochs at which one more layer is unfrozen
    lr_factor: float = 1.0
    weight_decay: float = 0.0
    events: list[dict] = field(default_factory=list)    # {"epoch", "layer", "name", "lr"} per unfreezing

    @classmethod
    def from_train(cls, model: nn.Module, tr: dict) -> FineTuning:
        tune = cls(model, schedule=sorted(tr.get("unfreeze") or []), lr_factor=tr.get("unfreeze_lr", 1.0),
                   weight_decay=tr.get("weight_decay", 0.0))
        if tr.get("freeze"):
            tune.frozen = select_layers(model, tr["freeze"], "train.freeze")
            for p in _params_of(model, layer_groups(model), tune.frozen):
                p.requires_grad_(False)
            if not any(p.requires_grad for p in model.parameters()):
                raise RecipeError(f"train.freeze = {tr['freeze']} freezes every layer: nothing would train (leave "
                                  f"at least the output layer out)")
        return tune

    def names(self) -> list[str]:
        groups = layer_groups(self.model)
        return [groups[i][0] for i in self.frozen]

    def epoch_begin(self, epoch: int, optimizer: torch.optim.Optimizer, scheduler=None) -> None:
        """Unfreeze what the schedule says for this epoch, then keep the frozen layers' norms in eval mode."""
        groups = layer_groups(self.model)
        for _ in range(self.schedule.count(epoch)):
            if not self.frozen:
                break
            top = self.frozen.pop()  # the highest frozen layer: fine-tune from the output down
            params = _params_of(self.model, groups, [top])
            for p in params:
                p.requires_grad_(True)
            base = optimizer.param_groups[0]
            lr = base["lr"] * self.lr_factor
            decay = [p for p in params if p.ndim > 1]  # weight decay on weights only, as build_optimizer does
            for ps, wd in ((decay, self.weight_decay), ([p for p in params if p.ndim <= 1], 0.0)):
                if ps:
                    optimizer.add_param_group({"params": ps, "lr": lr, "weight_decay": wd, "initial_lr": lr})
                    if scheduler is not None and hasattr(scheduler, "base_lrs"):
                        scheduler.base_lrs.append(base.get("initial_lr", base["lr"]) * self.lr_factor)
            self.events.append({"epoch": epoch, "layer": top, "name": groups[top][0], "lr": lr})
        if self.frozen:
            modules = dict(self.model.named_modules())
            for i in self.frozen:
                for m in groups[i][1]:
                    for sub in modules[m].modules():
                        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                            sub.eval()

    def summary(self) -> dict:
        return {"frozen_at_end": self.names(), "unfrozen": self.events} if (self.frozen or self.events) else {}
