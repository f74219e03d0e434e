"""The split, the fitted transform and the tensors every command trains on.

`load_data` reads the recipe's source (embedded dataset, file, image folder or Python hook), splits it (stratified
by seed; a source's own validation/test split is kept), fits the `Transform` on the training split only (a table's
encoder, then the preprocessing statistics, lecture 002) and applies it to every split. In-memory data ends as
tensors on the training device, and minibatches are taken by indexing a shuffled permutation (`batches`), with no
per-sample DataLoader overhead; a streamed source (a Dataset) ends as `StreamedX` views read through a DataLoader.
The fitted transform is saved with every model, so `dlrecipe predict` applies exactly what training applied.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, RecipeError
from ..usercode import is_spec
from .builtin import DATASETS
from .files import RawData, read_file
from .images import channels_last, check_reshape
from .stream import Examples, StreamedX, fit_stats


def resolve_source(source: str, fmt: str, recipe_path: Path | None) -> Path:
    """A data file's path: as given (relative to the current folder), else relative to the recipe's folder."""
    p = Path(source).expanduser()
    if p.exists() or p.is_absolute() or recipe_path is None:
        if not p.exists():
            raise RecipeError(f"data.source = {source!r}: no such file or folder, and not an embedded dataset "
                              f"({', '.join(DATASETS)}) or a Python hook ('module:function')")
        return p
    q = recipe_path.parent / p
    if q.exists():
        return q
    raise RecipeError(f"data.source = {source!r}: no such file or folder (looked in the current folder and in "
                      f"{recipe_path.parent}), and not an embedded dataset ({', '.join(DATASETS)}) or a Python hook "
                      f"('module:function')")


def is_hook(source: str, recipe_path: Path | None = None) -> bool:
    """data.source names a Python function rather than a dataset or a file."""
    if source in DATASETS or not is_spec(source):
        return False
    p = Path(source)
    return not (p.exists() or (recipe_path is not None and (Path(recipe_path).parent / p).exists()))


# ----------------------------------------------------------------------------- preprocessing


def fit_preprocess(name: str, x_train: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics of `name` on the training split (lecture 002: never on validation or test)."""
    if name in ("none", "scale_255"):
        return {}
    if name == "per_channel":
        if x_train.ndim < 3:
            raise DataError(f"data.preprocess = 'per_channel' needs images (N, C, ...); the data has shape "
                            f"{x_train.shape[1:]}: use 'standardize' or set data.shape")
        axes = (0,) + tuple(range(2, x_train.ndim))
        mu = x_train.mean(axis=axes, keepdims=True)
        sd = x_train.std(axis=axes, keepdims=True)
        sd[sd < 1e-8] = 1.0
        return {"mu": mu, "sd": sd}
    flat = x_train.reshape(len(x_train), -1).astype(np.float64)
    mu = flat.mean(axis=0)
    if name == "center":
        return {"mu": mu}
    if name == "standardize":
        sd = flat.std(axis=0)
        sd[sd < 1e-8] = 1.0  # constant features (digits' corner pixels) stay 0 instead of NaN
        return {"mu": mu, "sd": sd}
    if name == "pca_whiten":
        return _whitening(mu, np.cov(flat - mu, rowvar=False))
    raise RecipeError(f"data.preprocess = {name!r} is unknown")


def _whitening(mu: np.ndarray, cov: np.ndarray) -> dict[str, np.ndarray]:
    eigval, eigvec = np.linalg.eigh(np.atleast_2d(cov))
    return {"mu": mu, "eigvec": eigvec, "scale": 1.0 / np.sqrt(eigval + 1e-5)}  # epsilon: near-zero directions


