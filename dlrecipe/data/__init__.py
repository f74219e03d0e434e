"""Data: embedded and generated datasets, user files and folders, Python hooks, the split and preprocessing.

Parts: `builtin` (embedded datasets), `files` (CSV/Parquet/NPZ/IDX/CIFAR-10 readers), `tables` (encoding tables
with text and blanks), `images` (image folders, array layouts), `hooks` (the user's Python data functions),
`stream` (data larger than memory, through a DataLoader), `prepare` (split, fitted transform, tensors).
Names are loaded on first use, so that importing the recipe schema does not import torch.
"""
from __future__ import annotations

import importlib

_NAMES = {
    "DATASETS": "builtin", "EmbeddedDataset": "builtin",
    "FORMATS": "files", "RawData": "files", "read_file": "files", "CIFAR10_CLASSES": "files",
    "Data": "prepare", "Transform": "prepare", "load_data": "prepare", "load_raw": "prepare",
    "resolve_source": "prepare", "is_hook": "prepare", "batches": "prepare", "epoch_batches": "prepare",
    "eval_batches": "prepare", "_preprocess": "prepare", "fit_preprocess": "prepare",
    "apply_preprocess": "prepare", "withheld_test_split": "prepare",
    "StreamedX": "stream", "Examples": "stream",
}

__all__ = [n for n in _NAMES if not n.startswith("_")]  # built from _NAMES


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'dlrecipe.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
