"""Faults with nothing lost: processes SIGKILLed at many seeded points, writes that fail (a full disk), corrupted
and foreign folders in runs/, two commands writing into one runs folder, and what dlrecipe may write where.

The kill tests start `python -m dlrecipe` as subprocesses and poll their files to pick the moment (never a fixed
sleep); after each kill every file left is checked readable and a rerun or --resume goes on from there.
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dlrecipe.cli import app
from dlrecipe.errors import UserError
from dlrecipe.runs import CsvLog, list_runs, new_run_dir, read_json, write_json

from .conftest import small_recipe
from .test_search import postgres  # noqa: F401 - the throwaway PostgreSQL server fixture

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
KILLS = {"survived": 0}  # kill points survived in this session (the README quotes the count)


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_recipe(path: Path, *, epochs: int = 12, trials: int = 6, fine: int = 1, source: str = "digits") -> Path:
    path.write_text(f"""
name = "k"
[data]
source = "{source}"
batch_size = 16
[model]
hidden = [32]
[train]
lr = 0.05
epochs = {epochs}
patience = 0
lr_halving = 0
[search]
trials = {trials}
coarse_epochs = 2
fine_trials = {fine}
fine_epochs = 2
top_k = 2
""")
    return path


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlrecipe", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=ONE_THREAD)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 180) -> bool:
    """SIGKILL proc as soon as ready() is true (polled); False when it ended first (the point came too late)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready():
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.02)  # polling the subprocess's files, not waiting for a fixed time
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    KILLS["survived"] += 1
    return True


def csv_rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path)) if path.is_file() else 0
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return 0