def fit_preprocess_stream(name: str, examples: Examples, encode, workers: int | None) -> dict[str, np.ndarray]:
    """The same statistics from one streaming pass over the training split (sums in float64)."""
    if name in ("none", "scale_255"):
        return {}
    n, s1, s2, outer = fit_stats(examples, encode, workers)
    shape = tuple(encode(np.zeros((1, *examples.example_shape), np.float32)).shape[1:])
    s1, s2 = s1.numpy(), s2.numpy()
    if name == "per_channel":
        if len(shape) < 2:
            raise DataError(f"data.preprocess = 'per_channel' needs images (N, C, ...); the data has shape "
                            f"{shape}: use 'standardize' or set data.shape")
        per = int(np.prod(shape[1:]))
        count = n * per
        mu = s1.reshape(shape[0], per).sum(1) / count
        var = s2.reshape(shape[0], per).sum(1) / count - mu ** 2
        sd = np.sqrt(np.maximum(var, 0))
        sd[sd < 1e-8] = 1.0
        keep = (1, shape[0]) + (1,) * (len(shape) - 1)
        return {"mu": mu.reshape(keep).astype(np.float32), "sd": sd.reshape(keep).astype(np.float32)}
    mu = s1 / n
    if name == "center":
        return {"mu": mu}
    if name == "standardize":
        sd = np.sqrt(np.maximum(s2 / n - mu ** 2, 0))
        sd[sd < 1e-8] = 1.0
        return {"mu": mu, "sd": sd}
    if outer is None:
        raise DataError(f"data.preprocess = 'pca_whiten' on streamed data needs at most 4096 values per example; "
                        f"these have {int(np.prod(shape))}: use 'standardize' or 'per_channel'")
    cov = (outer.numpy() - n * np.outer(mu, mu)) / max(n - 1, 1)
    return _whitening(mu, cov)


def apply_preprocess(name: str, stats: dict[str, np.ndarray], a: np.ndarray) -> np.ndarray:
    """Apply fitted statistics to any split, float32 out."""
    if name == "none":
        return a
    if name == "scale_255":
        return a / np.float32(255)
    if name == "per_channel":
        return ((a - stats["mu"]) / stats["sd"]).astype(np.float32)
    flat = a.reshape(len(a), -1) - stats["mu"]
    if name == "standardize":
        flat = flat / stats["sd"]
    elif name == "pca_whiten":
        flat = (flat @ stats["eigvec"]) * stats["scale"]
    return flat.reshape(a.shape).astype(np.float32)


