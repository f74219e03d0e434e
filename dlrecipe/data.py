"""Data: embedded and generated datasets, user files, the train/validation/test split and preprocessing.

Everything ends as tensors on the training device (`Data`); minibatches are taken by indexing a shuffled
permutation (`batches`), with no per-sample DataLoader overhead. Preprocessing statistics come from the
training split only (lecture 002).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datafiles import RawData, read_file
from .errors import DataError, RecipeError


@dataclass(frozen=True)
class Dataset:
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


DATASETS: dict[str, Dataset] = {
    "digits": Dataset("scikit-learn's 8x8 handwritten digits, 1797 images (1, 8, 8), 10 classes", "classification",
                      _sklearn("digits", (1, 8, 8))),
    "iris": Dataset("scikit-learn's iris: 150 examples, 4 features, 3 classes", "classification", _sklearn("iris")),
    "wine": Dataset("scikit-learn's wine: 178 examples, 13 features, 3 classes", "classification", _sklearn("wine")),
    "breast_cancer": Dataset("scikit-learn's breast cancer: 569 examples, 30 features, 2 classes", "classification",
                             _sklearn("breast_cancer")),
    "diabetes": Dataset("scikit-learn's diabetes: 442 examples, 10 features, a continuous target", "regression",
                        _sklearn("diabetes")),
    "spiral": Dataset("generated 2-D spiral, data.classes arms (lecture toy problem)", "classification", _spiral,
                      "003"),
    "xor": Dataset("generated 2-D XOR: not linearly separable", "classification", _xor, "004"),
    "mnist1d": Dataset("MNIST-1D: 5000 signals (1, 40), 10 classes, generated offline; its own 4000/1000 "
                       "train/test split", "classification", _mnist1d),
}


def resolve_source(source: str, fmt: str, recipe_path: Path | None) -> Path:
    """A data file's path: as given (relative to the current folder), else relative to the recipe's folder."""
    p = Path(source).expanduser()
    if p.exists() or p.is_absolute() or recipe_path is None:
        if not p.exists():
            raise RecipeError(f"data.source = {source!r}: no such file or folder, and not an embedded dataset "
                              f"({', '.join(DATASETS)})")
        return p
    q = recipe_path.parent / p
    if q.exists():
        return q
    raise RecipeError(f"data.source = {source!r}: no such file or folder (looked in the current folder and in "
                      f"{recipe_path.parent}), and not an embedded dataset ({', '.join(DATASETS)})")


@dataclass
class Data:
    """Tensors on the training device, already split and preprocessed."""

    x_train: torch.Tensor   # (N, *input_shape) float32
    y_train: torch.Tensor   # (N,) int64 labels or float32 targets
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    num_outputs: int        # classes, or 1 for regression
    classes: list[str] | None = None
    target_mean: float = 0.0   # regression: targets are standardised with the training mean and std
    target_std: float = 1.0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Data:
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def _split(raw: RawData, split: list[float], task: str, seed: int) -> tuple[np.ndarray, ...]:
    """Stratified (classification) train/val/test split by seed; a source's own test split is kept as test."""
    from sklearn.model_selection import train_test_split

    x, y = raw.x, raw.y
    stratify = task == "classification"
    if raw.x_test is not None:
        x_test, y_test = raw.x_test, raw.y_test
        val_frac = split[1] / (split[0] + split[1])
    else:
        if split[2] > 0:
            x, x_test, y, y_test = train_test_split(x, y, test_size=split[2], random_state=seed,
                                                    stratify=y if stratify else None)
        else:
            x_test, y_test = x[:0], y[:0]
        val_frac = split[1] / (split[0] + split[1])
    try:
        x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=val_frac, random_state=seed,
                                                          stratify=y if stratify else None)
    except ValueError as e:  # e.g. a class with a single example cannot be stratified
        raise DataError(f"cannot split the data {split}: {e}") from None
    return x_train, y_train, x_val, y_val, x_test, y_test


