"""dlrecipe search: space validation, narrowing, divergence, SIGKILL + resume, --jobs, and two workers on PostgreSQL."""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from dlrecipe.cli import app
from dlrecipe.errors import RecipeError, UserError
from dlrecipe.search import Dist, edge_warnings, narrow, open_storage, parse_space, read_lr_find

from .conftest import ROOT, ctrl_c_in_training, sigkill_after_trials, small_recipe

runner = CliRunner()
FINISHED = {"complete", "pruned", "diverged", "failed"}
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # subprocesses: no thread oversubscription on a small CI box


def space_of(**table):
    return parse_space(small_recipe(**{"search.space": table}))


def write_recipe(path: Path, *, trials: int, fine: int, epochs: int = 2, batch_size: int = 16,
                 source: str = "iris", space: str = "", population: int = 0) -> Path:
    """A recipe file for the subprocess tests (a small batch makes a trial take a measurable time)."""
    path.write_text(f"""
name = "s"
[data]
source = "{source}"
batch_size = {batch_size}
[model]
hidden = [32]
[train]
lr = 0.05
momentum = 0.9
[search]
trials = {trials}
coarse_epochs = {epochs}
fine_trials = {fine}
fine_epochs = {epochs}
top_k = 2
population = {population}
{space}
""")
    return path


def slot_counts(rows: pd.DataFrame) -> pd.Series:
    """How many finished (not superseded) trials each (stage, slot) has: exactly 1 everywhere."""
    done = rows[rows.state.isin(FINISHED) & ~rows.reason.fillna("").str.contains("retried as")]
    return done.groupby(["stage", "slot"]).size()


# ---------------------------------------------------------------------------------------------------- the space

@pytest.mark.parametrize("table, message", [
    ({"train.lr": {"log_uniform": [0.1, 0.01]}}, "low must be smaller than high (low=0.1, high=0.01)"),
    ({"train.lr": {"uniform": [0.5, 0.5]}}, "low must be smaller than high (low=0.5, high=0.5)"),
    ({"train.weight_decay": {"log_uniform": [0, 1e-3]}}, "larger than 0 for a log range (low=0, high=0.001)"),
    ({"train.lrr": {"uniform": [0.1, 0.2]}}, "unknown key train.lrr; did you mean 'train.lr'?"),
    ({"train.lr": {"gauss": [0.1, 0.2]}}, "expected one of {log_uniform"),
    ({"train.lr": {"uniform": [0.1]}}, "expected two numbers [low, high]"),
    ({"train.lr": {"uniform": [-1.0, 0.1]}}, "train.lr = -1.0 is out of range"),
    ({"model.dropout": {"uniform": [0, 1]}}, "model.dropout = 1.0 is out of range: allowed >= 0 and < 1"),
    ({"model.activation": {"choice": ["relu", "relux"]}}, "model.activation = 'relux' is unknown"),
    ({"model.activation": {"choice": []}}, "expected a non-empty list"),
    ({"data.batch_size": {"uniform": [8, 64]}}, "data.batch_size is a int key: use {int = [low, high]}"),
    ({"train.lr": {"int": [1, 4]}}, "int ranges need an integer key"),
    ({"train.epochs": {"int": [1, 4]}}, "train.epochs is set by each stage"),
    ({"search.trials": {"int": [1, 4]}}, "cannot be searched"),
    ({"seed": {"int": [0, 3]}}, "cannot be searched: it changes the examples or their split"),  # test leak
    ({"seed": {"int": [0, 3]}}, "use --seeds N"),
    ({"data.source": {"choice": ["iris", "digits"]}}, "compare such settings with separate runs"),
    ({"data.split": {"choice": [[0.6, 0.2, 0.2], [0.8, 0.1, 0.1]]}}, "cannot be searched"),
    ({"data.preprocess": {"choice": ["none", "standardize"]}}, "cannot be searched"),
])
def test_bad_spaces_are_recipe_errors_that_quote_the_values(table, message):
    with pytest.raises(RecipeError) as e:
        space_of(**table)
    assert message in str(e.value)
    assert str(e.value).startswith(f'search.space."{next(iter(table))}"')