def assert_readable(folder: Path) -> None:
    """Every file a killed command left is whole: CSVs parse, JSON parses, model files load with weights_only."""
    for path in folder.rglob("*"):
        if path.name.endswith(".tmp") or not path.is_file():
            continue  # a temp file a kill left before its rename: never read, the real file is intact
        if path.suffix == ".csv" and path.stat().st_size:
            pd.read_csv(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
    rows = {r["path"]: r for r in list_runs(folder.parent)}
    assert rows[str(folder)]["status"] != "unreadable"


# ---------------------------------------------------------------------------------------------------- kills

@pytest.mark.slow
def test_train_killed_at_random_epochs_keeps_every_finished_epoch(tmp_path, one_thread):
    from dlrecipe.recipe import load
    from dlrecipe.train import train

    recipe = write_recipe(tmp_path / "r.toml", epochs=12)
    reference = pd.read_csv(train(load(recipe), device="cpu", runs_dir=tmp_path / "ref").run_dir / "metrics.csv")
    rng = random.Random(17)
    points = sorted(rng.sample(range(11), 4))  # epochs finished when the kill comes, 0 = before the first
    for k in points:
        runs = tmp_path / f"runs{k}"
        proc = start("train", recipe, "--runs-dir", runs, "-q")
        killed = kill_when(proc, lambda runs=runs, k=k: csv_rows(next(iter(runs.glob("*/metrics.csv")), runs / "x"))
                           >= k and (k > 0 or any(runs.glob("*/env.json"))))
        assert killed, proc.stderr.read()
        (run,) = runs.iterdir()
        assert_readable(run)
        kept = pd.read_csv(run / "metrics.csv") if (run / "metrics.csv").stat().st_size else pd.DataFrame()
        assert len(kept) >= k and kept.notna().all().all()  # each finished epoch, whole
        cols = ["epoch", "train_loss", "val_loss", "val_acc"]
        if len(kept):
            pd.testing.assert_frame_equal(kept[cols], reference[cols].iloc[:len(kept)], rtol=1e-5)
        assert list_runs(runs)[0]["status"] == "running or killed"
        res = _cli("train", recipe, "--runs-dir", runs, "-q")  # a rerun starts afresh beside the killed folder
        assert res.exit_code == 0, res.output
        assert len(list(runs.iterdir())) == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sanity", "lr-find"])
def test_sanity_and_lr_find_killed_at_random_points_leave_readable_folders(tmp_path, command, one_thread):
    recipe = write_recipe(tmp_path / "r.toml", source="iris")
    extra = ["--overfit-steps", "300"] if command == "sanity" else []
    rng = random.Random(command)
    killed = 0
    for i, polls in enumerate(sorted(rng.sample(range(40), 3))):
        runs = tmp_path / f"runs{i}"
        proc = start(command, recipe, "--runs-dir", runs, "-q", *extra)
        seen = {"n": 0}

        def ready(runs=runs, seen=seen, polls=polls):  # the run folder exists, then `polls` more polls (0.02 s each) into the command's work
            if any(runs.glob("*/env.json")):
                seen["n"] += 1
            return seen["n"] > polls
        if not kill_when(proc, ready):
            continue  # it finished first: a later point than there was
        killed += 1
        (run,) = runs.iterdir()
        assert_readable(run)
        res = _cli(command, recipe, "--runs-dir", runs, "-q", *extra)
        assert res.exit_code in (0, 1), res.output  # 1: a sanity check failed, not an error
        assert len(list(runs.iterdir())) == 2
    assert killed >= 2


@pytest.mark.slow
def test_a_search_killed_again_and_again_resumes_with_every_finished_trial(tmp_path, one_thread):
    """Kill, resume, kill the resumed search, resume again: trials finished before each kill are kept as they were."""
    recipe = write_recipe(tmp_path / "r.toml", trials=8, fine=1)
    runs = tmp_path / "runs"
    rng = random.Random(5)
    first, second = rng.randint(1, 2), rng.randint(4, 5)

    def complete(n):
        return lambda: any((rows := _trials(runs)) is not None and (rows.state == "complete").sum() >= n
                           for _ in [0])
    assert kill_when(start("search", recipe, "--runs-dir", runs, "-q"), complete(first))
    run = next(runs.glob("*-k-search"))
    before = _trials(runs)
    assert_readable(run)
    assert kill_when(start("search", "--resume", run, "-q"), complete(second))
    assert_readable(run)
    middle = _trials(runs)
    res = _cli("search", "--resume", run, "-q")
    assert res.exit_code == 0, res.output
    after = pd.read_csv(run / "trials.csv").set_index("number")
    for kept in (before, middle):
        done = kept[kept.state == "complete"]
        assert (after.loc[done.number, "state"] == "complete").all()
        assert after.loc[done.number, "best_val_loss"].tolist() == pytest.approx(done.best_val_loss.tolist())
    assert read_json(run / "summary.json")["status"] == "completed"


def _trials(runs: Path):
    found = list(runs.glob("*/trials.csv")) + list(runs.glob("*/3-search/trials.csv"))
    return pd.read_csv(found[0]) if found and found[0].stat().st_size else None


@pytest.mark.slow
def test_a_run_killed_in_a_random_step_resumes(tmp_path, one_thread):
    recipe = write_recipe(tmp_path / "r.toml", trials=4, fine=1, source="iris")
    runs = tmp_path / "runs"
    step = random.Random(3).choice(["2-lr-find", "3-search"])
    proc = start("run", recipe, "--runs-dir", runs, "-q")
    assert kill_when(proc, lambda: any(runs.glob(f"*/{step}/env.json"))), proc.stderr.read()
    (run,) = runs.iterdir()
    assert_readable(run)
    assert read_json(run / "summary.json")["status"] == "running"
    sanity = (run / "1-sanity" / "summary.json").read_text()
    res = _cli("run", "--resume", run, "-q")
    assert res.exit_code == 0, res.output
    assert read_json(run / "summary.json")["status"] == "completed"
    assert (run / "1-sanity" / "summary.json").read_text() == sanity  # a finished step is kept, not rerun


# ---------------------------------------------------------------------------------------------------- failed writes

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_training_is_one_line_and_earlier_rows_stay(tmp_path, monkeypatch, one_thread):
    real, calls = CsvLog.write, {"n": 0}

    def write(self, row):
        if self.path.name == "metrics.csv":
            calls["n"] += 1
            if calls["n"] == 3:  # the third epoch's row does not fit on the disk
                self._writer = type("FullDisk", (), {"writerow": staticmethod(_enospc)})()
        return real(self, row)
    monkeypatch.setattr(CsvLog, "write", write)
    recipe = write_recipe(tmp_path / "r.toml", epochs=5, source="iris")
    res = _cli("train", recipe, "--runs-dir", tmp_path / "runs", "-q")
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert "No space left on device" in line and "metrics.csv" in line and "2 rows written before" in line
    (run,) = (tmp_path / "runs").iterdir()
    assert len(pd.read_csv(run / "metrics.csv")) == 2  # the two finished epochs
    assert read_json(run / "summary.json")["status"] == "failed"


def test_a_failed_json_or_model_write_keeps_the_old_file(tmp_path, monkeypatch):
    import dlrecipe.atomic as A
    from dlrecipe.data import load_data
    from dlrecipe.models import build_model
    from dlrecipe.predict import save_model

    write_json(tmp_path / "summary.json", {"status": "running"})
    r = small_recipe()
    data = load_data(r)
    save_model(tmp_path, build_model(r, data), data, r)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(A, "_fsync", _enospc)  # the data does not fit: fsync reports ENOSPC
    with pytest.raises(UserError, match=r"cannot write .*summary.json: No space left on device"):
        write_json(tmp_path / "summary.json", {"status": "completed"})
    with pytest.raises(UserError, match=r"cannot write .*model.pt: No space left on device"):
        save_model(tmp_path, build_model(r, data), data, r)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files intact, no temp files left


def test_a_full_disk_anywhere_else_is_one_line(tmp_path, monkeypatch):
    """A figure that cannot be saved (matplotlib's own write) is one line too, not a traceback."""
    import matplotlib.figure

    run = tmp_path / "20260101-000000-a-train"
    run.mkdir()
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.0, 0.6]}).to_csv(run / "metrics.csv")
    (run / "summary.json").write_text('{"status": "completed"}')

    def savefig(self, fname, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(fname))
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    res = _cli("report", run)
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: cannot write") and "No space left on device" in line
    assert pd.read_csv(run / "metrics.csv")["val_loss"].tolist() == [1.0, 0.6]