def _preprocess(name: str, x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Fit `name` on the training split, apply it to every split."""
    if name == "none":
        return [x_train, *others]
    if name == "scale_255":
        return [a / np.float32(255) for a in (x_train, *others)]
    n = len(x_train)
    if name == "per_channel":
        if x_train.ndim < 3:
            raise DataError(f"data.preprocess = 'per_channel' needs images (N, C, ...); the data has shape "
                            f"{x_train.shape[1:]}: use 'standardize' or set data.shape")
        axes = (0,) + tuple(range(2, x_train.ndim))
        mu = x_train.mean(axis=axes, keepdims=True)
        sd = x_train.std(axis=axes, keepdims=True)
        sd[sd < 1e-8] = 1.0
        return [((a - mu) / sd).astype(np.float32) for a in (x_train, *others)]
    flat = x_train.reshape(n, -1).astype(np.float64)
    mu = flat.mean(axis=0)
    if name == "center":
        f = lambda a: a.reshape(len(a), -1) - mu
    elif name == "standardize":
        sd = flat.std(axis=0)
        sd[sd < 1e-8] = 1.0  # constant features (digits' corner pixels) stay 0 instead of NaN
        f = lambda a: (a.reshape(len(a), -1) - mu) / sd
    elif name == "pca_whiten":
        cov = np.cov(flat - mu, rowvar=False)
        eigval, eigvec = np.linalg.eigh(np.atleast_2d(cov))
        scale = 1.0 / np.sqrt(eigval + 1e-5)  # epsilon keeps near-zero directions from blowing up
        f = lambda a: ((a.reshape(len(a), -1) - mu) @ eigvec) * scale
    else:
        raise RecipeError(f"data.preprocess = {name!r} is unknown")
    return [f(a).reshape(a.shape).astype(np.float32) for a in (x_train, *others)]


def load_raw(recipe) -> RawData:
    """The recipe's data source as numpy arrays, before splitting."""
    d = recipe.section("data")
    if d["source"] in DATASETS:
        raw = DATASETS[d["source"]].load(d, recipe["seed"])
    else:
        raw = read_file(resolve_source(d["source"], d["format"], recipe.path), d["format"], d["target"], recipe.task)
    if d["shape"]:
        want = int(np.prod(d["shape"]))
        have = int(np.prod(raw.x.shape[1:]))
        if want != have:
            raise DataError(f"data.shape = {d['shape']} holds {want} values but each example has {have} "
                            f"(shape {list(raw.x.shape[1:])})")
        raw.x = raw.x.reshape(len(raw.x), *d["shape"])
        if raw.x_test is not None:
            raw.x_test = raw.x_test.reshape(len(raw.x_test), *d["shape"])
    return raw


def load_data(recipe, device: torch.device | str = "cpu") -> Data:
    """Load, split, preprocess and move the recipe's data to `device`."""
    d = recipe.section("data")
    raw = load_raw(recipe)
    if len(raw.x) < 10:
        raise DataError(f"data.source {d['source']!r} has {len(raw.x)} examples: at least 10 are needed to split")
    if recipe.task == "classification" and raw.y.dtype.kind == "f":
        raise DataError(f"data.source {d['source']!r} has a continuous target: set task = 'regression'")
    x_tr, y_tr, x_va, y_va, x_te, y_te = _split(raw, d["split"], recipe.task, recipe["seed"])
    x_tr, x_va, x_te = _preprocess(d["preprocess"], x_tr, x_va, x_te)
    img_augs = {"hflip", "crop", "cutout"} & set(d["augment"])
    if img_augs and x_tr.ndim != 4:
        raise DataError(f"data.augment {sorted(img_augs)} needs images (C, H, W); the data has shape "
                        f"{list(x_tr.shape[1:])}: set data.shape or drop these augmentations")
    mean, std = 0.0, 1.0
    if recipe.task == "classification":
        num_outputs = int(max(y_tr.max(), y_va.max(), y_te.max() if len(y_te) else 0)) + 1
        ydtype = torch.int64
    else:
        num_outputs = 1
        mean, std = float(y_tr.mean()), float(y_tr.std()) or 1.0
        y_tr, y_va, y_te = ((y - mean) / std for y in (y_tr, y_va, y_te))
        ydtype = torch.float32
    t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)
    data = Data(t(x_tr), t(y_tr, ydtype), t(x_va), t(y_va, ydtype), t(x_te), t(y_te, ydtype), recipe.task,
                num_outputs, raw.classes, mean, std)
    return _unless_withheld(data.to(device))


def batches(n: int, batch_size: int, generator: torch.Generator | None, device) -> Iterator[torch.Tensor]:
    """Index tensors of one epoch's minibatches: a shuffled permutation when a generator is given."""
    if generator is None:
        order = torch.arange(n, device=device)
    else:
        order = torch.randperm(n, generator=generator).to(device)
    return iter(order.split(batch_size))


_TEST_WITHHELD = {"on": False}  # set by withheld_test_split(): load_data returns an empty test split


@contextlib.contextmanager
def withheld_test_split():
    """Inside this block load_data gives an empty test split (same train and validation examples, same classes):
    `dlrecipe run`'s passes select on validation only and the test split is read once, at the very end."""
    before, _TEST_WITHHELD["on"] = _TEST_WITHHELD["on"], True
    try:
        yield
    finally:
        _TEST_WITHHELD["on"] = before


def _unless_withheld(data: Data) -> Data:
    if _TEST_WITHHELD["on"]:
        data.x_test, data.y_test = data.x_test[:0], data.y_test[:0]
    return data