def _preprocess(name: str, x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Fit `name` on the training split, apply it to every split."""
    stats = fit_preprocess(name, x_train)
    return [apply_preprocess(name, stats, a) for a in (x_train, *others)]


@dataclass
class Transform:
    """Raw examples -> model inputs: the table encoder, the layout (channels-last, data.shape) and the
    preprocessing statistics, all fitted on the training split. Saved with every model (`predict.py`)."""

    preprocess: str = "none"
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    encoder: Any = None                  # tables: scikit-learn ColumnTransformer
    channels_last: bool = False          # (N, H, W, C) arrays transposed to (N, C, H, W)
    shape: list[int] = field(default_factory=list)   # data.shape, after the layout
    raw_shape: list[int] = field(default_factory=list)  # one raw example's shape (arrays; [] for tables)

    def encode(self, x) -> np.ndarray:
        """Raw features (an array or a DataFrame of table columns) -> float32 (N, *input_shape), unnormalised."""
        if self.encoder is not None:
            from .tables import encode

            x = encode(self.encoder, x)
        x = np.asarray(x, dtype=np.float32)
        if self.channels_last:
            x = x.transpose(0, 3, 1, 2)
        if self.shape:
            x = x.reshape(len(x), *self.shape)
        return np.ascontiguousarray(x)

    def normalise(self, a: np.ndarray) -> np.ndarray:
        return apply_preprocess(self.preprocess, self.stats, a)

    def __call__(self, x) -> np.ndarray:
        return self.normalise(self.encode(x))


def fit_transform(d: dict, x_train, task_notes: list[str]) -> Transform:
    """The recipe's transform fitted on the training split's raw features."""
    t = Transform(preprocess=d["preprocess"])
    if isinstance(x_train, Examples):
        have = list(x_train.example_shape)
    elif _is_frame(x_train):
        from .tables import fit_encoder

        from .tables import many_valued

        t.encoder = fit_encoder(x_train, list(d.get("categorical") or []))
        have = [len(t.encoder.get_feature_names_out())]
        task_notes += many_valued(t.encoder, len(x_train))
    else:
        have = list(x_train.shape[1:])
        t.raw_shape = have
    if channels_last((0, *have)):
        t.channels_last = True
        task_notes.append(f"channels-last examples {have} transposed to {[have[2], have[0], have[1]]} (C, H, W)")
        have = [have[2], have[0], have[1]]
    if d["shape"] and list(d["shape"]) != have:
        check_reshape(have, list(d["shape"]))
        t.shape = list(d["shape"])
    if isinstance(x_train, Examples):
        t.stats = fit_preprocess_stream(t.preprocess, x_train, t.encode, d.get("workers"))
    else:
        t.stats = fit_preprocess(t.preprocess, t.encode(x_train))
    return t


def _is_frame(x) -> bool:
    return type(x).__name__ == "DataFrame"


# ----------------------------------------------------------------------------- the split


def _take(x, rows: np.ndarray):
    if _is_frame(x):
        return x.iloc[rows].reset_index(drop=True)
    if isinstance(x, Examples):
        return x.take(rows)
    return x[rows]


def _split(raw: RawData, split: list[float], task: str, seed: int) -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    """{"train"|"val"|"test": (x, y, source ids)}: stratified (classification) by seed; a source's own validation
    or test split is kept as it is. The split depends only on the labels, the fractions and the seed."""
    from sklearn.model_selection import train_test_split

    ids_all = raw.ids.get("all", raw.ids.get("train"))
    ids_all = np.arange(len(raw.y)) if ids_all is None else ids_all
    rows = np.arange(len(raw.y))
    strat = lambda r: raw.y[r] if task == "classification" else None
    parts: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    try:
        if raw.x_test is not None:
            parts["test"] = (raw.x_test, raw.y_test, raw.ids.get("test", np.arange(len(raw.y_test))))
        elif split[2] > 0:
            rows, test_rows = train_test_split(rows, test_size=split[2], random_state=seed, stratify=strat(rows))
            parts["test"] = (_take(raw.x, test_rows), raw.y[test_rows], ids_all[test_rows])
        else:
            parts["test"] = (_take(raw.x, rows[:0]), raw.y[:0], ids_all[:0])
        if raw.x_val is not None:
            parts["val"] = (raw.x_val, raw.y_val, raw.ids.get("val", np.arange(len(raw.y_val))))
        else:
            val_frac = split[1] / (split[0] + split[1])
            rows, val_rows = train_test_split(rows, test_size=val_frac, random_state=seed, stratify=strat(rows))
            parts["val"] = (_take(raw.x, val_rows), raw.y[val_rows], ids_all[val_rows])
    except ValueError as e:  # e.g. a class with a single example cannot be stratified
        raise DataError(f"cannot split the data {split}: {e}") from None
    parts["train"] = (_take(raw.x, rows), raw.y[rows], ids_all[rows])
    return parts


def select_classes(raw: RawData, keep: list[int], task: str) -> RawData:
    """data.classes_only: the rows of these labels in every split, relabelled 0..k-1 in the order given (class names
    kept), so a network trained on some classes can be transferred to the others."""
    from dataclasses import replace

    if not keep:
        return raw
    if task != "classification":
        raise RecipeError("data.classes_only is for task = 'classification'")
    present = set(np.unique(raw.y).tolist())
    missing = [c for c in keep if c not in present]
    if missing:
        raise DataError(f"data.classes_only = {keep}: no example has label {missing} (labels present: "
                        f"{sorted(present)})")
    new_label = np.full(max(max(present), max(keep)) + 1, -1, dtype=np.int64)
    new_label[keep] = np.arange(len(keep))
    parts = {}
    ids = dict(raw.ids)
    for x_name, y_name, id_names in (("x", "y", ("all", "train")), ("x_val", "y_val", ("val",)),
                                     ("x_test", "y_test", ("test",))):
        y = getattr(raw, y_name)
        if y is None:
            continue
        rows = np.flatnonzero(np.isin(y, keep))
        parts[x_name], parts[y_name] = _take(getattr(raw, x_name), rows), new_label[y[rows]]
        for n in id_names:
            if n in ids and len(ids[n]) == len(y):
                ids[n] = ids[n][rows]
    names = raw.classes or [str(i) for i in range(len(new_label))]
    return replace(raw, **parts, ids=ids, classes=[names[c] for c in keep],
                   notes=raw.notes + [f"data.classes_only: kept classes {[names[c] for c in keep]}, "
                                      f"relabelled 0..{len(keep) - 1}"])


def subsample_train(part: tuple[Any, np.ndarray, np.ndarray], n: int | None, task: str, seed: int):
    """data.max_train: (a stratified random sample (by seed) of n training examples, the other training inputs
    without their labels, or None when all n are kept)."""
    from sklearn.model_selection import train_test_split

    x, y, ids = part
    if n is None or n >= len(y):
        return part, None
    rows = np.arange(len(y))
    try:
        rows, rest = train_test_split(rows, train_size=n, random_state=seed,
                                      stratify=y if task == "classification" else None)
    except ValueError as e:  # fewer examples than classes
        raise DataError(f"data.max_train = {n}: {e}") from None
    rows = np.sort(rows)
    return (_take(x, rows), y[rows], ids[rows]), _take(x, np.sort(rest))


# ----------------------------------------------------------------------------- loading


def load_raw(recipe) -> RawData:
    """The recipe's data source before splitting: an embedded dataset, a file or folder, or a Python hook."""
    d = recipe.section("data")
    source = d["source"]
    if source in DATASETS:
        return DATASETS[source].load(d, recipe["seed"])
    if is_hook(source, recipe.path):
        from .hooks import load_hook

        return load_hook(source, d, recipe["seed"], recipe.task, recipe.path)
    return read_file(resolve_source(source, d["format"], recipe.path), d["format"], d["target"], recipe.task, d)


@dataclass
class Data:
    """The splits, preprocessed: tensors on the training device, or `StreamedX` views for streamed sources."""

    x_train: torch.Tensor   # (N, *input_shape) float32 (or StreamedX)
    y_train: torch.Tensor   # (N,) int64 labels or float32 targets (always in memory)
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    num_outputs: int        # classes, or 1 for regression
    classes: list[str] | None = None
    target_mean: float = 0.0   # regression: targets are standardised with the training mean and std
    target_std: float = 1.0
    transform: Transform | None = None   # raw source examples -> model inputs (what predict applies)
    ids: dict[str, np.ndarray] = field(default_factory=dict)  # each split's source row numbers or file names
    notes: list[str] = field(default_factory=list)            # rows dropped, files skipped, layout changes
    columns: list[dict] = field(default_factory=list)         # tables: how each source column is encoded
    image: dict | None = None                                  # image folders: size and channels
    x_unlabelled: torch.Tensor | None = None   # data.max_train: the other training inputs ([pretrain] uses them)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def streamed(self) -> bool:
        return isinstance(self.x_train, StreamedX)

    def to(self, device: torch.device | str) -> Data:
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_unlabelled"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def in_memory(self, n_train: int, n_val: int, seed: int = 0) -> Data:
        """Streamed data as tensors of a seeded sample of at most n_train / n_val rows (sanity and lr-find read
        only what they need); in-memory data as it is."""
        if not self.streamed:
            return self
        from dataclasses import replace

        g = torch.Generator().manual_seed(seed)
        pick = lambda n, k: torch.randperm(n, generator=g)[:k].sort().values
        tr, va = pick(len(self.x_train), n_train), pick(len(self.x_val), n_val)
        dev = self.y_train.device
        return replace(self, x_train=self.x_train[tr], y_train=self.y_train[tr.to(dev)], x_val=self.x_val[va],
                       y_val=self.y_val[va.to(dev)], x_test=self.x_test[:0], y_test=self.y_test[:0])


def _check_classes(source: str, raw: RawData) -> None:
    """Classification needs two classes: with one, the loss is 0 from the start and nothing is learned."""
    labels = [y for y in (raw.y, raw.y_val, raw.y_test) if y is not None and len(y)]
    found = np.unique(np.concatenate(labels)) if labels else np.array([])
    if len(found) < 2:
        only = found[0] if len(found) else None
        if raw.classes and only is not None and 0 <= int(only) < len(raw.classes):
            only = raw.classes[int(only)]
        name = "" if only is None else f" ({only})"
        raise DataError(f"data.source {source!r} has one class{name}: classification needs at least 2 classes "
                        f"(or set task = 'regression')")


def _constant_columns(x_train) -> list[str]:
    """A note (a warning, not an error) for each table column with one value in the training split."""
    if not _is_frame(x_train):
        return []
    same = [str(c) for c in x_train.columns if x_train[c].nunique(dropna=False) <= 1]
    if not same:
        return []
    names = ", ".join(map(repr, same))
    return [f"warning: constant feature {names}: one value in the whole training split, so it carries no "
            f"information (leave it out with data.drop)"]


def load_data(recipe, device: torch.device | str = "cpu", *, one_class_ok: bool = False) -> Data:
    """Load, split, fit the transform on the training split, apply it, and move the data to `device`.

    one_class_ok: sanity loads one-class data to fail its labels check (exit 1) with the evidence; every other
    command refuses it here (exit 2)."""
    d = recipe.section("data")
    raw = select_classes(load_raw(recipe), d.get("classes_only") or [], recipe.task)
    if len(raw.y) < 10 and raw.x_val is None:
        raise DataError(f"data.source {d['source']!r} has {len(raw.y)} examples: at least 10 are needed to split")
    if recipe.task == "classification" and raw.y.dtype.kind == "f":
        raise DataError(f"data.source {d['source']!r} has a continuous target: set task = 'regression'")
    if recipe.task == "classification" and not one_class_ok:
        _check_classes(d["source"], raw)
    parts = _split(raw, d["split"], recipe.task, recipe["seed"])
    parts["train"], unlabelled = subsample_train(parts["train"], d.get("max_train"), recipe.task, recipe["seed"])
    notes = list(raw.notes) + _constant_columns(parts["train"][0])
    transform = fit_transform(d, parts["train"][0], notes)
    xs = {}
    for name, (x, _, _) in parts.items():
        if isinstance(x, Examples):
            xs[name] = StreamedX(x, transform, "cpu", d.get("workers"))
        else:
            xs[name] = torch.as_tensor(transform(x))
    img_augs = {"hflip", "crop", "cutout", "resized_crop", "pca_colour"} & set(d["augment"])
    if img_augs and len(xs["train"].shape) != 4:
        raise DataError(f"data.augment {sorted(img_augs)} needs images (C, H, W); the data has shape "
                        f"{list(xs['train'].shape[1:])}: set data.shape or drop these augmentations")
    ys = {name: y for name, (_, y, _) in parts.items()}
    mean, std = 0.0, 1.0
    if recipe.task == "classification":
        top = max(int(y.max()) for y in ys.values() if len(y)) + 1
        num_outputs = max(top, len(raw.classes or []))
        ydtype = torch.int64
    else:
        num_outputs = 1
        mean, std = float(ys["train"].mean()), float(ys["train"].std()) or 1.0
        ys = {k: (y - mean) / std for k, y in ys.items()}
        ydtype = torch.float32
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=ydtype)
    columns = []
    if transform.encoder is not None:
        from .tables import describe

        columns = describe(transform.encoder, parts["train"][0])
    data = Data(xs["train"], t(ys["train"]), xs["val"], t(ys["val"]), xs["test"], t(ys["test"]), recipe.task,
                num_outputs, raw.classes, mean, std, transform, {k: v[2] for k, v in parts.items()}, notes, columns,
                raw.image)
    if unlabelled is not None and not isinstance(unlabelled, Examples) and len(unlabelled):
        data.x_unlabelled = torch.as_tensor(transform(unlabelled))
    return _unless_withheld(data.to(device))


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


