"""Datasets, splits and preprocessing (statistics from the training split only, lecture 002)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrecipe.data import DATASETS, _preprocess, batches, load_data
from dlrecipe.errors import DataError
from dlrecipe.recipe import validate

from .conftest import write_table_csv


def _load(**values):
    return load_data(validate({"data.source": "iris", **values}))


def test_split_fractions_are_stratified_and_disjoint():
    d = _load(**{"data.preprocess": "none"})
    n = len(d.x_train) + len(d.x_val) + len(d.x_test)
    assert n == 150
    assert abs(len(d.x_test) - 0.15 * 150) <= 1 and abs(len(d.x_val) - 0.15 * 150) <= 1
    for y in (d.y_train, d.y_val, d.y_test):  # iris is 50/50/50: every split keeps a third of each class
        counts = torch.bincount(y, minlength=3).double()
        assert (counts / counts.sum() - 1 / 3).abs().max() < 0.05
    rows = {tuple(r.tolist()) for r in torch.cat([d.x_train, d.x_val, d.x_test])}
    assert len(rows) >= 147  # iris has a few duplicate rows; no example is in two splits twice over


def test_split_depends_on_the_seed():
    a, b = _load(seed=0), _load(seed=1)
    assert not torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.x_train, _load(seed=0).x_train)


def test_standardize_uses_training_statistics_only():
    d = _load(**{"data.preprocess": "standardize"})
    assert torch.allclose(d.x_train.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(d.x_train.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert d.x_val.mean(0).abs().max() > 1e-3  # validation is transformed with the training mean, not its own


def test_preprocess_against_numpy():
    rng = np.random.default_rng(0)
    tr = rng.normal(3, 2, size=(500, 3)).astype(np.float32) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 1]],
                                                                         dtype=np.float32)
    te = rng.normal(size=(10, 3)).astype(np.float32)
    _c_tr, c_te = _preprocess("center", tr, te)
    np.testing.assert_allclose(c_te, te - tr.mean(0), atol=1e-5)
    w_tr, _ = _preprocess("pca_whiten", tr, te)
    np.testing.assert_allclose(np.cov(w_tr, rowvar=False), np.eye(3), atol=1e-2)  # whitened: identity covariance
    s_tr, = _preprocess("scale_255", tr * 0 + 255)
    np.testing.assert_allclose(s_tr, 1.0)
    img = rng.normal(5, 3, size=(64, 3, 4, 4)).astype(np.float32)
    (p_img,) = _preprocess("per_channel", img)
    np.testing.assert_allclose(p_img.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(p_img.std(axis=(0, 2, 3)), 1, atol=1e-4)
    with pytest.raises(DataError, match="needs images"):
        _preprocess("per_channel", tr)


def test_embedded_datasets_load_with_their_shapes():
    shapes = {"digits": (1, 8, 8), "iris": (4,), "wine": (13,), "breast_cancer": (30,), "spiral": (2,),
              "xor": (2,)}
    for name, shape in shapes.items():
        d = load_data(validate({"data.source": name}))
        assert d.input_shape == shape, name
    reg = load_data(validate({"data.source": "diabetes", "task": "regression"}))
    assert reg.num_outputs == 1 and reg.y_train.dtype == torch.float32
    assert abs(float(reg.y_train.mean())) < 1e-5  # regression targets standardised with training statistics


def test_mnist1d_keeps_its_own_test_split():
    d = load_data(validate({"data.source": "mnist1d", "data.split": [0.8, 0.2, 0.0]}))
    assert d.input_shape == (1, 40) and d.num_outputs == 10
    assert len(d.x_test) == 1000 and len(d.x_train) + len(d.x_val) == 4000  # make_dataset's 80/20 split


def test_generated_data_is_seeded():
    for name in ("spiral", "xor"):
        a = DATASETS[name].load({"classes": 3, "n_samples": 300, "noise": 0.2}, 0)
        b = DATASETS[name].load({"classes": 3, "n_samples": 300, "noise": 0.2}, 0)
        np.testing.assert_array_equal(a.x, b.x)
        assert len(a.x) == 300


def test_csv_file_through_a_recipe(tmp_path):
    path = write_table_csv(tmp_path / "t.csv")
    d = load_data(validate({"data.source": str(path), "data.target": "label"}))
    assert d.num_outputs == 3 and d.classes == ["cat", "dog", "eel"] and d.input_shape == (4,)


def test_data_shape_reshapes_and_checks_size(tmp_path):
    d = load_data(validate({"data.source": "breast_cancer", "data.shape": [1, 30]}))
    assert d.input_shape == (1, 30)
    with pytest.raises(DataError, match="holds 31 values"):
        load_data(validate({"data.source": "breast_cancer", "data.shape": [31]}))


def test_image_augmentations_need_images():
    with pytest.raises(DataError, match="needs images"):
        _load(**{"data.augment": ["hflip"]})


def test_batches_cover_every_example_once():
    g = torch.Generator().manual_seed(0)
    idx = torch.cat(list(batches(103, 10, g, "cpu")))
    assert sorted(idx.tolist()) == list(range(103))
    assert idx.tolist() != list(range(103))  # shuffled
