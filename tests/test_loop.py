"""The training loop: reproducibility, early stopping with the best snapshot, LR halving, divergence."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from dlrecipe.data import load_data
from dlrecipe.loop import evaluate, fit, loss_function
from dlrecipe.models import build_model
from dlrecipe.train import train_in

from .conftest import small_recipe


def _fit(recipe, **kw):
    data = load_data(recipe)
    model = build_model(recipe, data)
    result = fit(model, data, recipe.section("train"), seed=recipe["seed"],
                 batch_size=recipe["data.batch_size"], **kw)
    return model, data, result


def test_same_seed_gives_identical_metrics_csv(tmp_path):
    r = small_recipe(**{"model.dropout": 0.2, "train.epochs": 4})
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        train_in(tmp_path / name, r, load_data(r))
    a, b = (pd.read_csv(tmp_path / n / "metrics.csv").drop(columns="seconds") for n in ("a", "b"))
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 4
    (tmp_path / "c").mkdir()
    c = pd.read_csv(train_in(tmp_path / "c", r, load_data(r), seed=1).run_dir / "metrics.csv")
    assert not c["train_loss"].equals(a["train_loss"])  # another seed, other numbers


def test_early_stopping_restores_the_best_epochs_weights():
    # lr far too high for adam on iris: validation gets worse after a while, so the best epoch is not the last
    r = small_recipe(**{"train.optimizer": "adam", "train.lr": 0.05, "train.epochs": 40, "train.patience": 3,
                        "train.lr_halving": 0, "model.hidden": [64]})
    snapshots = {}

    data = load_data(r)
    model = build_model(r, data)

    def keep(row):
        snapshots[row["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, data, r.section("train"), on_epoch=keep, batch_size=16)
    assert result.status == "early_stopped"
    losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.best_epoch < len(result.history)  # stopped `patience` epochs after the best one
    assert len(result.history) == result.best_epoch + 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[result.best_epoch][k])
    val = evaluate(model, data.x_val, data.y_val, "classification", loss_function("classification", {}))
    assert math.isclose(val["loss"], min(losses), rel_tol=1e-6)


def test_lr_halving_on_a_forced_plateau(monkeypatch):
    from dlrecipe import loop

    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {"loss": 1.0, "acc": 0.5})  # never improves
    r = small_recipe(**{"train.lr": 0.1, "train.epochs": 4, "train.patience": 0, "train.lr_halving": 1})
    _, _, result = _fit(r)
    assert [row["lr"] for row in result.history] == [0.1, 0.1, 0.05, 0.025]
    r2 = r.with_values({"train.lr_halving": 2})
    _, _, result = _fit(r2)
    assert [row["lr"] for row in result.history] == [0.1, 0.1, 0.1, 0.05]


def test_patience_stops_after_that_many_epochs_without_improvement(monkeypatch):
    from dlrecipe import loop

    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {"loss": 1.0, "acc": 0.5})
    _, _, result = _fit(small_recipe(**{"train.epochs": 50, "train.patience": 3}))
    assert result.status == "early_stopped" and len(result.history) == 4 and result.best_epoch == 1


def test_nan_loss_ends_the_run_as_diverged(tmp_path):
    r = small_recipe(**{"train.lr": 1e6, "train.epochs": 5, "model.hidden": [32, 32]})
    data = load_data(r)
    result = train_in(tmp_path, r, data)
    assert result.summary["status"] == "diverged"
    assert "NaN/Inf" in result.summary["reason"] and "lower the LR" in result.summary["reason"]
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert len(rows) < 5 and not math.isfinite(rows["train_loss"].iloc[-1])


def test_monitor_val_acc_picks_the_epoch_with_the_best_accuracy():
    r = small_recipe(**{"train.monitor": "val_acc", "train.epochs": 6, "train.patience": 0})
    _, _, result = _fit(r)
    accs = [row["val_acc"] for row in result.history]
    assert result.best["val_acc"] == max(accs) and result.best_epoch == 1 + accs.index(max(accs))


def _ctrl_c_at(epoch: int, step: int):
    """An on_step callback that raises KeyboardInterrupt at the given minibatch of the given epoch (1-based)."""
    seen = {"steps": 0}

    def on_step(n):
        seen["steps"] += 1
        if seen["steps"] == (epoch - 1) * STEPS_PER_EPOCH + step:
            raise KeyboardInterrupt

    return on_step


STEPS_PER_EPOCH = 7  # iris: 105 training examples, batch 16


def test_ctrl_c_ends_an_interruptible_fit_with_the_best_snapshot_restored():
    r = small_recipe(**{"train.epochs": 20, "train.patience": 0, "train.optimizer": "adam", "train.lr": 0.05,
                        "model.hidden": [64]})
    data = load_data(r)
    assert math.ceil(len(data.x_train) / r["data.batch_size"]) == STEPS_PER_EPOCH
    model = build_model(r, data)
    snapshots = {}

    def keep(row):
        snapshots[row["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, data, r.section("train"), on_epoch=keep, on_step=_ctrl_c_at(6, 3), batch_size=16,
                 interruptible=True)
    assert result.status == "interrupted" and len(result.history) == 5  # the cut epoch is not a row
    assert "after 5 epochs" in result.reason and f"epoch {result.best_epoch}" in result.reason
    losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    for k, v in model.state_dict().items():  # not the half-trained weights of epoch 6
        assert torch.equal(v, snapshots[result.best_epoch][k])


def test_ctrl_c_propagates_from_a_fit_that_is_not_interruptible():
    with pytest.raises(KeyboardInterrupt):
        _fit(small_recipe(**{"train.epochs": 5}), on_step=_ctrl_c_at(2, 1))


def test_caller_can_stop_training():
    _, _, result = _fit(small_recipe(**{"train.epochs": 10}), on_epoch=lambda row: row["epoch"] == 2)
    assert result.status == "stopped" and len(result.history) == 2


def test_schedules_set_the_logged_lr():
    _, _, result = _fit(small_recipe(**{"train.schedule": "exponential", "train.epochs": 5, "train.patience": 0}))
    lrs = [row["lr"] for row in result.history]
    assert math.isclose(lrs[-1], 0.05 / 100, rel_tol=1e-9)  # lecture 002: ~100x smaller by the end
    _, _, result = _fit(small_recipe(**{"train.schedule": "constant", "train.epochs": 4, "train.patience": 0}))
    assert {row["lr"] for row in result.history} == {0.05}


def test_regression_metrics_have_no_accuracy(tmp_path):
    from dlrecipe.recipe import validate

    r = validate({"data.source": "diabetes", "task": "regression", "train.epochs": 3, "model.hidden": [8],
                  "train.loss": "huber"})
    result = train_in(tmp_path, r, load_data(r))
    cols = list(pd.read_csv(tmp_path / "metrics.csv").columns)
    assert cols == ["epoch", "lr", "train_loss", "val_loss", "seconds"]
    assert "test_loss" in result.summary and "test_acc" not in result.summary


def test_l1_penalty_and_grad_clip_and_augmentation_run():
    # mixup + jitter on tabular data, L1 and clipping: the paths run and the model still learns iris
    r = small_recipe(**{"train.l1": 1e-4, "train.grad_clip": 1.0, "data.augment": ["mixup", "jitter"],
                        "train.epochs": 15, "train.patience": 0})
    _, _, result = _fit(r, augment=["mixup", "jitter"])
    assert result.best["val_acc"] > 0.8


def test_mixup_training_accuracy_weights_both_labels_by_lam():
    from dlrecipe.loop import _train_accuracy

    clean = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # predicts 0, 1
    blended = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])  # predicts 2, 0
    y_a = [torch.tensor([0, 0]), torch.tensor([2, 1])]
    y_b = [y_a[0], torch.tensor([1, 0])]  # a clean batch's second labels are its first ones
    # batch 1 (clean, lam 1): 1 hit of 2; batch 2 (mixup, lam 0.7): 0.7 * hits(y_a)=1 + 0.3 * hits(y_b)=1 -> 1.0
    assert _train_accuracy([clean, blended], y_a, y_b, [1.0, 0.7]) == pytest.approx((1 + 0.7 + 0.3) / 4)
    y_b_miss = [y_a[0], torch.tensor([1, 1])]  # hits(y_b) = 0: 0.7 * 1
    assert _train_accuracy([clean, blended], y_a, y_b_miss, [1.0, 0.7]) == pytest.approx((1 + 0.7) / 4)
    assert _train_accuracy([clean, blended], y_a, y_a, [1.0, 1.0]) == pytest.approx(2 / 4)  # no mixup: plain