# ---------------------------------------------------------------------------------------------------- runs/ folders

def test_corrupted_and_foreign_folders_are_unreadable_in_runs_and_compare(tmp_path):
    runs = tmp_path / "runs"
    good = runs / "20260101-000003-good-train"
    good.mkdir(parents=True)
    (good / "summary.json").write_text(json.dumps({"name": "good", "status": "completed", "best_val_loss": 0.5}))
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.0, 0.6]}).to_csv(good / "metrics.csv")
    bad = {"holiday-photos": None, "20260101-000000-a-train": b'{"status": "compl',
           "20260101-000001-b-train": bytes(range(256)), "20260101-000002-c-train": b"[1, 2]"}
    for name, content in bad.items():
        (runs / name).mkdir()
        if content is not None:
            (runs / name / "summary.json").write_bytes(content)
        else:
            (runs / name / "IMG_0001.jpg").write_bytes(b"\xff\xd8")
    (runs / "20260101-000004-d-train").mkdir()
    (runs / "20260101-000004-d-train" / "summary.json").mkdir()  # a folder where a file should be
    (runs / "notes.txt").write_text("a file beside the run folders")
    statuses = {r["run"]: r["status"] for r in list_runs(runs)}
    assert statuses == {**{n: "unreadable" for n in bad}, "20260101-000004-d-train": "unreadable",
                        "20260101-000003-good-train": "completed"}
    res = _cli("runs", "--runs-dir", runs)
    assert res.exit_code == 0 and res.output.count("unreadable") == 5
    res = _cli("compare", good, *(runs / n for n in bad), "--runs-dir", tmp_path / "out")
    assert res.exit_code == 0, res.output
    (out,) = (tmp_path / "out").iterdir()
    table = pd.read_csv(out / "compare.csv")
    assert table.status.tolist() == ["completed"] + ["unreadable"] * len(bad)
    for name in bad:  # report refuses each in one line
        res = _cli("report", runs / name)
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output


