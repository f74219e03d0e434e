"""Recipe loading, --set overrides and validation errors (one line naming key, value and what is allowed)."""
from __future__ import annotations

import pytest

from dlrecipe.errors import RecipeError
from dlrecipe.recipe import SCHEMA, load, parse_override, validate

from .conftest import RECIPES, ROOT


def test_every_shipped_recipe_validates(table_csv):
    from .conftest import recipe_overrides

    assert len(RECIPES) >= 6
    for path in RECIPES:
        r = load(path, recipe_overrides(path, table_csv))
        assert r.name == path.stem  # recipes are named after their file


def test_defaults_fill_every_schema_key():
    r = validate({"data.source": "iris"})
    assert set(SCHEMA) <= set(r.values)
    assert r["train.patience"] == 5 and r["data.split"] == [0.7, 0.15, 0.15]


def test_overrides_are_toml_and_bare_words_are_strings():
    assert parse_override("train.lr=0.1") == ("train.lr", 0.1)
    assert parse_override("model.hidden=[64, 64]") == ("model.hidden", [64, 64])
    assert parse_override("model.activation=tanh") == ("model.activation", "tanh")
    assert parse_override("data.source='x.csv'") == ("data.source", "x.csv")
    r = load(ROOT / "recipes/digits_mlp.toml", ["train.lr=0.2", "model.hidden=[8]", "model.activation=tanh"])
    assert (r["train.lr"], r["model.hidden"], r["model.activation"]) == (0.2, [8], "tanh")


def test_int_is_accepted_for_float_keys():
    assert validate({"data.source": "iris", "train.lr": 1})["train.lr"] == 1.0


@pytest.mark.parametrize("flat, words", [
    ({"model.activaton": "relu"}, ["unknown key model.activaton", "did you mean 'model.activation'"]),
    ({"model.activation": "rleu"}, ["model.activation = 'rleu'", "did you mean 'relu'", "Allowed:", "selu"]),
    ({"model.init": "xavier"}, ["model.init = 'xavier'", "xavier_normal"]),
    ({"train.optimizer": "adamm"}, ["did you mean 'adam'"]),
    ({"train.lr": -0.1}, ["train.lr = -0.1", "out of range", "> 0"]),
    ({"train.lr": "fast"}, ["train.lr = 'fast'", "expected a number"]),
    ({"train.epochs": 2.5}, ["train.epochs = 2.5", "expected an integer"]),
    ({"model.dropout": 1.0}, ["model.dropout = 1.0", "< 1"]),
    ({"model.hidden": [64, "x"]}, ["model.hidden[1]", "expected an integer"]),
    ({"data.split": [0.5, 0.5, 0.5]}, ["data.split", "summing to 1"]),
    ({"data.augment": ["flip"]}, ["data.augment = 'flip'", "hflip"]),
    ({"traim.lr": 0.1}, ["unknown table [traim]", "did you mean 'train'"]),
    ({"data.source": "digitz"}, ["data.source = 'digitz'", "no such file", "digits"]),
    ({"task": "regression"}, ["does not fit data.source = 'iris'", "classification"]),
    ({"train.loss": "mse"}, ["train.loss = 'mse' does not fit task = 'classification'"]),
    ({"model.kind": "python"}, ["model.factory", "package.module:function"]),
])
def test_bad_values_are_refused_in_one_line(flat, words):
    with pytest.raises(RecipeError) as e:
        validate({"data.source": "iris", **flat})
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_regression_keys_are_checked_against_the_task():
    with pytest.raises(RecipeError, match="val_acc"):
        validate({"data.source": "diabetes", "task": "regression", "train.monitor": "val_acc"})
    r = validate({"data.source": "diabetes", "task": "regression", "train.loss": "huber"})
    assert r["train.loss"] == "huber"


def test_python_kind_passes_extra_model_keys():
    r = validate({"data.source": "iris", "model.kind": "python", "model.factory": "m:f", "model.width": 7})
    assert r.section("model")["width"] == 7
    with pytest.raises(RecipeError, match="unknown key model.width"):
        validate({"data.source": "iris", "model.width": 7})


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load(bad)


def test_resolved_recipe_round_trips(tmp_path):
    r = load(ROOT / "recipes/digits_mlp.toml", ["train.lr=0.3"])
    out = tmp_path / "resolved.toml"
    out.write_text(r.to_toml())
    again = load(out)
    assert again.values == r.values


def test_relative_data_path_falls_back_to_the_recipe_folder(tmp_path, monkeypatch):
    from .conftest import write_table_csv

    write_table_csv(tmp_path / "t.csv")
    (tmp_path / "r.toml").write_text('[data]\nsource = "t.csv"\ntarget = "label"\n')
    monkeypatch.chdir(ROOT)  # t.csv is not in the current folder, but beside the recipe
    assert load(tmp_path / "r.toml")["data.source"] == "t.csv"
