"""Residual blocks, stochastic depth, fractional max pooling, PCA colour / resized-crop augmentation, hidden-unit
health and FLOP counts, each against its formula or torch's own module."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dlrecipe import augment as A
from dlrecipe.data import load_data
from dlrecipe.errors import RecipeError
from dlrecipe.health import count_flops, hidden_unit_health, unit_stats
from dlrecipe.models import Residual, build_cnn, build_model, survival_probabilities
from dlrecipe.recipe import validate

from .conftest import small_recipe


def _cnn_cfg(**kw):
    cfg = {"conv": [4, 4], "kernel_size": 3, "pool": "max", "pool_size": 2, "norm": "none", "activation": "relu",
           "hidden": [8], "bn_eps": 1e-5, "bn_momentum": 0.1, "dropout": 0.0, "residual": False,
           "stochastic_depth": 0.0, "pool_ratio": 0.7071}
    cfg.update(kw)
    return cfg


def test_residual_mlp_adds_the_input_and_projects_where_widths_differ():
    r = small_recipe(**{"model.hidden": [16, 16], "model.residual": True})
    model = build_model(r, load_data(r))
    first, second = model[1], model[2]
    assert isinstance(first, Residual) and isinstance(first.shortcut, nn.Linear)  # 4 -> 16: projection
    assert first.shortcut.bias is None and isinstance(second.shortcut, nn.Identity)  # 16 -> 16: identity
    x = torch.randn(5, 16)
    assert torch.allclose(second(x), x + second.body(x))
    z = torch.randn(5, 4)
    assert torch.allclose(first(z), z @ first.shortcut.weight.T + first.body(z))


def test_stochastic_depth_survival_decays_linearly_as_in_huang_et_al():
    assert survival_probabilities(4, 0.5) == pytest.approx([0.875, 0.75, 0.625, 0.5])  # p_L = 0.5 at the end
    r = small_recipe(**{"model.hidden": [8, 8, 8, 8], "model.residual": True, "model.stochastic_depth": 0.5})
    model = build_model(r, load_data(r))
    assert [m.survival for m in model.modules() if isinstance(m, Residual)] == pytest.approx([0.875, 0.75, 0.625, 0.5])


def test_stochastic_depth_drops_the_whole_block_in_training_and_scales_it_at_test():
    body = nn.Linear(3, 3)
    block = Residual(body, nn.Identity(), survival=0.25)
    x = torch.randn(64, 3)
    block.eval()
    assert torch.allclose(block(x), x + 0.25 * body(x))  # test: the expected output
    block.train()
    torch.manual_seed(0)
    outs = [block(x) for _ in range(400)]
    kept = sum(not torch.equal(o, x) for o in outs)
    assert all(torch.equal(o, x) or torch.allclose(o, x + body(x)) for o in outs)  # all or nothing per batch
    assert 0.18 < kept / 400 < 0.32


def test_stochastic_depth_needs_residual():
    with pytest.raises(RecipeError, match="model.residual"):
        small_recipe(**{"model.stochastic_depth": 0.2})


def test_residual_cnn_uses_a_1x1_projection_when_channels_change():
    model = build_cnn((1, 8, 8), 3, _cnn_cfg(residual=True))
    block = model[0]
    assert isinstance(block.shortcut, nn.Conv2d) and block.shortcut.kernel_size == (1, 1)
    assert isinstance(model[2].shortcut, nn.Identity)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_fractional_pooling_is_torchs_module_with_the_ratio():
    model = build_cnn((1, 16, 16), 3, _cnn_cfg(pool="fractional", pool_ratio=0.5))
    pools = [m for m in model.modules() if isinstance(m, nn.FractionalMaxPool2d)]
    assert len(pools) == 2 and pools[0].output_ratio == (0.5, 0.5) and pools[0].kernel_size == (2, 2)
    x = torch.randn(2, 4, 16, 16)
    samples = torch.rand(2, 4, 2)
    pools[0]._random_samples = samples  # fix the pseudo-random regions of the model's own module
    ours = pools[0](x)
    ref = nn.functional.fractional_max_pool2d(x, 2, output_ratio=(0.5, 0.5), _random_samples=samples)
    assert ours.shape == (2, 4, 8, 8) and torch.equal(ours, ref)


def test_fractional_pooling_is_refused_for_1d_inputs():
    with pytest.raises(RecipeError, match="2-D inputs"):
        build_cnn((1, 40), 3, _cnn_cfg(pool="fractional"))


def test_resized_crop_at_full_scale_is_the_identity_and_stays_in_the_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 6, 6)
    assert torch.allclose(A.resized_crop(x, g, (1.0, 1.0)), x, atol=1e-5)
    x = torch.zeros(4, 1, 8, 8)
    x[..., 2:6, 2:6] = 1.0
    out = A.resized_crop(x, g, (0.25, 0.25))  # a 4x4 window anywhere, blown up to 8x8
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_pca_colour_adds_one_offset_per_image_along_the_principal_components():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(200, 1, 4, 4, generator=gen)
    x = torch.cat([base, 2 * base, 0.1 * torch.randn(200, 1, 4, 4, generator=gen)], 1)  # RGB correlated
    eigvals, eigvecs = A.fit_pca_colour(x)
    pix = x.permute(1, 0, 2, 3).reshape(3, -1).numpy()
    ref_vals, _ref_vecs = np.linalg.eigh(np.cov(pix))
    assert eigvals.numpy() == pytest.approx(ref_vals, rel=1e-4)
    g = torch.Generator().manual_seed(1)
    out = A.pca_colour(x[:5], g, (eigvals, eigvecs), std=0.1)
    offset = (out - x[:5])[:, :, 0, 0]                      # (5, 3)
    assert torch.allclose(out - x[:5], offset[:, :, None, None].expand(-1, -1, 4, 4), atol=1e-6)  # all pixels
    alpha = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)) * 0.1
    assert torch.allclose(offset, (alpha * eigvals) @ eigvecs.T, atol=1e-5)  # sum_j p_j alpha_j lambda_j
    with pytest.raises(RecipeError, match="RGB"):
        A.fit_pca_colour(torch.zeros(2, 1, 4, 4))


def test_pca_colour_and_resized_crop_train(tmp_path):
    from dlrecipe.loop import fit

    r = validate({"data.source": "digits", "model.kind": "cnn", "model.conv": [4], "model.hidden": [8],
                  "data.augment": ["resized_crop"], "train.epochs": 1})
    data = load_data(r)
    fit(build_model(r, data), data, r.section("train"), augment=["resized_crop"],
        aug_cfg=A.config(r.section("data")), max_batches=2)


def test_unit_stats_against_hand_computed_values():
    h = torch.tensor([[0.0, 1.0, 2.0, 5.0], [0.0, 2.0, 4.0, 5.0], [1.0, 3.0, 6.0, 5.0]])
    s = unit_stats(h)
    # |h| <= 0.05 * 6: the two zeros; unit 3 is constant (ignores the input); units 1 and 2 are perfectly correlated
    assert s["sparsity"] == pytest.approx(2 / 12)
    assert s["ignoring_units"] == 1 and s["correlated_units"] == 2
    r01 = np.corrcoef([0, 0, 1], [1, 2, 3])[0, 1]
    assert s["mean_abs_corr"] == pytest.approx((abs(r01) * 2 + 1) / 3)  # mean over the 3 pairs of live units


def test_hidden_unit_health_warns_for_duplicated_units():
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight[1] = lin.weight[0] * 2  # unit 1 = 2 x unit 0 before the relu: perfectly correlated
        lin.bias[1] = lin.bias[0] * 2
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(4, 2))
    rows, warnings = hidden_unit_health(model, torch.randn(200, 3))
    assert rows[0]["units"] == 4 and rows[0]["correlated_units"] >= 2
    assert any("strongly correlated" in w for w in warnings)


def test_flops_count_multiply_adds_twice():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    assert count_flops(mlp, (10,)) == 2 * (10 * 5 + 5 * 2)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    assert count_flops(conv, (3, 8, 8)) == 2 * (3 * 9) * 4 * 64


def test_summary_has_flops_and_the_hidden_unit_table(tmp_path):
    from dlrecipe.train import train_in

    r = small_recipe(**{"train.epochs": 1})
    summary = train_in(tmp_path, r, load_data(r)).summary
    assert summary["flops_per_example"] == 2 * (4 * 16 + 16 * 3)
    assert summary["trainable_parameters"] == summary["parameters"]
    table = pd.read_csv(tmp_path / "hidden_units.csv")
    assert list(table.columns) == ["layer", "name", "units", "sparsity", "mean_abs_corr", "correlated_units",
                                   "ignoring_units"]
