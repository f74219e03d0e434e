"""Python data hooks: `data.source = "package.module:function"` (or "path/to/file.py:function").

The function is called as f(data, seed), with the recipe's [data] table as a dict and the recipe's seed, and
returns any of: `(x, y)` arrays or tensors; a pandas DataFrame (with `data.target`, encoded like a table file); a
dict of splits {"train": ..., "val": ..., "test": ...} of those ("train" required; a missing "val" or "test" is
split off "train"); or a torch map-style Dataset whose item i is (input, label), streamed through a DataLoader
(one Dataset split by dlrecipe, or one per split in the dict). Anything else is a one-line error saying what is
allowed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UserError
from ..usercode import load_callable
from .files import RawData, _encode_labels
from .stream import Examples, _array

ALLOWED = ("(x, y) arrays or tensors, a pandas DataFrame (with data.target), a torch map-style Dataset of "
           "(input, label) items, or a dict {'train': ..., 'val': ..., 'test': ...} of those")


def _is_dataset(obj) -> bool:
    return isinstance(obj, torch.utils.data.Dataset) or (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
                                                         and not isinstance(obj, (tuple, list, dict, str, bytes,
                                                                                  np.ndarray)))


def _part(obj, where: str, cfg: dict, task: str):
    """(x, raw labels) of one split: x an array, a DataFrame of table features or Examples."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        from .tables import frame_to_raw

        raw = frame_to_raw(obj, cfg, task, where, encode_target=False)
        return raw.x, raw.y, raw.notes
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x = _array(obj[0], f"{where} x")
        y = obj[1].detach().cpu().numpy() if isinstance(obj[1], torch.Tensor) else np.asarray(obj[1])
        if y.ndim != 1:
            raise DataError(f"{where}: y has shape {tuple(y.shape)}; expected one label or target per row (N,)")
        if x.ndim < 2 or len(x) != len(y):
            raise DataError(f"{where}: x has shape {tuple(x.shape)} and y {len(y)} rows; expected x (N, ...) and "
                            f"y (N,) with the same N")
        return x, y, []
    if _is_dataset(obj):
        if len(obj) == 0:
            raise DataError(f"{where}: the Dataset is empty")
        ex = Examples(obj)
        return ex, np.asarray(ex.labels()), []
    raise DataError(f"{where} is {type(obj).__name__}; allowed: {ALLOWED}")


def load_hook(spec: str, cfg: dict, seed: int, task: str, recipe_path: Path | None) -> RawData:
    """Call the hook and turn what it returns into RawData (labels encoded across every split)."""
    func = load_callable(spec, "data.source", recipe_path)
    where = f"data.source {spec!r}"
    try:
        out = func(dict(cfg), seed)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's code failing is bad input: one line, no traceback
        raise DataError(f"{where} raised {type(e).__name__}: {e}") from None
    if isinstance(out, dict):
        unknown = sorted(set(out) - {"train", "val", "test"})
        if "train" not in out or unknown:
            raise DataError(f"{where} returned a dict with keys {sorted(out)}; expected 'train' and optionally "
                            f"'val' and 'test'")
        parts = {k: _part(v, f"{where} [{k!r}]", cfg, task) for k, v in out.items()}
    else:
        parts = {"train": _part(out, f"{where} returned value", cfg, task)}
    kinds = {type(x).__name__ for x, _, _ in parts.values()}
    if len(kinds) > 1:
        raise DataError(f"{where}: the splits mix {', '.join(sorted(kinds))}; return the same kind for every split")
    classes = None
    ys = {k: y for k, (_, y, _) in parts.items()}
    if task == "classification":
        labels = [ys[k] for k in ys]
        both = np.concatenate([np.asarray(a, dtype=object if a.dtype.kind in "OUS" else a.dtype) for a in labels])
        _, _, classes = _encode_labels(where, both)
        lookup = {c: i for i, c in enumerate(classes)}
        ys = {k: np.array([lookup[str(v)] for v in y.tolist()], dtype=np.int64) for k, y in ys.items()}
    else:
        for k, y in ys.items():
            if y.dtype.kind not in "biuf":
                raise DataError(f"{where} [{k!r}]: targets have dtype {y.dtype}; regression needs numbers")
        ys = {k: y.astype(np.float32) for k, y in ys.items()}
    raw = RawData(x=parts["train"][0], y=ys["train"], classes=classes,
                  notes=[f"data from {spec}: " + (", ".join(f"{k} {len(y)}" for k, y in ys.items()) if len(ys) > 1
                                                  else f"{len(ys['train'])}") + " examples"]
                  + [n for _, _, notes in parts.values() for n in notes])
    if "val" in parts:
        raw.x_val, raw.y_val = parts["val"][0], ys["val"]
    if "test" in parts:
        raw.x_test, raw.y_test = parts["test"][0], ys["test"]
    return raw