# ----------------------------------------------------------------------------- minibatches


def batches(n: int, batch_size: int, generator: torch.Generator | None, device) -> Iterator[torch.Tensor]:
    """Index tensors of one epoch's minibatches: a shuffled permutation when a generator is given."""
    if generator is None:
        order = torch.arange(n, device=device)
    else:
        order = torch.randperm(n, generator=generator).to(device)
    return iter(order.split(batch_size))


class _TensorEpochs:
    """In memory: each iteration is one epoch of (rows, x[rows]) minibatches, indexed on the device."""

    def __init__(self, x: torch.Tensor, batch_size: int, generator: torch.Generator | None):
        self.x, self.batch_size, self.generator = x, batch_size, generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in batches(len(self.x), self.batch_size, self.generator, self.x.device):
            yield idx, self.x[idx]


def epoch_batches(x, batch_size: int, generator: torch.Generator | None):
    """Iterate once per epoch for (rows, inputs) minibatches: indexing in memory, a DataLoader when streamed."""
    if isinstance(x, StreamedX):
        return x.epochs(batch_size, generator)
    return _TensorEpochs(x, batch_size, generator)


def eval_batches(x, batch_size: int) -> Iterator[torch.Tensor]:
    """A split in order, batch_size rows at a time."""
    if isinstance(x, StreamedX):
        yield from x.chunks(batch_size)
        return
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]
