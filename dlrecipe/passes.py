"""Step 7 of the recipe, "go back to step 5" (lecture 003): the change a pass's diagnosis calls for, as recipe overrides
for the next search pass of `dlrecipe run`.

A pass is one search (coarse then fine trials). After it, the selected trial's curves are diagnosed (diagnose.py);
the first actionable finding (diagnose.ACTION_ORDER) picks the change, which only touches training settings the
lectures name for that symptom: the search space (LR range, weight decay, dropout), data.batch_size, data.augment
(mixup) and search.fine_epochs. The model's architecture is the user's and is never changed.

    overfitting            weight decay range x10 (0 dropped), dropout searched above its value, mixup added
                           (classification; blended examples are learnt more slowly, so the fine trials get 2x epochs)
    underfitting, lr_too_low   weight decay range /10 (0 kept), dropout searched below its value, LR range x3.16,
                           fine epochs x2
    train_longer           fine epochs x2 (also added to any other change when the curve is still falling)
    lr_too_high, diverged, noisy_val   LR range /3.16, batch size x2
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .diagnose import ACTIONS, NOT_ACTED_ON, Finding, primary_finding

LR_SHIFT = math.sqrt(10)   # the LR range moves by half a decade per pass (its two-decade width is kept)
WD_SHIFT = 10.0            # weight decay values move by a decade per pass
EPOCH_GROWTH = 2           # train longer: the fine trials' epochs x2 ...
MAX_FINE_EPOCHS = 200      # ... up to this many (early stopping still ends a trial when validation stops improving)
DROPOUT_STEP = 0.3         # dropout searched over [p, p + 0.3] (overfitting) or [p - 0.3, p] (underfitting) ...
MAX_DROPOUT = 0.7          # ... never above this DROP probability
BATCH_GROWTH = 2           # a larger batch averages the gradient over more examples: less noisy updates
MIN_BATCHES = 8            # ... but an epoch keeps at least this many minibatches


@dataclass
class Change:
    """The next pass's recipe overrides and why."""

    trigger: str                  # the finding codes that called for it, e.g. "overfitting, train_longer"
    overrides: dict = field(default_factory=dict)   # recipe key -> value (search.space: the whole space)
    said: list[str] = field(default_factory=list)   # each change in plain words

    @property
    def text(self) -> str:
        return "; ".join(self.said)


def _values(spec: dict) -> tuple[str, list]:
    kind, arg = next(iter(spec.items()))
    return kind, list(arg)


def _shift_range(spec: dict, factor: float) -> dict:
    """A numeric range (or choice of numbers) multiplied by factor."""
    kind, arg = _values(spec)
    return {kind: [float(f"{v * factor:.4g}") for v in arg]}


def _weight_decay(space: dict, recipe, up: bool) -> tuple[dict, str]:
    key = "train.weight_decay"
    spec = space.get(key)
    if spec is None:  # not searched: search a decade around the recipe's value, upwards or downwards
        w = recipe[key] or 1e-4
        values = [w, w * WD_SHIFT, w * WD_SHIFT ** 2] if up else [0.0, w / WD_SHIFT, w]
        new = {"choice": [float(f"{v:.4g}") for v in values]}
    else:
        kind, arg = _values(spec)
        if kind == "choice":
            nonzero = sorted(v for v in arg if v > 0) or [1e-5]
            if up:  # 0 -> the smallest non-zero value; everything a decade up
                values = sorted({float(f"{v * WD_SHIFT:.4g}") for v in nonzero} | {nonzero[0]})
            else:
                values = sorted({0.0} | {float(f"{v / WD_SHIFT:.4g}") for v in nonzero})
            new = {"choice": values}
        else:
            new = _shift_range(spec, WD_SHIFT if up else 1 / WD_SHIFT)
    old = spec or {"fixed": [recipe[key]]}
    return new, f"weight decay {_said(old)} -> {_said(new)}"


