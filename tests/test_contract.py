"""The contract with pipelines: exit codes, every command's --json against the shipped schema, the README's CI
workflow, help text, and the viewers (Optuna's storage API, TensorBoard's event reader) reading what we wrote."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from dlrecipe.cli import app
from dlrecipe.contract import COMMANDS, EXIT_CODES, load_schema
from dlrecipe.recipe import SCHEMA

from .conftest import ROOT

runner = CliRunner()
DIGITS = str(ROOT / "recipes/digits_mlp.toml")
VALIDATOR = Draft202012Validator(load_schema())
SMALL_SEARCH = ("--set", "search.trials=2", "--set", "search.coarse_epochs=1", "--set", "search.fine_trials=1",
                "--set", "search.fine_epochs=2")


def _json(*args, code: int) -> dict:
    """Run a command with --json: the exit code is `code`, stdout is one JSON object valid against the schema."""
    res = runner.invoke(app, [str(a) for a in args] + ["--json"])
    assert res.exit_code == code, (res.stdout, res.stderr)
    obj = json.loads(res.stdout)  # nothing else on stdout
    VALIDATOR.validate(obj)
    assert obj["exit_code"] == code and obj["dlrecipe"] and obj["command"] == args[0]
    return obj


def test_the_schema_is_a_valid_json_schema_and_rejects_a_broken_object():
    Draft202012Validator.check_schema(load_schema())
    ok = {"dlrecipe": "0.1.0", "command": "train", "status": "completed", "exit_code": 0, "run_dir": "runs/x",
          "metrics": {"test_acc": 0.9}}
    VALIDATOR.validate(ok)
    for broken in ({**ok, "exit_code": 3}, {**ok, "status": "error"}, {k: v for k, v in ok.items() if k != "run_dir"},
                   {**ok, "metrics": {"test_acc": "high"}}, {**ok, "status": "error", "error": "x", "exit_code": 1}):
        assert not VALIDATOR.is_valid(broken), broken


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_an_error_object_with_exit_2_for_every_command(command, tmp_path):
    args = {"predict": ("predict", tmp_path / "no-run", tmp_path / "x.csv"), "report": ("report", tmp_path / "no-run")}
    argv = args.get(command, (command, DIGITS, "--set", "train.lrr=1")
                    + (() if command == "validate" else ("--runs-dir", tmp_path)))
    obj = _json(*argv, code=2)
    assert obj["status"] == "error" and obj["run_dir"] is None and obj["error"]
    if command not in args:
        assert "unknown key train.lrr; did you mean 'train.lr'" in obj["error"] and "dlrecipe keys" in obj["error"]


def test_a_command_line_that_does_not_parse_is_also_an_error_object():
    out = subprocess.run([sys.executable, "-m", "dlrecipe", "train", "--json", "--bogus"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 2 and "No such option: --bogus" in out.stderr
    obj = json.loads(out.stdout)
    VALIDATOR.validate(obj)
    assert obj["status"] == "error" and obj["command"] == "train" and "--bogus" in obj["error"]


def test_train_smoke_lr_find_validate_predict_report_and_a_diverging_smoke(tmp_path):
    ok = _json("train", DIGITS, "--smoke", "--runs-dir", tmp_path, code=0)
    assert ok["status"] == "completed" and ok["metrics"]["test_acc"] == ok["test_acc"]
    assert (tmp_path / os.path.basename(ok["run_dir"]) / "summary.json").is_file()
    diverged = _json("train", DIGITS, "--smoke", "--set", "train.lr=1e8", "--runs-dir", tmp_path, code=1)
    assert diverged["status"] == "diverged" and "NaN" in diverged["reason"]
    plain = runner.invoke(app, ["train", DIGITS, "--smoke", "--set", "train.lr=1e8", "--runs-dir", str(tmp_path), "-q"])
    assert plain.exit_code == 1  # the same code without --json: a CI gate fails on a diverging setup

    found = _json("lr-find", DIGITS, "--lrs", "0.1,0.01", "--runs-dir", tmp_path, code=0)
    assert found["status"] == "ok" and found["metrics"]["recommended_lr"] in (0.1, 0.01)

    valid = _json("validate", DIGITS, code=0)
    assert valid["status"] == "ok" and valid["run_dir"] is None and valid["metrics"]["train_examples"] > 1000

    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "new.npz", x=x[:20].reshape(20, 1, 8, 8), y=y[:20])  # the embedded dataset's own layout
    pred = _json("predict", ok["run_dir"], tmp_path / "new.npz", "--runs-dir", tmp_path, code=0)
    assert pred["rows"] == 20 and pred["run_dir"]

    rep = _json("report", ok["run_dir"], code=0)
    assert rep["status"] == "completed" and rep["curves"] and rep["files"]


def test_sanity_json_pass_and_failed_check_exit_codes(tmp_path):
    passed = _json("sanity", DIGITS, "--only", "labels,init_loss", "--runs-dir", tmp_path, code=0)
    assert passed["status"] == "pass" and passed["verdict"].startswith("PASS")
    failed = _json("sanity", DIGITS, "--set", "model.init=zeros", "--only", "layer_health", "--runs-dir", tmp_path,
                   code=1)
    assert failed["status"] == "fail" and failed["verdict"].startswith("FAIL")


@pytest.mark.slow
def test_search_json_optuna_reads_the_journal_and_tensorboard_reads_the_events(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    obj = _json("search", DIGITS, *SMALL_SEARCH, "--tensorboard", "--runs-dir", tmp_path, code=0)
    run = tmp_path / os.path.basename(obj["run_dir"])
    # optuna-dashboard's loader: Optuna's storage API on the run folder's journal, as it is
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(run / "study.journal")))
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = pd.read_csv(run / "trials.csv")
    assert len(study.trials) == len(trials) == 3
    for t in study.trials:
        row = trials[trials["number"] == t.number].iloc[0]
        assert t.params["train.lr"] == pytest.approx(row["train.lr"]) and t.user_attrs["stage"] == row["stage"]
    # TensorBoard's own reader on every trial's events, against its metrics.csv
    for folder in sorted((run / "trials").iterdir()):
        metrics = pd.read_csv(folder / "metrics.csv")
        acc = EventAccumulator(str(folder))
        acc.Reload()
        assert {"train_loss", "val_loss", "val_acc", "lr"} <= set(acc.Tags()["scalars"])
        events = acc.Scalars("val_loss")
        assert [e.step for e in events] == metrics["epoch"].tolist()
        assert [e.value for e in events] == pytest.approx(metrics["val_loss"].tolist(), rel=1e-6)


def test_train_tensorboard_events_match_metrics_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    obj = _json("train", DIGITS, "--tensorboard", "--set", "train.epochs=3", "--set", "model.hidden=[16]",
                "--runs-dir", tmp_path, code=0)
    run = tmp_path / os.path.basename(obj["run_dir"])
    metrics = pd.read_csv(run / "metrics.csv")
    acc = EventAccumulator(str(run))
    acc.Reload()
    for col in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert [e.value for e in acc.Scalars(col)] == pytest.approx(metrics[col].tolist(), rel=1e-6), col
    assert list(run.glob("events.out.tfevents.*"))  # beside metrics.csv
    plain = _json("train", DIGITS, "--smoke", "--runs-dir", tmp_path / "off", code=0)  # off by default
    assert not list((tmp_path / "off" / os.path.basename(plain["run_dir"])).glob("events.*"))


@pytest.mark.slow
def test_run_json_validates_and_its_trials_write_tensorboard_events(tmp_path):
    obj = _json("run", DIGITS, *SMALL_SEARCH, "--tensorboard", "--runs-dir", tmp_path, code=0)
    assert obj["status"] == "completed" and obj["run_dir"]
    run = tmp_path / os.path.basename(obj["run_dir"])
    with_events = {p.parent for p in run.rglob("events.out.tfevents.*")}
    assert with_events and with_events == {p.parent for p in run.rglob("metrics.csv")}  # beside every metrics.csv


def test_readme_exit_code_table_is_the_contract():
    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", text[text.index("## In pipelines"):], re.MULTILINE))
    assert {int(k): v.replace("`", "") for k, v in rows.items()} == EXIT_CODES


@pytest.mark.slow
def test_readme_ci_workflow_steps_pass(tmp_path):
    """The README's workflow file, its `dlrecipe` and check steps run as a CI runner would (after the install)."""
    text = (ROOT / "README.md").read_text()
    workflow = re.search(r"```yaml\n(.*?)```", text[text.index("## In pipelines"):], re.DOTALL).group(1)
    steps = [m for m in re.findall(r"^      - run: (.*)$", workflow, re.MULTILINE) if not m.startswith("pip install")]
    assert len(steps) >= 4 and all(s.startswith(("dlrecipe ", "python ")) for s in steps)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    bindir = os.path.dirname(shutil.which("dlrecipe") or sys.executable)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for step in steps:
        out = subprocess.run(["bash", "-eo", "pipefail", "-c", step], cwd=tmp_path, capture_output=True, text=True,
                             env=env, timeout=600, check=False)
        assert out.returncode == 0, (step, out.stderr[-2000:])
    for name in ("validate.json", "sanity.json", "smoke.json"):
        obj = json.loads((tmp_path / name).read_text())
        VALIDATOR.validate(obj)
        assert obj["exit_code"] == 0


