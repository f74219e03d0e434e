"""Tests for dlrecipe.data.files: real files in every format are written to tmp_path and read back."""

import gzip
import struct

import numpy as np
import pandas as pd
import pytest

from dlrecipe.data.files import CIFAR10_CLASSES, FORMATS, RawData, read_file
from dlrecipe.errors import DataError

# ----------------------------------------------------------------------------- helpers


def write_idx(path, arr, magic_type=0x08, gz=False):
    """Write `arr` as an IDX file by hand: 0x0000, type byte, ndim byte, big-endian dims, data."""
    header = struct.pack(">HBB", 0, magic_type, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(">u1").tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx_folder(folder, n_train=5, n_test=3, gz=False, test=True, seed=0):
    """Write train (and t10k) IDX pairs of random 28x28 uint8 images; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if prefix == "t10k" and not test:
            continue
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8)[::-1] % 3  # ids 0..2, kept as they are
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar_batch(path, images, labels):
    """Write CIFAR-10 binary records byte by byte: label, then R, G, B planes of 32x32 row-major."""
    out = bytearray()
    for img, lab in zip(images, labels):
        out.append(int(lab))
        for ch in range(3):
            for row in range(32):
                out.extend(bytes(img[ch, row].tolist()))
    path.write_bytes(bytes(out))


def make_cifar(folder, sizes=(3, 2), n_test=2, seed=0):
    """Write data_batch_1..k and test_batch; return the concatenated train and test arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i, n in enumerate(sizes, start=1):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_cifar_batch(folder / f"data_batch_{i}.bin", x, y)
        xs.append(x)
        ys.append(y)
    xt = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    yt = rng.integers(0, 10, n_test, dtype=np.uint8)
    write_cifar_batch(folder / "test_batch.bin", xt, yt)
    return np.concatenate(xs), np.concatenate(ys), xt, yt


# ----------------------------------------------------------------------------- tables


def test_csv_string_target_classification(tmp_path):
    df = pd.DataFrame(
        {"a": [1, 2, 3, 4], "b": [0.5, -1.25, 2.0, 3.5], "label": ["dog", "cat", "ant", "cat"]}
    )
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    data = read_file(path, "auto", "label", "classification")
    assert isinstance(data, RawData)
    assert data.classes == ["ant", "cat", "dog"]
    assert data.y.dtype == np.int64 and data.y.tolist() == [2, 1, 0, 1]
    assert list(data.x.columns) == ["a", "b"]  # features stay a table: encoded after the split (tables.py)
    np.testing.assert_array_equal(data.x.to_numpy(np.float32), df[["a", "b"]].to_numpy(np.float32))
    assert data.x_test is None and data.y_test is None


def test_csv_target_in_middle_and_regression(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "t": [0.1, 0.2, 0.3], "c": [7, 8, 9]})
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    data = read_file(path, "csv", "t", "regression")
    assert data.classes is None
    assert data.y.dtype == np.float32
    np.testing.assert_array_equal(data.y, np.array([0.1, 0.2, 0.3], np.float32))
    np.testing.assert_array_equal(data.x.to_numpy(np.float32), np.array([[1, 7], [2, 8], [3, 9]], np.float32))


def test_parquet_roundtrip_with_integer_labels_remapped(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    df = pd.DataFrame(x, columns=["f0", "f1", "f2"])
    df["y"] = [5, 3, 7, 7, 3, 5]
    for name in ("d.parquet", "d.pq"):
        df.to_parquet(tmp_path / name)
        data = read_file(tmp_path / name, "auto", "y", "classification")
        np.testing.assert_array_equal(data.x.to_numpy(np.float32), x)
        assert data.classes == ["3", "5", "7"]
        assert data.y.tolist() == [1, 0, 2, 2, 0, 1]


def test_explicit_format_overrides_extension(tmp_path):
    path = tmp_path / "table.dat"
    pd.DataFrame({"a": [1.5, 2.5], "y": [0, 1]}).to_parquet(path)
    data = read_file(path, "parquet", "y", "classification")
    np.testing.assert_array_equal(data.x.to_numpy(), [[1.5], [2.5]])


def test_table_missing_target_lists_columns(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"a": [1], "b": [2], "c": [3]}).to_csv(path, index=False)
    with pytest.raises(DataError) as e:
        read_file(path, "auto", "label", "classification")
    msg = str(e.value)
    assert "x.csv" in msg and "target column 'label' not found" in msg and "a, b, c" in msg
    assert "\n" not in msg


