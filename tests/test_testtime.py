"""Monte Carlo dropout and test-time augmentation: T = 1 without dropout is plain evaluation, predictions average
probabilities (not logits), the TTA views, and predict's uncertainty column."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from dlrecipe.data import load_data
from dlrecipe.loop import evaluate, loss_function, predict_proba
from dlrecipe.models import build_model
from dlrecipe.testtime import averaged_outputs, evaluate_averaged, mc_mode, tta_views
from dlrecipe.train import train_in

from .conftest import small_recipe


def test_one_pass_without_dropout_equals_plain_evaluation():
    r = small_recipe()
    data = load_data(r)
    model = build_model(r, data)
    mean, spread = averaged_outputs(model, data.x_test, "classification", mc_dropout=1)
    assert torch.equal(mean, predict_proba(model, data.x_test)) and spread is None
    plain = evaluate(model, data.x_test, data.y_test, "classification", loss_function("classification", {}))
    averaged = evaluate_averaged(model, data.x_test, data.y_test, "classification",
                                 loss_function("classification", {}), {"mc_dropout": 1})
    assert averaged["acc"] == pytest.approx(plain["acc"]) and averaged["loss"] == pytest.approx(plain["loss"], rel=1e-5)


class _Flip(nn.Module):
    """Logits (10, 0) or (0, 1) at random: the mean of probabilities and the softmax of mean logits differ."""

    def forward(self, x):
        coin = torch.rand(len(x)) < 0.5
        return torch.where(coin[:, None], torch.tensor([10.0, 0.0]), torch.tensor([0.0, 1.0]))


def test_mc_dropout_averages_probabilities_not_logits():
    model = nn.Sequential(nn.Dropout(0.5), _Flip())
    x = torch.zeros(4, 3)
    mean, _ = averaged_outputs(model, x, "classification", mc_dropout=50, seed=3)
    torch.manual_seed(0)
    # the same 50 draws per example, replayed: average their softmaxes by hand
    with torch.random.fork_rng():
        torch.manual_seed(3)
        with mc_mode(model, True):
            passes = torch.stack([model(x) for _ in range(50)])  # (T, B, 2) logits
    assert torch.allclose(mean, passes.softmax(-1).mean(0), atol=1e-6)
    assert not torch.allclose(mean, passes.mean(0).softmax(-1), atol=1e-3)


def test_mc_mode_turns_on_dropout_only_and_restores_modes():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    model.train()
    with mc_mode(model, True):
        assert model[2].training and not model[1].training and not model.training
    assert all(m.training for m in model.modules())


def test_tta_views_are_flips_and_the_five_crops():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    views = tta_views(x, ["hflip", "crops"], padding=1)
    assert len(views) == 10
    assert torch.equal(views[0], x) and torch.equal(views[5], x.flip(-1))
    assert torch.equal(views[1][:, :, 1:, 1:], x[:, :, :3, :3])  # top-left corner crop: shifted by the padding
    assert float(views[1][:, :, 0].abs().sum()) == 0             # ... with the zero padding coming in


def test_train_reports_both_and_predictions_carry_uncertainty(tmp_path):
    r = small_recipe(**{"model.dropout": 0.3, "test.mc_dropout": 8, "train.epochs": 3})
    summary = train_in(tmp_path, r, load_data(r)).summary
    assert summary["test_averaging"] == "mc_dropout x8"
    assert {"test_acc", "test_acc_averaged", "test_loss_averaged"} <= set(summary)
    table = pd.read_csv(tmp_path / "test_predictions.csv")
    assert "uncertainty" in table and (table["uncertainty"] >= 0).all() and table["uncertainty"].max() > 0
    probs = table[[c for c in table if c.startswith("prob_")]].sum(axis=1)
    assert probs.to_numpy() == pytest.approx(1.0, abs=1e-5)