def test_version_keys_and_help_read_well():
    from dlrecipe import __version__

    assert runner.invoke(app, ["--version"]).stdout.strip() == f"dlrecipe {__version__}"
    keys = runner.invoke(app, ["keys", "train"], env={"COLUMNS": "200"})
    assert keys.exit_code == 0
    shown = {line.split()[0] for line in keys.stdout.splitlines()[3:] if line.strip() and not line.startswith("  ")}
    assert shown == {k for k in SCHEMA if k.startswith("train.")}
    assert "train.tensorboard" in keys.stdout and "bool" in keys.stdout
    assert runner.invoke(app, ["keys", "nope"]).exit_code == 2
    main = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    listed = re.findall(r"^│ (\w[\w-]*) ", main[main.index("Commands"):], re.MULTILINE)
    assert listed[0] == "run" and "keys" in listed
    for command in listed:  # every command: flags read as flags, one spelling each
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
        assert "<bool>" not in text and "--no-" not in text, command
        assert ("--json" in text) == (command in COMMANDS), command


def test_ctrl_c_with_json_is_an_interrupted_object_with_exit_130(tmp_path, monkeypatch):
    from dlrecipe import lr_find as L

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(L, "probe", ctrl_c)
    obj = _json("lr-find", DIGITS, "--runs-dir", tmp_path, code=130)
    (run,) = tmp_path.iterdir()
    assert obj["status"] == "interrupted" and obj["run_dir"] == str(run) and "interrupted" in obj["error"]
