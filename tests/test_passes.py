"""Step 7, "go back to step 5": a crafted diagnosis leads to the documented change for the next search pass."""
from __future__ import annotations

import math

import pytest

from dlrecipe.diagnose import Finding
from dlrecipe.passes import (
    DROPOUT_STEP,
    EPOCH_GROWTH,
    LR_SHIFT,
    MAX_FINE_EPOCHS,
    WD_SHIFT,
    next_change,
    why_not,
)

from .conftest import small_recipe

SPACE = {"train.lr": {"log_uniform": [0.001, 0.1]}, "train.weight_decay": {"choice": [0.0, 1e-5, 1e-4]}}


def found(*codes: str) -> list[Finding]:
    return [Finding(c, f"{c} seen", f"{c} advice") for c in codes]


def change(codes, recipe=None, space=SPACE, best=None, n_train=1000, **kw):
    recipe = recipe or small_recipe(**{"model.dropout": 0.1, "search.fine_epochs": 15})
    return next_change(found(*codes), recipe, space, best or {"train.lr": 0.01}, n_train=n_train, **kw)


def test_overfitting_moves_weight_decay_up_searches_dropout_higher_and_adds_mixup():
    c = change(["overfitting"])
    space = c.overrides["search.space"]
    assert space["train.weight_decay"] == {"choice": [1e-5, 1e-4, 1e-3]}  # 0 dropped, a decade up
    assert space["model.dropout"] == {"uniform": [0.1, 0.1 + DROPOUT_STEP]}  # searched above the recipe's 0.1
    assert c.overrides["data.augment"] == ["mixup"]
    assert c.overrides["search.fine_epochs"] == 15 * EPOCH_GROWTH  # mixup's blends are learnt more slowly
    assert space["train.lr"] == SPACE["train.lr"] and "data.batch_size" not in c.overrides  # LR left alone
    assert c.trigger == "overfitting" and "mixup added" in c.text


def test_overfitting_with_mixup_already_and_a_searched_weight_decay_range():
    recipe = small_recipe(**{"data.augment": ["mixup"], "search.fine_epochs": 15})
    c = change(["overfitting"], recipe=recipe, space={**SPACE, "train.weight_decay": {"log_uniform": [1e-5, 1e-3]}})
    assert c.overrides["search.space"]["train.weight_decay"] == {"log_uniform": [1e-4, 1e-2]}
    assert "data.augment" not in c.overrides and "search.fine_epochs" not in c.overrides
    assert "model.dropout" in c.overrides["search.space"]  # recipe dropout 0: searched over [0, 0.3]


def test_regression_gets_no_mixup():
    recipe = small_recipe(**{"data.source": "diabetes", "task": "regression", "model.dropout": 0.2})
    c = change(["overfitting"], recipe=recipe)
    assert "data.augment" not in c.overrides and c.overrides["search.space"]["model.dropout"]["uniform"][0] == 0.2


@pytest.mark.parametrize("code", ["underfitting", "lr_too_low"])
def test_underfitting_and_lr_too_low_free_the_model_raise_the_lr_and_train_longer(code):
    c = change([code], recipe=small_recipe(**{"model.dropout": 0.4, "search.fine_epochs": 15}))
    space = c.overrides["search.space"]
    low, high = space["train.lr"]["log_uniform"]
    assert low == pytest.approx(0.001 * LR_SHIFT, rel=1e-3) and high == pytest.approx(0.1 * LR_SHIFT, rel=1e-3)
    assert space["train.weight_decay"] == {"choice": [0.0, 1e-6, 1e-5]}  # a decade down, 0 kept
    assert space["model.dropout"] == {"uniform": [pytest.approx(0.4 - DROPOUT_STEP), 0.4]}
    assert c.overrides["search.fine_epochs"] == 30 and "data.augment" not in c.overrides


def test_train_longer_only_adds_fine_epochs_up_to_the_cap():
    c = change(["train_longer"])
    assert c.overrides["search.fine_epochs"] == 30 and c.overrides["search.space"] == SPACE
    assert c.text == "fine epochs 15 -> 30"
    near = change(["train_longer"], recipe=small_recipe(**{"search.fine_epochs": MAX_FINE_EPOCHS - 10}))
    assert near.overrides["search.fine_epochs"] == MAX_FINE_EPOCHS
    assert change(["train_longer"], recipe=small_recipe(**{"search.fine_epochs": MAX_FINE_EPOCHS})) is None


@pytest.mark.parametrize("code", ["lr_too_high", "noisy_val", "diverged"])
def test_lr_too_high_and_noisy_validation_lower_the_lr_range_and_double_the_batch(code):
    c = change([code], recipe=small_recipe(**{"data.batch_size": 32}))
    low, high = c.overrides["search.space"]["train.lr"]["log_uniform"]
    assert low == pytest.approx(0.001 / LR_SHIFT, rel=1e-3) and high == pytest.approx(0.1 / LR_SHIFT, rel=1e-3)
    assert math.log10(high / low) == pytest.approx(2, abs=1e-3)  # the range keeps its two decades
    assert c.overrides["data.batch_size"] == 64
    assert "search.fine_epochs" not in c.overrides
    assert c.overrides["search.space"]["train.weight_decay"] == SPACE["train.weight_decay"]


def test_the_batch_never_grows_past_an_eighth_of_the_training_set():
    c = change(["noisy_val"], recipe=small_recipe(**{"data.batch_size": 64}), n_train=600)
    assert c.overrides["data.batch_size"] == 75  # 600 / 8, not 128


def test_the_first_code_in_order_decides_and_train_longer_adds_its_epochs():
    c = change(["noisy_val", "overfitting", "train_longer"])  # overfitting comes before noisy_val
    assert c.trigger == "overfitting, train_longer" and "data.batch_size" not in c.overrides
    c = change(["noisy_val", "train_longer"])
    assert c.trigger == "train_longer" and c.overrides["search.fine_epochs"] == 30
    assert c.overrides["search.space"]["train.lr"] == SPACE["train.lr"]


def test_no_actionable_finding_means_no_next_pass():
    assert change([]) is None and change(["early_best"]) is None
    assert why_not([]) == "no alarm: the curves look healthy"
    assert "early_best (early stopping already keeps the best snapshot)" in why_not(found("early_best"))


def test_the_architecture_is_never_changed():
    for codes in (["overfitting"], ["underfitting"], ["noisy_val"], ["train_longer"]):
        c = change(codes)
        keys = set(c.overrides) | set(c.overrides["search.space"])
        assert not {k for k in keys if k.startswith("model.") and k != "model.dropout"}, codes


def test_a_python_model_keeps_its_own_dropout():
    recipe = small_recipe(**{"model.kind": "python", "model.factory": "m:f"})
    c = change(["overfitting"], recipe=recipe)
    assert "model.dropout" not in c.overrides["search.space"]


def test_an_unsearched_weight_decay_is_searched_upwards_from_the_recipes_value():
    c = change(["overfitting"], space={"train.lr": SPACE["train.lr"]},
               recipe=small_recipe(**{"train.weight_decay": 1e-4}))
    assert c.overrides["search.space"]["train.weight_decay"] == {"choice": [1e-4, 1e-4 * WD_SHIFT, 1e-2]}
