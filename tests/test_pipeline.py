"""`dlrecipe run`: the chain sanity -> lr-find -> search -> report, the budget plan, stopping on a failed sanity."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dlrecipe.cli import app
from dlrecipe.errors import RecipeError, UserError
from dlrecipe.pipeline import (
    EPOCH_OVERHEAD,
    FOLDERS,
    MAX_SCALE_UP,
    MIN_COARSE_EPOCHS,
    MIN_FINE_EPOCHS,
    MIN_FINE_TRIALS,
    MIN_TRIALS,
    epoch_seconds_from,
    plan_search,
    run_recipe,
)

from .conftest import ROOT, ctrl_c_in_training, sigkill_after_trials, small_recipe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()
TINY_SEARCH = {"search.trials": 4, "search.coarse_epochs": 1, "search.fine_trials": 1, "search.fine_epochs": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def search_recipe(**values):
    """The recipe's [search] counts: 20 coarse trials x 3 epochs + 5 fine x 15 = 135 epochs."""
    return small_recipe(**{"search.trials": 20, "search.coarse_epochs": 3, "search.fine_trials": 5,
                           "search.fine_epochs": 15, **values})


# ---------------------------------------------------------------------------------------------------- the plan

def test_without_a_budget_the_plan_is_the_recipes_search():
    plan = plan_search(search_recipe(), None, 1.0)
    assert (plan.trials, plan.coarse_epochs, plan.fine_trials, plan.fine_epochs) == (20, 3, 5, 15)
    assert plan.epochs == 135 and plan.factor == 1.0


def test_a_quarter_of_the_time_halves_trials_and_epochs():
    plan = plan_search(search_recipe(), 135 * 0.25, 1.0)  # room for a quarter: sqrt(0.25) = 0.5 each
    assert (plan.trials, plan.coarse_epochs, plan.fine_trials, plan.fine_epochs) == (10, 1, 2, 7)
    assert plan.epochs == 10 * 1 + 2 * 7 <= 135 * 0.25
    assert plan.factor == pytest.approx(24 / 135)


def test_a_generous_budget_adds_trials_not_epochs():
    plan = plan_search(search_recipe(), 135 * 2.0, 1.0)
    assert (plan.trials, plan.coarse_epochs, plan.fine_trials, plan.fine_epochs) == (40, 3, 10, 15)
    huge = plan_search(search_recipe(), 1e9, 1.0)
    assert (huge.trials, huge.fine_trials) == (20 * MAX_SCALE_UP, 5 * MAX_SCALE_UP)


def test_a_tiny_budget_keeps_the_smallest_search_and_says_it_is_over():
    plan = plan_search(search_recipe(), 1.0, 1.0)
    assert (plan.trials, plan.coarse_epochs, plan.fine_trials, plan.fine_epochs) == (
        MIN_TRIALS, MIN_COARSE_EPOCHS, MIN_FINE_TRIALS, MIN_FINE_EPOCHS)
    assert "is over the 1 s left" in plan.note


def test_epoch_cost_comes_from_lr_finds_seconds_per_update():
    # 10 s for 500 updates of one seed: 0.02 s per update; 1000 examples in batches of 100: 10 updates per epoch
    assert epoch_seconds_from({"seconds": 10.0, "iterations": 500, "seeds": [0]}, 1000, 100) == pytest.approx(
        0.02 * 10 * EPOCH_OVERHEAD)
    assert epoch_seconds_from({"seconds": 10.0, "iterations": 500, "seeds": [0, 1]}, 1000, 100) == pytest.approx(
        0.01 * 10 * EPOCH_OVERHEAD)  # two seeds ran 1000 updates in those 10 s
    assert epoch_seconds_from({"seconds": 10.0}, 1000, 100) is None


# ---------------------------------------------------------------------------------------------------- the chain

