"""labels: the data's targets before any training: a split with a single class, classes in validation or test that
training never shows, labels outside [0, C), a classification target that looks continuous, a constant target."""
from __future__ import annotations

import torch

from .base import Check

NAME = "labels"
CONTINUOUS_MIN_CLASSES = 20    # a numeric target with more classes than this ...
CONTINUOUS_PER_CLASS = 5       # ... and fewer training examples per class than this on average looks continuous


def _numeric(names: list[str] | None) -> bool:
    try:
        [float(n) for n in names or []]
        return True
    except ValueError:
        return False


def check_labels(data) -> Check:
    """Check: every split's labels, against the classes the model outputs."""
    if data.task == "regression":
        std = float(data.y_train.double().std()) if len(data.y_train) > 1 else 0.0
        expected = "a target that varies"
        if std == 0.0:  # (standardised targets have std 1 unless constant)
            return Check(NAME, "fail", "the training target is constant", expected,
                         "every training example has the same target value: check data.target")
        return Check(NAME, "pass", f"{len(data.y_train)} training targets, std {std:.3g} (standardised)", expected)
    c = data.num_outputs
    names = data.classes if data.classes and len(data.classes) == c else [str(i) for i in range(c)]
    expected = f"labels in [0, {c}), at least 2 classes in training, every evaluated class seen in training"
    splits = {"train": data.y_train, "val": data.y_val, "test": data.y_test}
    for split, y in splits.items():
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= c):
            bad = sorted({int(v) for v in y[(y < 0) | (y >= c)].unique().tolist()})[:5]
            return Check(NAME, "fail", f"{split} labels {bad} outside [0, {c})", expected,
                         f"the model outputs {c} classes but the {split} split has labels {bad}: the labels must be "
                         f"class ids 0..{c - 1}")
    counts = torch.bincount(data.y_train.cpu(), minlength=c)
    present = [i for i in range(c) if counts[i] > 0]
    observed = f"{len(present)} classes in {len(data.y_train)} training examples"
    if len(present) == 1:
        return Check(NAME, "fail", f"the training split has one class ({names[present[0]]!r})", expected,
                     "every training label is the same class: nothing to learn. Check data.target (the right "
                     "column?) and the file (sorted by label, then cut?)")
    for split in ("val", "test"):
        y = splits[split]
        unseen = sorted(set(y.unique().tolist()) - set(present))
        if unseen:
            return Check(NAME, "fail", f"{split} has classes training never shows: "
                         f"{', '.join(repr(names[i]) for i in unseen[:5])}", expected,
                         f"the model cannot learn classes absent from the training split ({len(unseen)} of them in "
                         f"{split}): re-split the data so that training holds every class")
    if (c > CONTINUOUS_MIN_CLASSES and len(data.y_train) / len(present) < CONTINUOUS_PER_CLASS
            and _numeric(data.classes)):
        return Check(NAME, "fail", f"{c} numeric classes, {len(data.y_train) / len(present):.1f} training examples "
                     f"each", expected, f"the target looks continuous ({c} distinct numbers): set task = "
                     f"'regression', or bin the target into classes")
    return Check(NAME, "pass", observed, expected)


def run(ctx) -> Check:
    return check_labels(ctx.data)
