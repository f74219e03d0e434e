"""--jobs (dlrecipe.search.jobs): the auto rule and the pay-off estimate as pure functions of measured inputs, and
searches where the leader trains slots itself and starts another process only when the estimate says it pays."""
from __future__ import annotations

import json
import math
import os

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

import dlrecipe.search.jobs as J
from dlrecipe.cli import app
from dlrecipe.errors import Interrupted, UserError

from .conftest import ctrl_c_in_training, small_recipe

runner = CliRunner()


@pytest.mark.parametrize("value, expected", [("auto", None), (None, None), (" AUTO ", None), (2, 2), ("3", 3),
                                             (1, 1)])
def test_jobs_is_a_count_or_auto(value, expected):
    assert J.parse_jobs(value) == expected


@pytest.mark.parametrize("value, message", [(0, "--jobs 0 is not allowed: at least 1"),
                                            ("two", "--jobs 'two' is not allowed"), (1.5, "--jobs 1.5 is not")])
def test_a_bad_jobs_value_is_a_one_line_error(value, message):
    with pytest.raises(UserError, match=message):
        J.parse_jobs(value)


@pytest.mark.parametrize("kw, expected", [
    ({"cores": 2, "omp_threads": None, "device": "cpu", "local_objects": False}, 2),   # one per core
    ({"cores": 16, "omp_threads": 4, "device": "cpu", "local_objects": False}, 4),    # OMP_NUM_THREADS=4: 16 / 4
    ({"cores": 2, "omp_threads": 2, "device": "cpu", "local_objects": False}, 1),
    ({"cores": 8, "omp_threads": None, "device": "cuda", "local_objects": False}, 1),  # one device, one process
    ({"cores": 8, "omp_threads": None, "device": "cuda:1", "local_objects": False}, 1),
    ({"cores": 8, "omp_threads": None, "device": "cpu", "local_objects": True}, 1),   # Python objects: here only
])
def test_auto_allows_one_process_per_core_on_a_cpu_only(kw, expected):
    assert J.auto_workers(**kw) == expected


@pytest.mark.parametrize("remaining, workers, startup, pays", [
    (10.0, 1, 3.0, True),    # saves (10 - 3) / 2 = 3.5 s >= 1.5
    (6.0, 1, 3.0, True),     # (6 - 3) / 2 = 1.5: exactly half a start-up
    (5.9, 1, 3.0, False),
    (0.4, 1, 3.0, False),    # a fused coarse stage's last population: never worth a process
    (15.0, 2, 3.0, True),    # a third process: (15 - 6) / 6 = 1.5
    (14.0, 2, 3.0, False),
    (None, 1, 3.0, False),   # nothing measured yet
    (1.0, 1, 0.0, True),     # a free start-up always pays
])
def test_another_process_pays_only_when_it_saves_half_a_start_up(remaining, workers, startup, pays):
    assert J.child_pays(remaining, workers, startup) is pays


@pytest.mark.parametrize("remaining, speedup, pays", [
    (20.0, 1.0, True),    # a small model: (20 - 3) / 2 = 8.5 s saved
    (20.0, 1.6, True),    # the leader drops from 2 threads to 1: 20 * 0.2 - 1.5 = 2.5 s >= 1.5
    (14.0, 1.6, False),   # 14 * 0.2 - 1.5 = 1.3 s: not enough
    (100.0, 2.0, False),  # a second process only halves the leader's speed: never
])
def test_a_leader_that_loses_threads_needs_more_work_left(remaining, speedup, pays):
    assert J.child_pays(remaining, 1, 3.0, speedup) is pays


def test_the_work_left_counts_only_stages_measured_here():
    assert J.remaining_seconds({"coarse": 4, "fine": 3}, {"coarse": 0.5}) == pytest.approx(2.0)
    assert J.remaining_seconds({"coarse": 4, "fine": 3}, {"coarse": 0.5, "fine": 2.0}) == pytest.approx(8.0)
    assert J.remaining_seconds({"fine": 3}, {"coarse": 0.5}) is None  # fine trials alone: measured first
    assert J.remaining_seconds({}, {"coarse": 0.5}) is None


@pytest.mark.parametrize("busy, ours, workers, spare", [
    (2.0, 2.0, 1, 1.0),    # 2 cores over 2 s: the leader busy on one, nothing else: one core spare
    (6.0, 2.0, 1, -1.0),   # other programs kept both cores busy: none
    (3.0, 2.0, 1, 0.5),    # half a core taken by others
    (4.0, 4.0, 2, 0.0),    # the leader and one process: both cores ours
])
def test_spare_cores_leave_out_what_others_keep_busy(busy, ours, workers, spare):
    assert J.spare_cores(2, busy, ours, 2.0, workers) == pytest.approx(spare)


def test_cpu_seconds_are_read_from_proc_on_linux():
    if not os.path.exists("/proc/stat"):
        pytest.skip("reads /proc (Linux)")
    assert J._cpu_busy_s() > 0 and J._process_cpu_s(os.getpid()) > 0 and J._process_cpu_s(2 ** 22 + 7) == 0.0