def test_bad_budget_and_bad_space_fail_before_any_folder(tmp_path):
    with pytest.raises(UserError, match="--budget 0"):
        run_recipe(small_recipe(), runs_dir=tmp_path, budget_minutes=0)
    bad = small_recipe(**{"search.space": {"train.lr": {"log_uniform": [0, 1]}}})
    res = runner.invoke(app, ["run", str(ROOT / "recipes" / "digits_mlp.toml"), "--runs-dir", str(tmp_path),
                              "--set", 'search.space={"train.lr" = {log_uniform = [0, 1]}}'])
    assert res.exit_code == 2 and "low must be larger than 0" in res.output and "Traceback" not in res.output
    with pytest.raises(RecipeError, match="low must be larger than 0"):
        run_recipe(bad, runs_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_failed_sanity_check_stops_the_run_with_its_advice(tmp_path):
    broken = small_recipe(**{"model.init": "zeros", "model.hidden": [16, 16], **TINY_SEARCH})
    res = runner.invoke(app, ["run", "--runs-dir", str(tmp_path), "-q", *_recipe_file(tmp_path, broken)])
    assert res.exit_code == 1, res.output
    (run,) = [d for d in tmp_path.iterdir() if d.name.endswith("-run")]
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [FOLDERS["sanity"]]  # no lr-find, no search
    steps = pd.read_csv(run / "steps.csv")
    assert list(steps.step) == ["sanity", "report"] and steps.status.iloc[0] == "fail"
    assert steps.result.iloc[1].startswith("no training curves to diagnose")  # not "no alarm": nothing trained
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and "--force" in summary["reason"] and "FAIL" in summary["reason"]
    assert "stopped" in res.output and (run / "report.html").is_file()


def test_force_goes_on_after_a_failed_sanity_check(tmp_path):
    broken = small_recipe(**{"model.init": "zeros", "model.hidden": [16, 16], **TINY_SEARCH})
    result = run_recipe(broken, device="cpu", runs_dir=tmp_path, force=True, passes=1)
    assert [s["step"] for s in result.steps] == ["sanity", "lr-find", "search", "test", "report"]
    assert result.steps[0]["status"] == "fail" and result.summary["status"] == "completed"
    assert "went on because of --force" in result.summary["reason"]
    assert result.summary["best_epoch"] == result.summary["search"]["best_epoch"] >= 1  # compare's column


def test_budget_shrinks_the_search_and_records_the_plan(tmp_path, monkeypatch):
    import dlrecipe.pipeline as P

    measured, real = [], P.epoch_seconds_from

    def one_second(*args):  # measure as usual, then pretend an epoch costs 1 s: 135 epochs cannot fit in 30 s
        measured.append(real(*args))
        return 1.0

    monkeypatch.setattr(P, "epoch_seconds_from", one_second)
    result = run_recipe(search_recipe(**{"train.patience": 0}), device="cpu", runs_dir=tmp_path, budget_minutes=0.5,
                        passes=1)
    plan = result.summary["plan"]
    assert measured[0] > 0 and plan["epoch_seconds"] == 1.0 and 0 < plan["available_s"] < 30 - P.REPORT_RESERVE_S
    assert plan["planned_epochs"] < 135 and plan["trials"] >= MIN_TRIALS
    trials = pd.read_csv(result.run_dir / FOLDERS["search"] / "trials.csv")
    assert (trials.stage == "coarse").sum() == plan["trials"] and (trials.stage == "fine").sum() == plan["fine_trials"]
    assert trials[trials.stage == "coarse"].epochs_run.max() <= plan["coarse_epochs"]
    assert result.summary["seconds_vs_budget"] > 0


def _recipe_file(tmp_path, recipe) -> list[str]:
    path = tmp_path / f"{recipe.name}.toml"
    path.write_text(recipe.to_toml())
    return [str(path)]


# ---------------------------------------------------------------------------------------------------- acceptance

@pytest.mark.slow
def test_acceptance_digits_run_end_to_end_report_has_every_steps_table_and_figure(tmp_path):
    import matplotlib.image

    res = runner.invoke(app, ["run", str(ROOT / "recipes" / "digits_mlp.toml"), "--runs-dir", str(tmp_path), "-q",
                              "--passes", "1"])
    assert res.exit_code == 0, res.output
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_acc"] >= 0.97
    assert [s for s in summary["steps"]] == ["sanity", "lr-find", "search", "test", "report"]
    assert summary["search"]["best_params"]["train.lr"] > 0
    selected = f"3-search/trials/{summary['search']['selected_trial']}/model.pt"  # or an ensemble of the best trials
    assert summary["model"] in (selected, "ensemble.json") and (run / summary["model"]).is_file()
    lr_range = summary["lr_find"]["search_range"]  # the search used lr-find's range for the LR
    search = json.loads((run / FOLDERS["search"] / "search.json").read_text())
    assert search["space"]["train.lr"] == {"log_uniform": lr_range}
    md = (run / "report.md").read_text()
    assert "| step | status | result | seconds | diagnosis that triggered it | change | best validation |" in md
    for table in ("1-sanity/sanity.csv", "1-sanity/layers.csv", "1-sanity/overfit.csv", "2-lr-find/probes.csv",
                  "2-lr-find/range_test.csv", "3-search/trials.csv"):
        assert f"({table})</summary>" in md, table  # behind a collapsible block, titled in words
    for summary_of in ("1-sanity", "2-lr-find", "3-search", run.name):
        assert f"<summary>Summary: {summary_of} (summary.json" in md
    figures = ["1-sanity/overfit.png", "1-sanity/layers.png", "1-sanity/batch.png", "2-lr-find/lr_find.png",
               "3-search/search_params.png", "3-search/search_curves.png", "report_curves.png"]
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures)
    for fig in figures:
        path = run / fig
        assert f"]({fig})" in md, fig
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000, fig
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and float(np.std(pixels)) > 0.01, fig  # not blank
    assert "test acc" in res.output and "report.html" in res.output