def _dropout(space: dict, recipe, best: dict, up: bool) -> tuple[dict | None, str]:
    key = "model.dropout"
    if recipe["model.kind"] == "python":  # a factory's own layers: its dropout is the user's
        return None, ""
    p = best.get(key, recipe[key])
    low, high = (p, min(p + DROPOUT_STEP, MAX_DROPOUT)) if up else (max(p - DROPOUT_STEP, 0.0), p)
    if high - low < 0.05:
        return None, ""
    new = {"uniform": [round(low, 3), round(high, 3)]}
    return new, f"dropout {p:.3g} -> searched over {low:.3g}..{high:.3g}"


def _said(spec: dict) -> str:
    kind, arg = _values(spec)
    if kind in ("choice", "fixed"):
        return "{" + ", ".join(f"{v:g}" for v in arg) + "}" if kind == "choice" else f"{arg[0]:g}"
    return f"{arg[0]:.3g}..{arg[1]:.3g}"


def next_change(findings: list[Finding], recipe, space: dict, best: dict, *, n_train: int,
                image_input: bool = False) -> Change | None:
    """The change for the next pass, or None when no finding is actionable (or nothing is left to change).

    recipe: the pass's recipe (its search.fine_epochs, data.batch_size, data.augment before any budget scaling);
    space: the search space it searched, {key: {kind: [...]}}, train.lr included; best: its selected trial's values.
    """
    primary = primary_finding(findings)
    if primary is None:
        return None
    action = ACTIONS[primary.code][0]
    codes = [primary.code] + (["train_longer"] if action != "longer" and any(f.code == "train_longer"
                                                                             for f in findings) else [])
    space = {k: dict(v) for k, v in space.items()}
    ch = Change(", ".join(codes))
    longer = action in ("longer", "free") or "train_longer" in codes

    if action in ("calm", "free"):  # the LR range moves by half a decade, down or up
        factor = 1 / LR_SHIFT if action == "calm" else LR_SHIFT
        old = space.get("train.lr") or {"log_uniform": [recipe["train.lr"] / 10, recipe["train.lr"] * 10]}
        space["train.lr"] = _shift_range(old, factor)
        ch.said.append(f"LR range {_said(old)} -> {_said(space['train.lr'])}")
    if action == "calm":
        batch = recipe["data.batch_size"]
        bigger = min(batch * BATCH_GROWTH, max(batch, n_train // MIN_BATCHES))
        if bigger > batch:
            ch.overrides["data.batch_size"] = bigger
            ch.said.append(f"batch size {batch} -> {bigger}")
    if action in ("regularise", "free"):
        up = action == "regularise"
        space["train.weight_decay"], said = _weight_decay(space, recipe, up)
        ch.said.append(said)
        drop, said = _dropout(space, recipe, best, up)
        if drop is not None:
            space["model.dropout"] = drop
            ch.said.append(said)
    if action == "regularise":
        augment = list(recipe["data.augment"])
        if recipe.task == "classification" and "mixup" not in augment:
            ch.overrides["data.augment"] = augment + ["mixup"]
            ch.said.append("mixup added (blended examples are learnt more slowly: fine epochs x2)")
            longer = True
        elif image_input and "crop" not in augment:
            ch.overrides["data.augment"] = augment + ["crop"]
            ch.said.append("random crops added")
    if longer:
        epochs = recipe["search.fine_epochs"]
        more = min(epochs * EPOCH_GROWTH, MAX_FINE_EPOCHS)
        if more > epochs:
            ch.overrides["search.fine_epochs"] = more
            ch.said.append(f"fine epochs {epochs} -> {more}")
    if not ch.said:
        return None
    ch.overrides["search.space"] = space
    return ch


def why_not(findings: list[Finding]) -> str:
    """Why no pass follows: the findings that were seen but are not acted on, in words."""
    if not findings:
        return "no alarm: the curves look healthy"
    parts = [f"{f.code} ({NOT_ACTED_ON.get(f.code, 'nothing left to change for it')})" for f in findings]
    return "no actionable alarm: " + ", ".join(parts)