def test_table_text_feature_is_kept_for_encoding(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"a": [1, 2], "colour": ["red", "blue"], "y": [0, 1]}).to_csv(path, index=False)
    data = read_file(path, "auto", "y", "classification")
    assert data.x["colour"].tolist() == ["red", "blue"]


def test_table_missing_values_named_with_count_when_refused(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"a": [1.0, None, None], "b": [1, None, 3], "y": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"'a' \(2\), 'b' \(1\) with data.missing = 'error'"):
        read_file(path, "auto", "y", "classification", {"missing": "error"})
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["u", None, "v"]}).to_csv(path, index=False)
    data = read_file(path, "auto", "y", "classification")  # a blank target: the row is dropped, and said
    assert data.y.tolist() == [0, 1] and data.notes == ["1 row(s) with a blank target 'y' dropped"]


def test_regression_target_must_be_numeric(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"a": [1.0, 2.0], "y": ["low", "high"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="regression needs numbers"):
        read_file(path, "auto", "y", "regression")


# ----------------------------------------------------------------------------- npz


def test_npz_with_test_arrays_keeps_ids(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 255, (8, 2, 3, 3)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    xt = rng.normal(size=(3, 2, 3, 3))
    yt = np.array([2, 0, 1])
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt)
    data = read_file(path, "auto", "ignored", "classification")
    assert data.x.dtype == np.float32 and data.x.shape == (8, 2, 3, 3)
    np.testing.assert_array_equal(data.x, x.astype(np.float32))
    np.testing.assert_array_equal(data.x_test, xt.astype(np.float32))
    assert data.y.tolist() == y.tolist() and data.y_test.tolist() == yt.tolist()
    assert data.y.dtype == np.int64 and data.classes == ["0", "1", "2"]


def test_npz_without_test_remaps_labels_across_splits(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(6.0).reshape(3, 2), y=np.array([10, 20, 10]))
    data = read_file(path, "npz", "", "classification")
    assert data.x_test is None and data.y_test is None
    assert data.y.tolist() == [0, 1, 0] and data.classes == ["10", "20"]
    # a class only in the test split still gets one shared mapping
    np.savez(path, x=np.zeros((2, 1)), y=np.array([1, 3]), x_test=np.zeros((1, 1)), y_test=np.array([2]))
    data = read_file(path, "npz", "", "classification")
    assert data.classes == ["1", "2", "3"] and data.y.tolist() == [0, 2] and data.y_test.tolist() == [1]


def test_npz_regression_targets_float32(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((3, 2)), y=np.array([0.5, 1.5, -2.0]))
    data = read_file(path, "npz", "", "regression")
    assert data.y.dtype == np.float32 and data.y.tolist() == [0.5, 1.5, -2.0]
    assert data.classes is None


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.ones((2, 2)), y=np.ones(2))
    with pytest.raises(DataError, match="missing array.*x.*found: features, y"):
        read_file(path, "auto", "", "classification")
    np.savez(path, x=np.ones((3, 2)), y=np.ones(2))
    with pytest.raises(DataError, match="same N"):
        read_file(path, "auto", "", "classification")
    np.savez(path, x=np.ones((2, 2)), y=np.ones(2), x_test=np.ones((1, 2)))
    with pytest.raises(DataError, match="both or neither"):
        read_file(path, "auto", "", "classification")
    np.savez(path, x=np.ones((2, 2)), y=np.ones(2), x_test=np.ones((1, 3)), y_test=np.ones(1))
    with pytest.raises(DataError, match="x_test"):
        read_file(path, "auto", "", "classification")


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    arrays = make_idx_folder(tmp_path, gz=gz)
    data = read_file(tmp_path, "idx", "", "classification")
    images, labels = arrays["train"]
    assert data.x.dtype == np.float32 and data.x.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(data.x[:, 0], images.astype(np.float32))
    assert data.y.dtype == np.int64 and data.y.tolist() == labels.tolist()
    t_images, t_labels = arrays["t10k"]
    np.testing.assert_array_equal(data.x_test[:, 0], t_images.astype(np.float32))
    assert data.y_test.tolist() == t_labels.tolist()
    assert data.x.max() > 1  # raw 0..255, not scaled
    assert data.classes == ["0", "1", "2"]