def test_good_space_parses_every_kind():
    space = space_of(**{"train.lr": {"log_uniform": [1e-4, 1e-1]}, "model.dropout": {"uniform": [0, 0.5]},
                        "data.batch_size": {"int": [8, 64]}, "model.hidden": {"choice": [[16], [32, 32]]}})
    assert space["train.lr"] == Dist("train.lr", "log_uniform", 1e-4, 1e-1)
    assert space["data.batch_size"].kind == "int"
    assert space["model.hidden"].decode("[32, 32]") == [32, 32]


def test_default_space_is_two_decades_of_lr_and_the_lectures_weight_decays(tmp_path):
    space = parse_space(small_recipe(**{"train.lr": 0.05}))
    assert space["train.lr"].low == pytest.approx(0.005) and space["train.lr"].high == pytest.approx(0.5)
    assert space["train.lr"].log
    assert space["train.weight_decay"].choices == (0.0, 1e-5, 1e-4)
    (tmp_path / "summary.json").write_text(json.dumps({"recommended_lr": 0.02}))
    assert parse_space(small_recipe(), read_lr_find(tmp_path))["train.lr"].high == pytest.approx(0.2)
    (tmp_path / "summary.json").write_text(json.dumps({"recommended_lr": 0.02, "search_range": [0.003, 0.09]}))
    lr = parse_space(small_recipe(), read_lr_find(tmp_path))["train.lr"]
    assert (lr.low, lr.high) == (0.003, 0.09)
    own = small_recipe(**{"search.space": {"train.lr": {"uniform": [0.1, 0.2]},
                                           "model.dropout": {"uniform": [0.0, 0.5]}}})
    assert parse_space(own)["train.lr"].kind == "uniform"  # the recipe's own space as written
    spaced = parse_space(own, read_lr_find(tmp_path))  # --from-lr-find replaces only the LR entry
    assert (spaced["train.lr"].low, spaced["train.lr"].high, spaced["train.lr"].log) == (0.003, 0.09, True)
    assert (spaced["model.dropout"].low, spaced["model.dropout"].high) == (0.0, 0.5)
    with pytest.raises(UserError, match="no summary.json"):
        read_lr_find(tmp_path / "nothing")
    (tmp_path / "summary.json").write_text(json.dumps({"status": "diverged"}))
    with pytest.raises(UserError, match="no recommended_lr"):
        read_lr_find(tmp_path)


def test_narrowing_works_in_log_space_and_keeps_the_top_values():
    space = space_of(**{"train.lr": {"log_uniform": [1e-4, 1.0]}, "data.batch_size": {"int": [8, 128]},
                        "train.weight_decay": {"choice": [0, 1e-4]}})
    top = [{"train.lr": 1e-3, "data.batch_size": 32, "train.weight_decay": 0},
           {"train.lr": 1e-2, "data.batch_size": 40, "train.weight_decay": 0}]
    fine = narrow(space, top)
    lr = fine["train.lr"]
    # span 1e-3..1e-2 is one decade; padding max(0.25 decade, 10% of 4 decades = 0.4 decade) each side
    assert lr.low == pytest.approx(10 ** -3.4) and lr.high == pytest.approx(10 ** -1.6)
    assert fine["data.batch_size"].low <= 32 and fine["data.batch_size"].high >= 40
    assert fine["data.batch_size"].high - fine["data.batch_size"].low < 120
    assert fine["train.weight_decay"] == space["train.weight_decay"]  # choices stay whole
    edge = narrow(space, [{"train.lr": 0.9}])["train.lr"]
    assert edge.high == 1.0 and edge.low == pytest.approx(10 ** (math.log10(0.9) - 0.4))


def test_edge_warnings_say_which_way_to_widen():
    space = space_of(**{"train.lr": {"log_uniform": [1e-4, 1.0]}, "model.dropout": {"uniform": [0, 0.5]}})
    lines = edge_warnings(space, {"train.lr": 0.8, "model.dropout": 0.25})
    assert len(lines) == 1 and "train.lr" in lines[0] and "high edge" in lines[0] and "above" in lines[0]
    assert "low edge" in edge_warnings(space, {"train.lr": 1.2e-4, "model.dropout": 0.25})[0]


