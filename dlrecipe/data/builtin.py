"""Embedded and generated datasets: scikit-learn's tables and digits, spiral, XOR and MNIST-1D (all offline)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import RawData


@dataclass(frozen=True)
class EmbeddedDataset:
    summary: str
    task: str
    load: Callable[[dict, int], RawData]   # (data table, seed) -> RawData
    lecture: str = "-"


def _sklearn(name: str, shape: tuple[int, ...] | None = None) -> Callable[[dict, int], RawData]:
    def load(cfg: dict, seed: int) -> RawData:
        import sklearn.datasets as skd

        bunch = getattr(skd, f"load_{name}")()
        x = bunch.data.astype(np.float32)
        if shape:
            x = x.reshape(len(x), *shape)
        is_cls = hasattr(bunch, "target_names")
        y = bunch.target.astype(np.int64 if is_cls else np.float32)
        classes = [str(c) for c in bunch.target_names] if is_cls else None
        return RawData(x, y, classes=classes)
    return load


def _spiral(cfg: dict, seed: int) -> RawData:
    """CS231n's spiral: `classes` arms of n_samples/classes points each, angle noise `noise`."""
    rng = np.random.default_rng(seed)
    k, n = cfg["classes"], cfg["n_samples"] // cfg["classes"]
    xs, ys = [], []
    for j in range(k):
        r = np.linspace(0.0, 1, n)
        t = np.linspace(j * 4, (j + 1) * 4, n) + rng.normal(size=n) * cfg["noise"]
        xs.append(np.c_[r * np.sin(t), r * np.cos(t)])
        ys.append(np.full(n, j))
    return RawData(np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64),
                   classes=[str(j) for j in range(k)])


def _xor(cfg: dict, seed: int) -> RawData:
    """Points uniform in [-1, 1]^2 plus Gaussian noise; label = 1 when x1 and x2 have different signs."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(cfg["n_samples"], 2))
    y = (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64)
    x = x + rng.normal(scale=cfg["noise"] * 0.5, size=x.shape)
    return RawData(x.astype(np.float32), y, classes=["same", "different"])


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dlrecipe"


def _mnist1d(cfg: dict, seed: int) -> RawData:
    """MNIST-1D from the package's procedural generator with its default arguments (offline), cached as .npz."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    key = hashlib.sha1(repr(sorted(get_dataset_args(as_dict=True).items())).encode()).hexdigest()[:10]
    cache = _cache_dir() / f"mnist1d-{key}.npz"
    if cache.is_file():
        d = np.load(cache)
    else:
        state = np.random.get_state()  # make_dataset reseeds numpy's global RNG: leave it as we found it
        d = make_dataset(args)
        np.random.set_state(state)
        d = {k: d[k] for k in ("x", "y", "x_test", "y_test")}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **d)
            tmp.replace(cache)
        except OSError:
            pass  # a read-only home only costs the 2 s of regeneration next time
    as_x = lambda a: a.astype(np.float32)[:, None, :]  # (N, 1, 40): one channel, for 1-D convolutions
    return RawData(as_x(d["x"]), d["y"].astype(np.int64), as_x(d["x_test"]), d["y_test"].astype(np.int64),
                   classes=[str(i) for i in range(10)])


DATASETS: dict[str, EmbeddedDataset] = {
    "digits": EmbeddedDataset("scikit-learn's 8x8 handwritten digits, 1797 images (1, 8, 8), 10 classes", "classification",
                      _sklearn("digits", (1, 8, 8))),
    "iris": EmbeddedDataset("scikit-learn's iris: 150 examples, 4 features, 3 classes", "classification", _sklearn("iris")),
    "wine": EmbeddedDataset("scikit-learn's wine: 178 examples, 13 features, 3 classes", "classification", _sklearn("wine")),
    "breast_cancer": EmbeddedDataset("scikit-learn's breast cancer: 569 examples, 30 features, 2 classes", "classification",
                             _sklearn("breast_cancer")),
    "diabetes": EmbeddedDataset("scikit-learn's diabetes: 442 examples, 10 features, a continuous target", "regression",
                        _sklearn("diabetes")),
    "spiral": EmbeddedDataset("generated 2-D spiral, data.classes arms (lecture toy problem)", "classification", _spiral,
                      "003"),
    "xor": EmbeddedDataset("generated 2-D XOR: not linearly separable", "classification", _xor, "004"),
    "mnist1d": EmbeddedDataset("MNIST-1D: 5000 signals (1, 40), 10 classes, generated offline; its own 4000/1000 "
                       "train/test split", "classification", _mnist1d),
}
