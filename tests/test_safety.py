"""Recipes are shared files: they cannot choose where dlrecipe writes; bad values and files are refused in one line."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dlrecipe.cli import app
from dlrecipe.errors import RecipeError
from dlrecipe.recipe import load, validate
from dlrecipe.runs import list_runs, slug


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name, want", [("../../escaped", "escaped"), ("a/b\\c", "a-b-c"), ("..", "run"),
                                        ("ok_name-1.2", "ok_name-1.2"), ("x..y", "x.y"), ("", "run")])
def test_a_run_name_becomes_a_safe_folder_name(name, want):
    assert slug(name) == want


def test_a_traversing_name_stays_inside_the_runs_folder(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "../../escaped"\n[data]\nsource = "iris"\n[train]\nepochs = 1\n')
    res = _cli("train", recipe, "--runs-dir", tmp_path / "runs", "-q")
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-escaped-train") and run.resolve().parent == (tmp_path / "runs").resolve()
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(RecipeError, match=rf"train.lr = {value} is not allowed: expected a finite number"):
        validate({"data.source": "iris", "train.lr": float(value)})


def test_a_binary_recipe_file_is_one_line(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(RecipeError, match="not a text file"):
        load(path)


def test_runs_dir_that_is_a_file_and_an_unreadable_summary(tmp_path):
    (tmp_path / "file").write_text("x")
    res = _cli("runs", "--runs-dir", tmp_path / "file")
    assert res.exit_code == 2 and "is a file: expected a folder" in res.output
    runs = tmp_path / "runs"
    (runs / "20260101-000000-a-train").mkdir(parents=True)
    (runs / "20260101-000000-a-train" / "summary.json").write_text('{"status": "compl')  # truncated
    (runs / "20260101-000001-b-train").mkdir()
    (runs / "20260101-000001-b-train" / "summary.json").write_text(json.dumps({"status": "completed"}))
    statuses = {r["run"]: r["status"] for r in list_runs(runs)}
    assert statuses == {"20260101-000000-a-train": "unreadable", "20260101-000001-b-train": "completed"}
    res = _cli("runs", "--runs-dir", runs)
    assert res.exit_code == 0 and "unreadable" in res.output