def test_idx_labels_remapped_when_not_0_to_c_minus_1(tmp_path):
    make_idx_folder(tmp_path, test=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 7, 3, 9, 7], np.uint8))
    data = read_file(tmp_path, "idx", "", "classification")
    assert data.y.tolist() == [0, 1, 0, 2, 1] and data.classes == ["3", "7", "9"]
    data = read_file(tmp_path, "idx", "", "regression")
    assert data.y.dtype == np.float32 and data.y.tolist() == [3, 7, 3, 9, 7]


def test_idx_without_test_split(tmp_path):
    make_idx_folder(tmp_path, test=False)
    data = read_file(tmp_path, "idx", "", "classification")
    assert data.x.shape == (5, 1, 28, 28) and data.x_test is None and data.y_test is None


def test_idx_wrong_magic(tmp_path):
    make_idx_folder(tmp_path, test=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), magic_type=0x42)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*bad IDX magic"):
        read_file(tmp_path, "idx", "", "classification")


def test_idx_count_mismatch_and_truncation(tmp_path):
    make_idx_folder(tmp_path, test=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        read_file(tmp_path, "idx", "", "classification")
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="header dims"):
        read_file(tmp_path, "idx", "", "classification")


def test_idx_missing_files(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        read_file(tmp_path, "idx", "", "classification")
    make_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        read_file(tmp_path, "idx", "", "classification")


# ----------------------------------------------------------------------------- CIFAR-10


def test_cifar_two_batches_and_test(tmp_path):
    x, y, xt, yt = make_cifar(tmp_path)
    data = read_file(tmp_path, "cifar10", "", "classification")
    assert data.x.dtype == np.float32 and data.x.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(data.x, x.astype(np.float32))
    assert data.y.dtype == np.int64 and data.y.tolist() == y.tolist()
    np.testing.assert_array_equal(data.x_test, xt.astype(np.float32))
    assert data.y_test.tolist() == yt.tolist()
    assert data.classes == CIFAR10_CLASSES and data.classes[0] == "airplane"


def test_cifar_nested_folder_and_meta_names(tmp_path):
    nested = tmp_path / "cifar-10-batches-bin"
    x, _, _, _ = make_cifar(nested, sizes=(2,))
    names = [f"class{i}" for i in range(10)]
    (nested / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    data = read_file(tmp_path, "cifar10", "", "classification")
    np.testing.assert_array_equal(data.x, x.astype(np.float32))
    assert data.classes == names


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match="data_batch_1.bin"):
        read_file(tmp_path, "cifar10", "", "classification")
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x00" * 3074)
    with pytest.raises(DataError, match="not a multiple of 3073"):
        read_file(tmp_path, "cifar10", "", "classification")


# ----------------------------------------------------------------------------- dispatch


def test_read_file_dispatch_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_file(tmp_path / "nope.csv", "auto", "y", "classification")
    with pytest.raises(DataError, match='data.format = "imagefolder".*"idx"'):
        read_file(tmp_path, "auto", "y", "classification")
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(DataError, match=r"unknown extension '\.xlsx'.*\.csv, \.parquet, \.pq, \.npz"):
        read_file(odd, "auto", "y", "classification")
    with pytest.raises(DataError, match="needs a folder"):
        read_file(odd, "idx", "y", "classification")
    with pytest.raises(DataError, match="unknown data.format"):
        read_file(odd, "excel", "y", "classification")


def test_formats_listing():
    assert set(FORMATS) == {"auto", "csv", "parquet", "npz", "idx", "cifar10", "imagefolder"}
    assert all(isinstance(v, str) and v and "\n" not in v for v in FORMATS.values())


@pytest.mark.parametrize(("name", "fmt", "reason"), [
    ("bad.parquet", "auto", "cannot read table"),
    ("bad.npz", "auto", "cannot read .npz"),
    ("bad.npz.gz", "npz", "cannot read .npz"),
    ("empty.csv", "auto", "cannot read table"),
])
def test_corrupt_files_are_data_errors(tmp_path, name, fmt, reason):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"PK\x03\x04 this is not a real archive\n\x00\x01")
    with pytest.raises(DataError, match=reason) as e:
        read_file(path, fmt, "y", "classification")
    assert name in str(e.value) and "\n" not in str(e.value)