def test_the_start_up_guess_grows_with_the_load_above_the_cores():
    assert J.startup_guess(load=0.5, n_cores=2) == pytest.approx(J.STARTUP_GUESS_S)
    assert J.startup_guess(load=5.0, n_cores=2) == pytest.approx(2.5 * J.STARTUP_GUESS_S)


def _pids(result) -> list[int]:
    study = optuna.load_study(study_name=result.summary["study"], storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(result.run_dir / "study.journal"))))
    return [t.user_attrs["pid"] for t in study.trials]


def _slots_once(result, n: int) -> None:
    rows = pd.DataFrame(result.trials)
    assert len(rows) == n and rows.groupby(["stage", "slot"]).size().eq(1).all() and len(rows.groupby(
        ["stage", "slot"])) == n


def test_jobs_2_starts_no_process_when_the_estimate_says_it_does_not_pay(tmp_path, monkeypatch, one_thread):
    from dlrecipe.search import search

    monkeypatch.setattr(J, "STARTUP_GUESS_S", 1e9)  # start-ups that never pay
    recipe = small_recipe(**{"search.trials": 6, "search.coarse_epochs": 2, "search.fine_trials": 2,
                             "search.fine_epochs": 2, "search.population": 1})
    result = search(recipe, runs_dir=tmp_path, jobs=2)
    _slots_once(result, 8)
    assert set(_pids(result)) == {os.getpid()}  # the leader ran every slot
    assert result.summary["jobs"] == {"most": 2, "processes": 1}


def test_jobs_2_runs_each_slot_once_with_the_leader_running_some(tmp_path, monkeypatch, one_thread):
    """A free start-up: the second process starts after the leader's first trial and claims what is waiting when
    it is up (how many depends on timing: not asserted); every slot runs exactly once."""
    from dlrecipe.search import search

    monkeypatch.setattr(J, "STARTUP_GUESS_S", 0.0)
    monkeypatch.setattr(J, "MIN_SPARE_CORES", -math.inf)  # whatever else runs on this machine
    recipe = small_recipe(**{"search.trials": 8, "search.coarse_epochs": 3, "search.fine_trials": 4,
                             "search.fine_epochs": 20, "search.population": 1})
    result = search(recipe, runs_dir=tmp_path, jobs=2, seeds=2)
    _slots_once(result, 12)
    assert result.summary["status"] == "completed" and result.summary["jobs"] == {"most": 2, "processes": 2}
    pids = _pids(result)
    assert os.getpid() in pids and len(set(pids)) <= 2
    assert [r["seed"] for r in result.summary["seeds"]["runs"]] == [0, 1]


def test_jobs_1_is_the_leader_alone(tmp_path, monkeypatch, one_thread):
    from dlrecipe.search import search

    monkeypatch.setattr(J, "STARTUP_GUESS_S", 0.0)  # would pay: --jobs 1 starts nothing anyway
    recipe = small_recipe(**{"search.trials": 4, "search.coarse_epochs": 2, "search.fine_trials": 1,
                             "search.fine_epochs": 2})
    result = search(recipe, runs_dir=tmp_path, jobs=1)
    assert set(_pids(result)) == {os.getpid()} and result.summary["jobs"] == {"most": 1, "processes": 1}


def test_ctrl_c_with_a_second_process_stops_it_and_resume_finishes(tmp_path, monkeypatch, one_thread):
    from dlrecipe.search import resume, search

    monkeypatch.setattr(J, "STARTUP_GUESS_S", 0.0)
    monkeypatch.setattr(J, "MIN_SPARE_CORES", -math.inf)  # whatever else runs on this machine
    ctrl_c_in_training(monkeypatch, 3)  # the leader's third trial (a started process trains with the real one)
    recipe = small_recipe(**{"search.trials": 6, "search.coarse_epochs": 2, "search.fine_trials": 1,
                             "search.fine_epochs": 2, "search.population": 1})
    with pytest.raises(Interrupted, match="continue with dlrecipe search --resume"):
        search(recipe, runs_dir=tmp_path, jobs=2)
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    result = resume(run, jobs=1)
    rows = pd.DataFrame(result.trials)
    standing = rows[~rows.retried.astype(bool)]  # a failed-and-queued-again trial counts by its retry
    assert result.summary["status"] == "completed" and len(standing) == 7
    assert standing.groupby(["stage", "slot"]).size().eq(1).all()


def test_cli_jobs_takes_auto_and_refuses_words(tmp_path):
    bad = runner.invoke(app, ["search", "recipes/digits_mlp.toml", "--jobs", "many", "--runs-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "--jobs 'many' is not allowed" in bad.output and "Traceback" not in bad.output
    assert list(tmp_path.iterdir()) == []
    helped = runner.invoke(app, ["search", "--help"])
    assert "auto" in helped.output