# ---------------------------------------------------------------------------------------------------- the CLI

def test_cli_bad_space_is_one_line_exit_2_and_no_run_folder(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", trials=2, fine=0,
                          space='space."train.lr" = {log_uniform = [0, 0.1]}')
    res = runner.invoke(app, ["search", str(recipe), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "low must be larger than 0 for a log range (low=0, high=0.1)" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    checked = runner.invoke(app, ["validate", str(recipe)])  # validate makes the same check, without running
    assert checked.exit_code == 2 and "low must be larger than 0 for a log range" in checked.output


@pytest.mark.parametrize("args, message", [
    ([], "search needs a RECIPE file, or --resume RUN"),
    (["--resume", "x", "--set", "train.lr=0.1"], "--set, --seed and --worker need a RECIPE file"),
])
def test_cli_search_without_a_recipe_needs_resume(tmp_path, args, message):
    res = runner.invoke(app, ["search", *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("args, message", [
    (["--prune", "medain"], "did you mean 'median'"),
    (["--jobs", "0"], "--jobs 0 is not allowed"),
    (["--worker"], "--worker needs --storage URL and --study NAME"),
    (["--resume", "nowhere"], "--resume 'nowhere': no such folder"),
    (["--resume", "."], "not a dlrecipe search run folder (no search.json)"),
])
def test_cli_bad_options_exit_2(tmp_path, args, message):
    recipe = write_recipe(tmp_path / "r.toml", trials=2, fine=0)
    res = runner.invoke(app, ["search", str(recipe), "--runs-dir", str(tmp_path / "runs"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------------------------------------------- searching

def test_a_diverging_trial_never_stops_the_search(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", trials=6, fine=2,
                          space='space."train.lr" = {choice = [0.05, 1e8]}')
    res = runner.invoke(app, ["search", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "runs").glob("*-s-search"))
    rows = pd.read_csv(run / "trials.csv")
    diverged = rows[rows.state == "diverged"]
    assert len(diverged) >= 1 and (diverged["train.lr"] == 1e8).all()
    assert diverged.reason.str.contains("NaN/Inf").all()
    assert len(rows) == 8 and rows.state.isin(FINISHED).all()  # every slot ran after the divergence
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best_params"]["train.lr"] == 0.05
    assert summary["trials"]["diverged"] == len(diverged)
    for n in rows.number:  # every trial's curve, including the diverged ones
        assert (run / "trials" / str(n) / "metrics.csv").is_file()
    assert (run / "search_params.png").stat().st_size > 0 and (run / "search_curves.png").stat().st_size > 0
    assert "leaderboard" in res.output and "selected: trial" in res.output


def test_jobs_seeds_ensemble_and_pruning(tmp_path):
    """--jobs 2 (the leader, and a second process if it pays); the selected config is rerun with 2 seeds; top-3
    ensemble."""
    from dlrecipe.search import search

    recipe = small_recipe(**{"search.trials": 8, "search.coarse_epochs": 4, "search.fine_trials": 2,
                             "search.fine_epochs": 4})
    result = search(recipe, runs_dir=tmp_path, jobs=2, prune="successive-halving", seeds=2, ensemble=3)
    s, rows = result.summary, pd.DataFrame(result.trials)
    assert s["status"] == "completed" and len(rows) == 10
    assert (slot_counts(rows) == 1).all() and len(slot_counts(rows)) == 10
    assert s["trials"]["pruned"] >= 1  # successive halving keeps only the best third at each rung
    assert set(rows[rows.state == "pruned"].stage) == {"coarse"}  # the fine stage early-stops instead
    assert s["selected_stage"] == "fine" and 0 <= s["test_acc"] <= 1
    assert s["ensemble"]["k"] == 3 and 0 <= s["ensemble"]["test_acc"] <= 1
    assert [r["seed"] for r in s["seeds"]["runs"]] == [0, 1] and "mean" in s["seeds"]["test_acc"]
    assert (result.run_dir / "model.pt").is_file() and (result.run_dir / "study.journal").is_file()
    import optuna

    study = optuna.load_study(study_name=s["study"], storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(result.run_dir / "study.journal"))))
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert os.getpid() in pids and len(pids) <= s["jobs"]["processes"] <= 2  # the leader is worker 1
    # (whether a second process starts: tests/test_jobs.py)


def test_sigkill_then_resume_loses_no_finished_trial(tmp_path):
    """SIGKILL a search after its first population of trials: --resume keeps the finished ones (each member is told
    as it finishes), reruns those left running (the unfinished members of the population cut), completes the count."""
    recipe = write_recipe(tmp_path / "r.toml", trials=10, fine=2, epochs=2, batch_size=16, source="digits",
                          population=4)  # populations of 4, 4 and 2 coarse trials: the kill comes after the first
    runs = tmp_path / "runs"
    before = sigkill_after_trials(["search", str(recipe), "--runs-dir", str(runs), "-q"], runs,
                                  "*-s-search/trials.csv", complete=3, timeout=120)
    run = next(runs.glob("*-s-search"))
    assert not (run / "summary.json").exists()

    res = runner.invoke(app, ["search", "--resume", str(run), "-q"])  # the run folder holds the recipe
    assert res.exit_code == 0, res.output
    after = pd.read_csv(run / "trials.csv")
    kept = after.set_index("number").loc[before.number]
    assert (kept.state == "complete").all()
    assert kept.best_val_loss.tolist() == pytest.approx(before.best_val_loss.tolist())  # not rerun
    counts = slot_counts(after)
    assert (counts == 1).all() and len(counts) == 12  # all 10 coarse + 2 fine slots, each once
    assert after.state.isin(FINISHED).all()
    left = after[after.reason.fillna("").str.contains("left running")]
    # the trials the kill interrupted (the unfinished members of a population), each queued again under a new number
    assert len(left) <= 12 - len(before) and left.reason.str.contains("retried as trial").all()
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_a_fine_stage_worse_than_coarse_is_warned_and_the_leaderboard_ranks_every_trial(tmp_path, one_thread):
    """One-epoch fine trials cannot match six-epoch coarse ones at the same LR: the selection (best fine, as the
    recipe says) is kept and explained; the leaderboard ranks by the metric and marks the selected trial."""
    from rich.console import Console

    from dlrecipe.search import leaderboard, search

    recipe = small_recipe(**{"search.trials": 3, "search.coarse_epochs": 6, "search.fine_trials": 1,
                             "search.fine_epochs": 1, "search.space": {"train.lr": {"choice": [0.05]}}})
    result = search(recipe, runs_dir=tmp_path, ensemble=9)
    s, rows = result.summary, pd.DataFrame(result.trials)
    assert s["selected_trial"] == 3 and s["selected_stage"] == "fine"
    best_coarse = rows[rows.stage == "coarse"].sort_values("best_val_loss").iloc[0]
    assert best_coarse.best_val_loss < rows[rows.stage == "fine"].best_val_loss.min()
    assert any(w.startswith(f"coarse trial {best_coarse.number} reached a better val_loss") for w in s["warnings"])
    assert any("--ensemble 9: only 4 trials completed" in w for w in s["warnings"]) and s["ensemble"]["k"] == 4
    console = Console(width=120, record=True)
    console.print(leaderboard(result, "t"))
    lines = [line.split() for line in console.export_text().splitlines() if line.strip()[:1].isdigit()]
    assert [line[0] for line in lines][-1] == "3*"  # the selected fine trial, last: the worst val_loss
    assert [float(line[3]) for line in lines] == sorted(float(line[3]) for line in lines)


def test_the_leaderboard_fits_80_columns_without_cutting_a_value():
    from rich.console import Console

    from dlrecipe.search import SearchResult, leaderboard

    keys = ["train.optimizer", "train.lr", "model.dropout", "train.weight_decay"]
    trials = [{"number": n, "stage": stage, "train.optimizer": "nesterov", "train.lr": 0.0153, "model.dropout": 0.193,
               "train.weight_decay": 1e-4, "best_val_loss": loss, "epochs_run": 15, "state": "complete",
               "seconds": 1.234, "retried": False} for n, stage, loss in ((0, "coarse", 0.18), (1, "fine", 0.25))]
    result = SearchResult(Path("."), {"monitor": "val_loss", "space": dict.fromkeys(keys), "selected_trial": 1,
                                      "trials": {"complete": 2, "retried": 0}}, trials, [])
    console = Console(width=80, record=True)
    console.print(leaderboard(result, "t"))
    text = console.export_text()
    assert "…" not in text and "nesterov" in text and "complete" in text and max(map(len, text.splitlines())) <= 80
    assert text.splitlines()[0].startswith("t: 2 trials (2 complete), * selected")


def test_a_budget_that_runs_out_skips_the_slots_left_but_keeps_one_trial_per_stage(tmp_path, one_thread):
    from dlrecipe.search import search

    recipe = small_recipe(**{"search.trials": 6, "search.coarse_epochs": 2, "search.fine_trials": 3,
                             "search.fine_epochs": 2})
    result = search(recipe, runs_dir=tmp_path, budget_s=0.0)  # both stages' time is up from the start
    rows = pd.DataFrame(result.trials)
    states = rows.groupby(["stage", "state"]).size().to_dict()
    assert states == {("coarse", "complete"): 1, ("coarse", "skipped"): 5, ("fine", "complete"): 1,
                      ("fine", "skipped"): 2}  # the first trial of each stage ran: something to narrow and select
    assert rows[rows.state == "skipped"].reason.str.contains("--budget's time for the (?:coarse|fine) stage").all()
    s = result.summary
    assert s["status"] == "completed" and s["selected_stage"] == "fine" and s["trials"]["skipped"] == 7
    assert s["budget_s"] == 0.0 and any("7 slots skipped" in w for w in s["warnings"])


def test_a_stage_skips_only_the_slots_a_typical_trial_could_not_finish():
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from dlrecipe.search import _cannot_finish_in_time

    def trial(stage, state, seconds=None):
        return SimpleNamespace(state=state, user_attrs={"stage": stage, "seconds": seconds})

    done = [trial("coarse", TrialState.COMPLETE, s) for s in (1.0, 2.0, 9.0)]  # median 2 s
    waiting = [trial("coarse", TrialState.WAITING), trial("fine", TrialState.WAITING)]
    trials = done + waiting
    assert _cannot_finish_in_time(trials, None, now=0) == []  # no budget
    assert _cannot_finish_in_time(trials, {"coarse": 10.0}, now=7.9) == []  # 7.9 + 2 fits in 10
    late = _cannot_finish_in_time(trials, {"coarse": 10.0, "fine": 10.0}, now=8.1)
    assert [t for t, _ in late] == [waiting[0]]  # the fine stage has no complete trial yet: it keeps going
    assert "about 2.0 s" in late[0][1]


def test_progress_lines_name_each_finished_trial_once_after_a_resume(capsys):
    """A retried trial gets a higher number than the slots still to run: each line names its own trial."""
    from dlrecipe.search import SearchProgress

    def row(number, state, loss=None, retried=False, stage="coarse"):
        return {"number": number, "stage": stage, "state": state, "best_val_loss": loss, "retried": retried}

    progress = SearchProgress(total=3, monitor="val_loss")
    rows = [row(0, "complete", 0.5), row(1, "failed", retried=True), row(2, "waiting", stage="fine"),
            row(3, "waiting")]
    progress.start_from(rows)
    rows[3] = row(3, "complete", 0.4)  # the retry of #1
    progress.update(rows)
    rows[2] = row(2, "complete", 0.3, stage="fine")
    progress.update(rows)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "resuming: 1/3 trials finished before"
    assert lines[1].startswith("trial 2/3  #3 coarse complete  val_loss 0.4")
    assert lines[2].startswith("trial 3/3  #2 fine complete  val_loss 0.3") and lines[2].endswith("best val_loss 0.3")
    assert len(lines) == 3


def test_ctrl_c_marks_the_search_interrupted_and_resume_finishes_it(tmp_path, monkeypatch, one_thread):
    from dlrecipe.errors import Interrupted
    from dlrecipe.search import resume, search

    ctrl_c_in_training(monkeypatch, 3)  # while the third trial trains
    recipe = small_recipe(**{"search.trials": 5, "search.coarse_epochs": 2, "search.fine_trials": 1,
                             "search.fine_epochs": 2, "search.population": 1})  # one trial at a time
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Interrupted, match="2 of 6 trials finished"):
        search(recipe, runs_dir="runs")  # a relative runs folder: the resume below runs from another folder
    (run,) = (tmp_path / "runs").iterdir()
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "interrupted" and f"dlrecipe search --resume {run.relative_to(tmp_path)}" in s["reason"]
    before = pd.read_csv(run / "trials.csv")
    assert (before.state == "complete").sum() == 2 and "interrupted (Ctrl-C)" in " ".join(before.reason.fillna(""))

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = resume(run)  # in the same process: the cut trial was queued again, not left running
    after = pd.DataFrame(result.trials)
    assert result.summary["status"] == "completed" and len(slot_counts(after)) == 6
    assert (slot_counts(after) == 1).all()
    kept = after.set_index("number").loc[before[before.state == "complete"].number]
    assert kept.best_val_loss.tolist() == pytest.approx(before[before.state == "complete"].best_val_loss.tolist())
    assert kept.seconds.tolist() == pytest.approx(before[before.state == "complete"].seconds.tolist())  # not rerun
    assert list((tmp_path / "elsewhere").iterdir()) == []  # no stray journal where the resume ran
    assert result.summary["trials"]["retried"] == 1 and result.summary["trials"]["complete"] == 6  # the cut one
    with pytest.raises(UserError, match="this search is completed already, nothing to resume"):
        resume(run)


def test_ctrl_c_in_a_population_keeps_its_finished_members_and_resume_reruns_the_others(tmp_path, monkeypatch,
                                                                                        one_thread):
    """Five coarse trials as one population; Ctrl-C once two members are told: they are kept, the three others
    are queued again and rerun by --resume, each slot once."""
    import dlrecipe.search.population as P
    from dlrecipe.errors import Interrupted
    from dlrecipe.search import resume, search

    real = P.train_population

    def cut(*args, on_done, **kwargs):
        told = []

        def done(k, result):
            on_done(k, result)
            told.append(k)
            if len(told) == 2:
                raise KeyboardInterrupt
        return real(*args, on_done=done, **kwargs)

    monkeypatch.setattr(P, "train_population", cut)
    recipe = small_recipe(**{"search.trials": 5, "search.coarse_epochs": 2, "search.fine_trials": 1,
                             "search.fine_epochs": 2, "search.population": 5})
    with pytest.raises(Interrupted, match="2 of 6 trials finished"):
        search(recipe, runs_dir=tmp_path)
    (run,) = tmp_path.iterdir()
    before = pd.read_csv(run / "trials.csv")
    assert (before.state == "complete").sum() == 2 and (before.state == "failed").sum() == 3
    monkeypatch.setattr(P, "train_population", real)
    result = resume(run)
    after = pd.DataFrame(result.trials)
    assert result.summary["status"] == "completed" and len(slot_counts(after)) == 6
    assert (slot_counts(after) == 1).all() and result.summary["trials"]["retried"] == 3
    kept = after.set_index("number").loc[before[before.state == "complete"].number]
    assert kept.best_val_loss.tolist() == pytest.approx(before[before.state == "complete"].best_val_loss.tolist())


def test_a_trial_whose_database_heartbeat_stops_is_queued_again(tmp_path, monkeypatch):
    """A lost machine: its trial is failed after the grace period and queued again with the same slot and params."""
    import optuna

    import dlrecipe.search.storage as S

    monkeypatch.setattr(S, "HEARTBEAT_S", 1)
    monkeypatch.setattr(S, "GRACE_S", 2)
    storage = S.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="x")
    study.enqueue_trial({}, user_attrs={"stage": "coarse", "slot": 0})
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("x"), 0)
    assert storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING)
    lr = optuna.trial.Trial(study, trial_id).suggest_float("train.lr", 1e-3, 1e-1, log=True)
    storage.record_heartbeat(trial_id)  # ... and then the machine is gone
    time.sleep(3.5)
    optuna.storages.fail_stale_trials(study)
    lost, again = study.get_trials()
    assert lost.state == optuna.trial.TrialState.FAIL
    assert again.state == optuna.trial.TrialState.WAITING and again.params == {"train.lr": lr}
    assert again.user_attrs == {"stage": "coarse", "slot": 0, "retry_of": 0}


# ---------------------------------------------------------------------------------------------------- PostgreSQL

def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a free localhost port (as `nobody` when we are root: postgres refuses root)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg2")
    root = Path(tempfile.mkdtemp(prefix="dlrecipe-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True)
    run(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
    run(bin_dir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(tmp_path, postgres):
    """A --worker and the leader join one study: together they run exactly the requested trials, none twice."""
    import optuna

    recipe = write_recipe(tmp_path / "r.toml", trials=8, fine=2, epochs=2, batch_size=16, source="digits",
                          population=2)  # populations of 2: a busy machine cannot let one process claim them all
    base = [sys.executable, "-m", "dlrecipe", "search", str(recipe), "--storage", postgres, "--study", "shared"]
    worker = subprocess.Popen([*base, "--worker", "--runs-dir", str(tmp_path / "w")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    lines = [worker.stderr.readline() for _ in range(1)]
    while "waiting for study 'shared'" not in lines[-1] and lines[-1] and len(lines) < 50:
        lines.append(worker.stderr.readline())  # (skipping any library warning)
    assert "waiting for study 'shared'" in lines[-1], lines  # the worker is up before the study exists
    leader = subprocess.Popen([*base, "-q", "--runs-dir", str(tmp_path / "l")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    _, err_l = leader.communicate(timeout=240)
    _, err_w = worker.communicate(timeout=60)
    assert leader.returncode == 0, err_l
    assert worker.returncode == 0, err_w

    study = optuna.load_study(study_name="shared", storage=open_storage(postgres))
    trials = study.trials
    assert len(trials) == 10 and all(t.state.is_finished() for t in trials)
    slots = sorted((t.user_attrs["stage"], t.user_attrs["slot"]) for t in trials)
    assert slots == sorted([("coarse", i) for i in range(8)] + [("fine", i) for i in range(2)])  # none twice
    by_pid = pd.Series([t.user_attrs["pid"] for t in trials]).value_counts()
    assert set(by_pid.index) == {leader.pid, worker.pid}  # both processes ran trials
    worker_run = next((tmp_path / "w").glob("*-search-worker"))
    ran_there = {t.number for t in trials if t.user_attrs["pid"] == worker.pid}
    assert {int(p.name) for p in (worker_run / "trials").iterdir()} == ran_there
    assert json.loads((worker_run / "summary.json").read_text())["trials_run"] == len(ran_there)
    leader_run = next((tmp_path / "l").glob("*-s-search"))
    rows = pd.read_csv(leader_run / "trials.csv")
    assert len(rows) == 10 and rows.state.isin(FINISHED).all() and rows.number.is_unique
    for n in rows.number:  # the leader has every trial's curve, from the study for the worker's trials
        assert (leader_run / "trials" / str(n) / "metrics.csv").is_file()
    assert "postgres@127.0.0.1" in json.loads((leader_run / "summary.json").read_text())["storage"]


@pytest.mark.slow
def test_acceptance_digits_search_selects_a_model_with_at_least_98_percent_test_accuracy(tmp_path, one_thread):
    """Issue 5: `dlrecipe search recipes/digits_mlp.toml` as shipped (26 trials) selects a >= 0.98 model."""
    from dlrecipe.recipe import load
    from dlrecipe.search import search

    result = search(load(ROOT / "recipes" / "digits_mlp.toml"), device="cpu", runs_dir=tmp_path)
    s = result.summary
    assert s["status"] == "completed" and s["selected_stage"] == "fine"
    assert len(result.trials) == 26 and s["test_acc"] >= 0.98, s
