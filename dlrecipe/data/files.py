"""Readers for user data files: CSV/Parquet tables, .npz arrays, MNIST-style IDX, CIFAR-10 binary, image folders.

Every reader returns a `RawData` with raw values (no scaling or normalisation: preprocessing is
done elsewhere; a table's features stay a DataFrame, encoded after the split by `tables.py`). Problems with a
file are raised as one-line `DataError`s that name the file, what is wrong and what is expected.
"""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrecipe.errors import DataError

FORMATS = {
    "auto": "pick the reader from the file extension (.csv, .parquet/.pq, .npz); folders need an explicit format",
    "csv": "CSV table with a header row: feature columns (numbers, text categories, blanks) and `data.target`",
    "parquet": "Parquet table (read with pyarrow): feature columns (numbers, categories, blanks) and `data.target`",
    "npz": "numpy .npz archive with arrays x and y, optionally x_test and y_test",
    "idx": "folder of MNIST / Fashion-MNIST IDX files (train-*, optional t10k-*; .gz allowed)",
    "cifar10": "folder of CIFAR-10 binary batches (data_batch_N.bin, test_batch.bin), also inside cifar-10-batches-bin/",
    "imagefolder": "folder of images (PNG, JPEG, ...) in class sub-folders root/<class>/, or pre-split "
                   "root/{train,val,test}/<class>/; read with Pillow",
}

TABLE_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


@dataclass
class RawData:
    """Examples read from a data source, before splitting and preprocessing."""

    x: Any  # (N, *shape) float32 array, a DataFrame of table features, or `stream.Examples` (read on demand)
    y: np.ndarray  # (N,) int64 class ids (classification) or float32 targets (regression)
    x_test: Any = None  # the source's own test split, if it has one
    y_test: np.ndarray | None = None
    classes: list[str] | None = None  # class names, index = class id (classification only)
    x_val: Any = None  # the source's own validation split (pre-split image folders, data hooks)
    y_val: np.ndarray | None = None
    ids: dict[str, np.ndarray] = field(default_factory=dict)  # "train"/"val"/"test" -> row number or file name
    notes: list[str] = field(default_factory=list)  # what was done to the data (rows dropped, files skipped)
    image: dict | None = None  # image folders: {"size": [H, W], "channels": C}, what predict reads new images as


def _err(path: Path, message: str) -> DataError:
    """Build a one-line DataError prefixed with the data source."""
    return DataError(f"data.source '{path}': " + " ".join(str(message).split()))