def test_an_lr_find_without_a_good_probe_is_a_warning_and_the_search_goes_on(tmp_path, monkeypatch):
    import dataclasses

    import dlrecipe.lr_find as L

    real = L.lr_find
    monkeypatch.setattr(L, "lr_find", lambda *a, **k: dataclasses.replace(real(*a, **k), status="all_flat"))
    result = run_recipe(small_recipe(**TINY_SEARCH), device="cpu", runs_dir=tmp_path, passes=1)
    assert result.summary["status"] == "completed" and result.steps[1]["status"] == "all_flat"
    (warning,) = result.summary["warnings"]
    assert warning.startswith("lr-find: all_flat") and "uses its range" in warning


def test_ctrl_c_during_lr_find_then_run_resume_keeps_sanity_and_runs_the_rest(tmp_path, monkeypatch):
    from dlrecipe import lr_find as L
    from dlrecipe.errors import Interrupted

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(L, "probe", ctrl_c)
    with pytest.raises(Interrupted, match="during lr-find; the finished steps are kept: continue with dlrecipe "
                                          "run --resume"):
        run_recipe(small_recipe(**TINY_SEARCH), device="cpu", runs_dir=tmp_path, passes=1)
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    sanity_summary = (run / FOLDERS["sanity"] / "summary.json").read_text()
    assert json.loads(sanity_summary)["status"] in ("pass", "warn")
    assert json.loads((run / FOLDERS["lr-find"] / "summary.json").read_text())["status"] == "interrupted"
    steps = pd.read_csv(run / "steps.csv", keep_default_na=False)
    assert list(steps.step) == ["sanity", "lr-find"] and list(steps.status) == [steps.status[0], "interrupted"]

    monkeypatch.undo()  # what the message says to do next works
    res = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert (run / FOLDERS["sanity"] / "summary.json").read_text() == sanity_summary  # kept, not run again
    assert json.loads((run / FOLDERS["lr-find"] / "summary.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == sorted(FOLDERS.values())  # the stub removed
    steps = pd.read_csv(run / "steps.csv", keep_default_na=False)
    assert list(steps.step) == ["sanity", "lr-find", "search", "test", "report"]
    assert "interrupted" not in set(steps.status)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and [r["after"] for r in summary["resumed"]] == ["interrupted"]
    assert 0 < summary["test_acc"] <= 1 and (run / "report.html").stat().st_size > 0


def test_ctrl_c_during_the_search_then_run_resume_keeps_the_finished_trials(tmp_path, monkeypatch):
    from dlrecipe.errors import Interrupted
    from dlrecipe.pipeline import resume_run

    ctrl_c_in_training(monkeypatch, 2)  # while the second trial trains
    with pytest.raises(Interrupted, match="during search with 1 of 5 trials finished"):  # one trial at a time
        run_recipe(small_recipe(**{**TINY_SEARCH, "search.population": 1}), device="cpu", runs_dir=tmp_path, passes=1)
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    search_dir = run / FOLDERS["search"]
    assert summary["status"] == "interrupted" and f"dlrecipe run --resume {run}" in summary["reason"]
    inner = json.loads((search_dir / "summary.json").read_text())  # not the search's own --resume: the run's
    assert inner["status"] == "interrupted" and inner["reason"].endswith(f"dlrecipe run --resume {run}")
    steps = pd.read_csv(run / "steps.csv", keep_default_na=False)
    assert list(steps.step) == ["sanity", "lr-find", "search"] and list(steps.status)[2] == "interrupted"
    assert steps.folder.iloc[2] == FOLDERS["search"]
    before = pd.read_csv(search_dir / "trials.csv")
    first = before[before.state == "complete"]
    assert len(first) == 1
    lr_summary = (run / FOLDERS["lr-find"] / "summary.json").read_text()

    monkeypatch.undo()  # what the message says to do next works
    result = resume_run(run, device="cpu")
    assert result.summary["status"] == "completed" and result.exit_code == 0
    assert (run / FOLDERS["lr-find"] / "summary.json").read_text() == lr_summary  # kept, not run again
    after = pd.read_csv(search_dir / "trials.csv").set_index("number")
    assert after.loc[first.number.iloc[0], "seconds"] == pytest.approx(first.seconds.iloc[0])  # kept, not rerun
    assert (after.state == "complete").sum() == 5  # all 4 coarse + 1 fine slots
    steps = pd.read_csv(run / "steps.csv", keep_default_na=False)
    assert list(steps.step) == ["sanity", "lr-find", "search", "test", "report"]
    assert steps.status.iloc[2] == "completed" and result.report.curves
    assert (run / "report.html").stat().st_size > 0


def test_a_run_killed_in_its_first_step_can_be_resumed(tmp_path, monkeypatch):
    """Killed during sanity (here: any exception but Ctrl-C, which leaves no end written): the folder is still
    a run that --resume knows, listed as 'running or killed'; the resume runs every step."""
    from dlrecipe import sanity
    from dlrecipe.pipeline import resume_run
    from dlrecipe.runs import list_runs

    def killed(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(sanity, "run_sanity", killed)
    with pytest.raises(SystemExit):
        run_recipe(small_recipe(**TINY_SEARCH), device="cpu", runs_dir=tmp_path, passes=1)
    (run,) = tmp_path.iterdir()
    assert [r["status"] for r in list_runs(tmp_path)] == ["running or killed"]
    monkeypatch.undo()
    result = resume_run(run, device="cpu")
    assert result.summary["status"] == "completed" and [r["step"] for r in result.steps] == [
        "sanity", "lr-find", "search", "test", "report"]
    assert [r["after"] for r in result.summary["resumed"]] == ["killed"]


def test_a_run_killed_during_its_search_resumes_with_every_slot_run_once(tmp_path):
    """SIGKILL leaves the parent summary at status running and a trial running: --resume keeps sanity, lr-find and
    the finished trials, reruns the trial left running, and completes the run."""
    from .test_search import FINISHED, slot_counts, write_recipe

    recipe = write_recipe(tmp_path / "r.toml", trials=8, fine=2, epochs=2, batch_size=16, source="digits")
    runs = tmp_path / "runs"
    before = sigkill_after_trials(["run", str(recipe), "--runs-dir", str(runs), "-q", "--passes", "1"], runs,
                                  f"*-s-run/{FOLDERS['search']}/trials.csv", complete=2)
    run = next(runs.glob("*-s-run"))
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    lr_summary = (run / FOLDERS["lr-find"] / "summary.json").read_text()

    res = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and [r["after"] for r in summary["resumed"]] == ["killed"]
    assert (run / FOLDERS["lr-find"] / "summary.json").read_text() == lr_summary
    after = pd.read_csv(run / FOLDERS["search"] / "trials.csv")
    kept = after.set_index("number").loc[before.number]
    assert (kept.state == "complete").all() and kept.seconds.tolist() == pytest.approx(before.seconds.tolist())
    counts = slot_counts(after)
    assert (counts == 1).all() and len(counts) == 10 and after.state.isin(FINISHED).all()
    steps = pd.read_csv(run / "steps.csv", keep_default_na=False)
    assert list(steps.step) == ["sanity", "lr-find", "search", "test", "report"]


@pytest.mark.parametrize("args, message", [
    (["run"], "run needs a RECIPE file, or --resume RUN"),
    (["run", "--resume", "x", "--budget", "1"], "--resume continues the run with its own recipe, budget"),
])
def test_run_needs_a_recipe_or_resume_alone(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("state, message", [("completed", "this run is completed already, nothing to resume"),
                                            (None, "not a dlrecipe run folder")])
def test_run_resume_refuses_a_finished_run_or_another_folder(tmp_path, state, message):
    run = tmp_path / "r"
    run.mkdir()
    if state:
        (run / "steps.csv").write_text("step,status,result,seconds,folder\n")
        (run / "recipe.toml").write_text('name = "t"\n')
        (run / "summary.json").write_text(json.dumps({"command": "run", "status": state}))
    res = runner.invoke(app, ["run", "--resume", str(run)])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------------------------------------------- passes (step 7)

PASS_RECIPE = {**TINY_SEARCH, "data.split": [0.6, 0.25, 0.15]}  # test (23) and validation (37) sizes differ


def _always(change_overrides: dict, trigger: str = "train_longer", text: str = "crafted change"):
    """A next_change that always asks for the same change (the crafted diagnosis of these tests)."""
    from dlrecipe.passes import Change

    def next_change(findings, recipe, space, best, **kw):
        return Change(trigger, {"search.space": space, **change_overrides}, [text])

    return next_change


def test_a_pass_that_does_not_improve_stops_the_loop(tmp_path, monkeypatch):
    import dlrecipe.pipeline as P

    worse = {"search.space": {"train.lr": {"log_uniform": [1e-7, 1e-6]}}}  # an LR far too low: no better pass
    monkeypatch.setattr(P, "next_change", _always(worse, "lr_too_high", "LR range 1e-7..1e-6"))
    result = run_recipe(small_recipe(**PASS_RECIPE), device="cpu", runs_dir=tmp_path, passes=4)
    steps = [s["step"] for s in result.steps]
    assert steps == ["sanity", "lr-find", "search", "search 2", "test", "report"]  # not search 3 and 4
    passes = result.summary["passes"]
    assert passes[1]["best_val"] > passes[0]["best_val"] and "pass 2 did not improve val loss" in \
        result.summary["passes_stop"]
    assert result.summary["search"]["selected_trial"] == json.loads(
        (result.run_dir / FOLDERS["search"] / "summary.json").read_text())["selected_trial"]  # pass 1 is the best
    row = pd.read_csv(result.run_dir / "steps.csv", keep_default_na=False).set_index("step").loc["search 2"]
    assert row.trigger == "lr_too_high" and row.change == "LR range 1e-7..1e-6" and row.best_val.startswith("val_loss")


def test_the_test_split_is_read_once_whatever_the_number_of_passes(tmp_path, monkeypatch):
    import dlrecipe.data as D
    import dlrecipe.loop as L
    import dlrecipe.pipeline as P

    monkeypatch.setattr(P, "next_change", _always({"search.fine_epochs": 3}))
    tests, reads = [], []
    real_load, real_eval, real_proba = D.load_data, L.evaluate, L.predict_proba

    def load_data(*a, **k):
        data = real_load(*a, **k)
        if len(data.x_test):
            tests.append(data.x_test)
        return data

    def seen(x):
        if any(len(x) == len(t) and x.data_ptr() == t.data_ptr() for t in tests):
            reads.append(len(x))

    def evaluate(model, x, *a, **k):
        seen(x)
        return real_eval(model, x, *a, **k)

    def predict_proba(model, x, *a, **k):
        seen(x)
        return real_proba(model, x, *a, **k)

    monkeypatch.setattr(D, "load_data", load_data)
    monkeypatch.setattr(L, "evaluate", evaluate)
    monkeypatch.setattr(L, "predict_proba", predict_proba)
    result = run_recipe(small_recipe(**PASS_RECIPE), device="cpu", runs_dir=tmp_path, passes=3)
    assert [s["step"] for s in result.steps].count("search 3") == 1  # three passes ran
    members = len(result.summary["selected"]["members"])
    assert reads == [23] * members  # the test split: once, by the selected model (each member of an ensemble)
    for k in (1, 2, 3):
        ss = json.loads((result.run_dir / P.pass_folder(k) / "summary.json").read_text())
        assert "test_acc" not in ss and "test_loss" not in ss  # no pass saw it
    assert 0 <= result.summary["test_acc"] <= 1 and result.summary["test_acc"] == result.summary["selected"]["test_acc"]


def test_ctrl_c_between_passes_then_resume_runs_the_next_pass(tmp_path, monkeypatch):
    import dlrecipe.pipeline as P
    import dlrecipe.search as S
    from dlrecipe.errors import Interrupted
    from dlrecipe.pipeline import resume_run

    monkeypatch.setattr(P, "next_change", _always({"search.fine_epochs": 3}))
    real, calls = S.search, {"n": 0}

    def search(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(S, "search", search)
    with pytest.raises(Interrupted, match="during search 2"):
        run_recipe(small_recipe(**PASS_RECIPE), device="cpu", runs_dir=tmp_path, passes=2)
    (run,) = tmp_path.iterdir()
    first = (run / FOLDERS["search"] / "trials.csv").read_text()
    result = resume_run(run, device="cpu")
    assert [s["step"] for s in result.steps] == ["sanity", "lr-find", "search", "search 2", "test", "report"]
    assert (run / FOLDERS["search"] / "trials.csv").read_text() == first  # pass 1 kept, not run again
    assert result.summary["status"] == "completed" and json.loads(
        (run / "3-search-pass2" / "search.json").read_text())["recipe"]["search.fine_epochs"] == 3


def test_the_selection_is_an_ensemble_only_when_it_beats_the_best_single_model_on_validation(tmp_path):
    import torch

    from dlrecipe.data import load_data
    from dlrecipe.loop import predict_proba
    from dlrecipe.selection import build, load_selected, outputs, pass_candidates, select

    result = run_recipe(small_recipe(**{**PASS_RECIPE, "search.fine_trials": 3}), device="cpu", runs_dir=tmp_path,
                        passes=1)
    recipe = small_recipe(**PASS_RECIPE)
    data = load_data(recipe)
    cands = pass_candidates(result.run_dir / FOLDERS["search"], recipe, "pass 1")
    assert len(cands) == 3 and all(c.model.is_file() for c in cands)
    sel = select(cands, data, "classification", "val_loss", "cpu")
    ranked = sorted(cands, key=lambda c: c.val["loss"])
    assert sel.best is ranked[0]
    members = [build(c, data, "cpu")[0] for c in sel.ensemble_members]
    p = torch.stack([predict_proba(m, data.x_val) for m in members]).mean(0)  # averaged probabilities, by hand
    assert sel.ensemble_val["loss"] == pytest.approx(float(torch.nn.functional.nll_loss(p.log(), data.y_val)),
                                                     rel=1e-5)
    assert (sel.kind == "ensemble") == (sel.ensemble_val["loss"] < sel.single_val["loss"])
    saved = result.summary["selected"]
    models, combine = load_selected(result.run_dir, data)
    assert len(models) == len(saved["members"]) and combine in ("single", "mean_probabilities")
    if saved["kind"] == "ensemble":
        assert json.loads((result.run_dir / "ensemble.json").read_text())["members"] == saved["members"]
    mine = outputs(models, data.x_test, "classification")  # what `predict` gets: the saved model reproduces its test
    assert float((mine.argmax(1) == data.y_test).float().mean()) == pytest.approx(result.summary["test_acc"])