@pytest.mark.slow
def test_two_commands_in_one_runs_folder_and_runs_while_a_search_writes(tmp_path, one_thread):
    recipe = write_recipe(tmp_path / "r.toml", epochs=6, trials=4, fine=1, source="iris")
    runs = tmp_path / "runs"
    procs = [start("train", recipe, "--runs-dir", runs, "-q"), start("train", recipe, "--runs-dir", runs, "-q"),
             start("search", recipe, "--runs-dir", runs, "-q")]
    listed = 0
    while any(p.poll() is None for p in procs):  # `dlrecipe runs` over and over while they write
        rows = list_runs(runs) if runs.is_dir() else []
        assert all(r["status"] != "unreadable" for r in rows), rows
        listed += 1
    assert listed > 10
    assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]
    rows = list_runs(runs)
    assert sorted(r["command"] for r in rows) == ["search", "train", "train"]
    assert all(r["status"] == "completed" for r in rows)
    assert_readable(next(runs.glob("*-search")))
    assert not list(runs.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------------- safety

def test_every_run_folder_stays_inside_the_runs_folder(tmp_path, monkeypatch):
    import dlrecipe.runs as R

    monkeypatch.setattr(R, "slug", lambda name: "x/../../outside")  # as if slug() let a traversal through
    with pytest.raises(UserError, match="outside the run folder"):
        new_run_dir(tmp_path / "runs", "x", "train")
    with pytest.raises(UserError, match="outside the run folder"):
        R.start_run(small_recipe(), tmp_path / "runs", "run", "cpu", folder="../escaped")
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing made, inside or out


def test_commands_write_only_inside_their_runs_folder(tmp_path, monkeypatch, one_thread):
    """train, sanity, lr-find, search, report and compare with a traversing name: every new file is under runs/."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    recipe = work / "r.toml"
    recipe.write_text('name = "../../../escaped/../x"\n[data]\nsource = "iris"\n[train]\nepochs = 2\n'
                      '[search]\ntrials = 2\ncoarse_epochs = 1\nfine_trials = 1\nfine_epochs = 1\n')
    before = {p for p in tmp_path.rglob("*")}
    for args in (["train"], ["sanity", "--overfit-steps", "50", "--only", "labels,init_loss"], ["lr-find"],
                 ["search"]):
        res = _cli(args[0], recipe, *args[1:], "--runs-dir", work / "runs", "-q")
        assert res.exit_code in (0, 1), res.output
    folders = sorted((work / "runs").iterdir())
    assert _cli("report", folders[0]).exit_code == 0
    assert _cli("compare", folders[0], folders[-1], "--runs-dir", work / "runs").exit_code == 0
    new = {p for p in tmp_path.rglob("*") if p not in before}
    outside = [p for p in new if (work / "runs") not in p.parents and p != work / "runs"]
    assert not outside, outside


def test_validate_says_when_a_recipe_runs_python_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodule_factory.py").write_text(
        "import torch.nn as nn\ndef make(input_shape, num_outputs, **kw):\n    return nn.Linear(4, num_outputs)\n")
    (tmp_path / "myhook_data.py").write_text(
        "import numpy as np\ndef load(cfg, seed):\n    return np.random.default_rng(0).normal(size=(40, 4)), "
        "np.arange(40) % 2\n")
    r = tmp_path / "r.toml"
    r.write_text('[data]\nsource = "myhook_data:load"\n[model]\nkind = "python"\nfactory = "mymodule_factory:make"\n')
    res = _cli("validate", r)
    assert res.exit_code == 0, res.output
    assert "this recipe imports and runs mymodule_factory.make (model.factory), myhook_data.load (data.source)" \
        in res.output
    res = _cli("validate", tmp_path / "iris.toml") if (tmp_path / "iris.toml").write_text(
        '[data]\nsource = "iris"\n') else None
    assert res.exit_code == 0 and "imports and runs" not in res.output


def test_every_model_file_is_loaded_with_weights_only():
    """grep: each torch.load in dlrecipe passes weights_only=True (pickled code in a model file never runs)."""
    import re

    root = Path(__file__).resolve().parents[1] / "dlrecipe"
    calls = [(p, m) for p in root.rglob("*.py") for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)",
                                                                     p.read_text())]
    assert calls
    for path, m in calls:
        assert "weights_only=True" in m.group(0), (path, m.group(0))


def test_every_model_file_is_saved_atomically():
    """grep: each torch.save in dlrecipe writes the temporary file of dlrecipe.atomic.replace (then renamed)."""
    root = Path(__file__).resolve().parents[1] / "dlrecipe"
    lines = [(p, line) for p in root.rglob("*.py") for line in p.read_text().splitlines()
             if "torch.save(" in line and not line.strip().startswith(('f"', '"'))]  # not a message's text
    assert lines
    for path, line in lines:
        assert "replace" in line and "tmp" in line, (path, line)


def test_a_storage_password_never_reaches_env_json_or_the_output(tmp_path, monkeypatch):
    from dlrecipe.runs import environment

    url = "postgresql://alice:s3cret@127.0.0.1:1/db"
    monkeypatch.setattr(sys, "argv", ["dlrecipe", "search", "r.toml", "--storage", url])
    env = environment("cpu", 0)
    assert "s3cret" not in json.dumps(env) and "postgresql://alice:***@127.0.0.1:1/db" in env["argv"]
    recipe = write_recipe(tmp_path / "r.toml", source="iris")
    res = _cli("search", recipe, "--storage", url, "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 2 and "s3cret" not in res.output and "alice:***@" in res.output
    assert not any("s3cret" in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())


def test_html_output_escapes_everything_from_a_recipe_or_a_csv(tmp_path):
    attack = "<script>alert(1)</script>"
    run = tmp_path / "20260101-000000-x-train"
    run.mkdir()
    (run / "recipe.toml").write_text(f'name = "{attack}"\n[data]\nsource = "<img src=x onerror=alert(2)>.csv"\n')
    (run / "summary.json").write_text(json.dumps({"name": attack, "status": "completed", "reason": "<b>bold</b>",
                                                  "data_notes": ["<iframe src=evil>"]}))
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.0, 0.6]}).to_csv(run / "metrics.csv")
    pd.DataFrame({"check": [attack], "status": ["<img src=y onerror=alert(3)>"]}).to_csv(run / "sanity.csv")
    assert _cli("report", run).exit_code == 0
    page = (run / "report.html").read_text()
    for raw in ("<script>", "<img src=x", "<img src=y", "<b>bold", "<iframe"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.slow
def test_a_storage_password_is_kept_only_in_the_owner_only_search_json(tmp_path, postgres, one_thread):  # noqa: F811
    """A real PostgreSQL search with a password in its URL (the server trusts localhost, so any password works):
    the password is in none of the output, summaries, logs or the report; search.json keeps it for --resume,
    readable by its owner only."""
    url = postgres.replace("postgres@", "postgres:s3cret@")
    recipe = write_recipe(tmp_path / "r.toml", trials=2, fine=1, source="iris")
    res = _cli("search", recipe, "--storage", url, "--study", "pw", "--runs-dir", tmp_path / "runs", "-q")
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "runs").iterdir()
    report = _cli("report", run)
    assert report.exit_code == 0, report.output
    assert "s3cret" not in res.output + report.output + _cli("runs", "--runs-dir", tmp_path / "runs").output
    assert "postgres:***@" in read_json(run / "summary.json")["storage"]
    leaks = [p for p in run.rglob("*") if p.is_file() and b"s3cret" in p.read_bytes()]
    assert leaks == [run / "search.json"]
    assert (run / "search.json").stat().st_mode & 0o077 == 0