def _encode_labels(
    path: Path, y: np.ndarray, y_test: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Map class labels to ids 0..C-1 by their sorted unique values, shared by train and test.

    Integer labels that already are 0..C-1 map to themselves, so they are kept as they are.
    """
    both = y if y_test is None else np.concatenate([y, y_test])
    from .tables import looks_continuous

    if both.dtype.kind in "iuf" and looks_continuous(both):
        raise _err(path, f"the target looks continuous ({len(np.unique(both))} distinct numbers): did you mean "
                         f"task = 'regression'?")
    try:
        values = np.unique(both)
    except TypeError as e:  # e.g. a mix of numbers and strings in an object column
        raise _err(path, f"class labels cannot be sorted ({e}); expected labels of one type") from None
    ids = np.searchsorted(values, y).astype(np.int64)
    ids_test = None if y_test is None else np.searchsorted(values, y_test).astype(np.int64)
    return ids, ids_test, [str(v) for v in values.tolist()]


def _numeric(path: Path, name: str, a: np.ndarray) -> np.ndarray:
    """Return array `a` as float32, or raise if it is not numeric / has NaNs."""
    if a.dtype.kind not in "biuf":
        raise _err(path, f"array '{name}' has dtype {a.dtype}; expected numbers")
    out = a.astype(np.float32)
    n_nan = int(np.isnan(out).sum())
    if n_nan:
        raise _err(path, f"array '{name}' has {n_nan} missing (NaN) values; expected none")
    return out


def _targets(path: Path, task: str, y: np.ndarray, y_test: np.ndarray | None):
    """Turn raw target arrays into (y, y_test, classes) for the task."""
    if task == "classification":
        for name, a in (("y", y), ("y_test", y_test)):
            if a is not None and a.dtype.kind == "f" and np.isnan(a).any():
                raise _err(path, f"labels '{name}' have {int(np.isnan(a).sum())} missing (NaN) values")
        return _encode_labels(path, y, y_test)
    y = _numeric(path, "y", y)
    y_test = None if y_test is None else _numeric(path, "y_test", y_test)
    return y, y_test, None


# ----------------------------------------------------------------------------- tables


def read_table(path: Path, target: str, task: str, *, kind: str | None = None, cfg: dict | None = None) -> RawData:
    """Read a CSV or Parquet table: `data.target` is the label, the other columns (or `data.features`) are
    features, kept as a DataFrame that `tables.py` encodes after the split.

    `kind` ("csv" or "parquet") overrides the guess from the file extension.
    """
    import pandas as pd

    from .tables import frame_to_raw

    path = Path(path)
    if kind is None:
        kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    if kind == "csv" and path.is_file():
        with path.open("rb") as f:
            if b"\0" in f.read(8192):  # NUL bytes: an image, an archive, a model file, not a text table
                raise _err(path, "is not a text file (it holds binary bytes); expected a CSV table with a header row")
    try:
        if kind == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except (OSError, ValueError, ImportError, UnicodeDecodeError) as e:  # parser / pyarrow errors, on one line
        raise _err(path, f"cannot read table ({type(e).__name__}: {e})") from None
    return frame_to_raw(df, {"target": target, **(cfg or {})}, task, str(path))


# ----------------------------------------------------------------------------- npz


def read_npz(path: Path, task: str) -> RawData:
    """Read a numpy .npz archive with arrays x, y and optionally x_test, y_test."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _err(path, f"cannot read .npz archive ({type(e).__name__}: {e})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise _err(path, f"missing array(s) {', '.join(missing)}; expected x and y (optionally x_test, y_test); found: {found}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise _err(path, "has only one of x_test / y_test; expected both or neither")
    x, y = arrays["x"], arrays["y"]
    x_test, y_test = arrays.get("x_test"), arrays.get("y_test")
    for xn, yn, xa, ya in (("x", "y", x, y), ("x_test", "y_test", x_test, y_test)):
        if xa is None:
            continue
        if ya.ndim != 1:
            raise _err(path, f"'{yn}' has shape {ya.shape}; expected one label/target per row, shape (N,)")
        if xa.ndim < 1 or len(xa) != len(ya):
            raise _err(path, f"'{xn}' has shape {xa.shape} but '{yn}' has {len(ya)} rows; expected the same N")
    if len(x) == 0:
        raise _err(path, "array 'x' has no rows")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise _err(path, f"'x_test' rows have shape {x_test.shape[1:]}; expected {x.shape[1:]} like 'x'")

    x = _numeric(path, "x", x)
    x_test = None if x_test is None else _numeric(path, "x_test", x_test)
    y, y_test, classes = _targets(path, task, y, y_test)
    return RawData(x=x, y=y, x_test=x_test, y_test=y_test, classes=classes)


# ----------------------------------------------------------------------------- IDX (MNIST)

# IDX type byte -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(folder: Path, names: list[str]) -> Path | None:
    """First existing file among `names` (each also tried with .gz) in `folder`."""
    for name in names:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _read_idx_array(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file: magic 0x0000 + type byte + ndim byte, ndim big-endian int32 sizes, data."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise _err(path, f"cannot read IDX file ({type(e).__name__}: {e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        magic = data[:4].hex() if len(data) >= 4 else "too short"
        raise _err(path, f"bad IDX magic number ({magic}); expected 0x000008{ndim:02x} (an IDX file)")
    if data[3] != ndim:
        raise _err(path, f"IDX file has {data[3]} dimensions; expected {ndim}")
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise _err(path, f"IDX data is {len(data) - header} bytes; header dims {dims} need {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _read_idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Read the images/labels pair `prefix`-images/labels; None if neither file exists."""
    img_path = _find(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    lbl_path = _find(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    if img_path is None and lbl_path is None:
        return None
    if img_path is None or lbl_path is None:
        missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
        raise _err(folder, f"has only half of the {prefix} IDX pair; missing {missing}[.gz]")
    images = _read_idx_array(img_path, 3)  # (N, H, W)
    labels = _read_idx_array(lbl_path, 1)  # (N,)
    if len(images) != len(labels):
        raise _err(folder, f"{img_path.name} has {len(images)} images but {lbl_path.name} has {len(labels)} labels; expected equal counts")
    return images[:, None].astype(np.float32), labels  # (N, 1, H, W) raw values


def read_idx(folder: Path, task: str) -> RawData:
    """Read MNIST / Fashion-MNIST IDX files (train-* and optional t10k-* as the test split)."""
    folder = Path(folder)
    train = _read_idx_pair(folder, "train")
    if train is None:
        raise _err(folder, "no train-images-idx3-ubyte / train-labels-idx1-ubyte (optionally .gz) in this folder")
    test = _read_idx_pair(folder, "t10k")
    x, y = train
    x_test, y_test = test if test is not None else (None, None)
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise _err(folder, f"t10k images are {x_test.shape[2:]}; expected {x.shape[2:]} like the train images")
    y, y_test, classes = _targets(folder, task, y, y_test)
    return RawData(x=x, y=y, x_test=x_test, y_test=y_test, classes=classes)


# ----------------------------------------------------------------------------- CIFAR-10

_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte + 3x32x32 channel-major pixels


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch -> (images (N,3,32,32) float32, labels (N,) uint8)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise _err(path, f"size {raw.size} bytes is not a multiple of {_CIFAR_RECORD} (1 label + 3072 pixel bytes per record)")
    records = raw.reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32), records[:, 0].copy()


def read_cifar10(folder: Path, task: str) -> RawData:
    """Read the CIFAR-10 binary version from `folder` or `folder/cifar-10-batches-bin`."""
    folder = Path(folder)
    base = folder
    if not list(base.glob("data_batch_*.bin")) and (folder / "cifar-10-batches-bin").is_dir():
        base = folder / "cifar-10-batches-bin"
    train_files = [base / f"data_batch_{i}.bin" for i in range(1, 6) if (base / f"data_batch_{i}.bin").is_file()]
    if not train_files:
        raise _err(folder, "no data_batch_1.bin ... data_batch_5.bin here or in cifar-10-batches-bin/; expected the CIFAR-10 binary version")
    parts = [_read_cifar_batch(p) for p in train_files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    x_test = y_test = None
    if (base / "test_batch.bin").is_file():
        x_test, y_test = _read_cifar_batch(base / "test_batch.bin")

    classes = CIFAR10_CLASSES
    meta = base / "batches.meta.txt"
    if meta.is_file():
        classes = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
    top = int(max(y.max(), -1 if y_test is None else y_test.max()))
    if top >= len(classes):
        raise _err(base, f"label {top} found but only {len(classes)} class names; expected labels 0..{len(classes) - 1}")
    if task == "classification":
        return RawData(x=x, y=y.astype(np.int64), x_test=x_test,
                       y_test=None if y_test is None else y_test.astype(np.int64), classes=list(classes))
    return RawData(x=x, y=y.astype(np.float32), x_test=x_test,
                   y_test=None if y_test is None else y_test.astype(np.float32))


# ----------------------------------------------------------------------------- dispatch


def read_file(path: Path, fmt: str, target: str, task: str, cfg: dict | None = None) -> RawData:
    """Read a data source with the reader for `fmt` ("auto" picks one from the extension); `cfg` is the recipe's
    [data] table (table columns, missing values, image size)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise _err(path, f"unknown data.format '{fmt}'; expected one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise _err(path, "file or folder not found")
    if fmt == "auto":
        if path.is_dir():
            raise _err(path, 'is a folder; set data.format = "imagefolder" (images in class sub-folders), "idx" '
                             '(MNIST files) or "cifar10" (CIFAR-10 binary batches)')
        fmt = TABLE_EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise _err(path, f"unknown extension '{path.suffix}'; expected one of: {', '.join(TABLE_EXTENSIONS)} (or set data.format)")
    if fmt == "imagefolder":
        from .images import read_imagefolder

        if not path.is_dir():
            raise _err(path, 'data.format = "imagefolder" needs a folder; got a file')
        return read_imagefolder(path, cfg or {}, task)
    if fmt in ("idx", "cifar10"):
        if not path.is_dir():
            raise _err(path, f'data.format = "{fmt}" needs a folder; got a file')
        return read_idx(path, task) if fmt == "idx" else read_cifar10(path, task)
    if path.is_dir():
        raise _err(path, f'is a folder; data.format = "{fmt}" needs a file')
    if fmt == "npz":
        return read_npz(path, task)
    return read_table(path, target, task, kind=fmt, cfg=cfg)
