"""Shared fixtures: small recipes built in code, CLI runner, a CSV file for the CSV recipe."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


def small_recipe(**values):
    """A validated iris MLP recipe with dotted-key overrides: quick to train, 3 classes."""
    from dlrecipe.recipe import validate

    flat = {"name": "t", "data.source": "iris", "data.batch_size": 16, "model.hidden": [16],
            "train.lr": 0.05, "train.epochs": 5}
    flat.update(values)
    return validate(flat)


def write_table_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    """A separable 3-class table with string labels and 4 numeric features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)) + y[:, None] * 2.0
    df = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    df["label"] = np.array(["cat", "dog", "eel"])[y]
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def one_thread():
    """Tiny models run faster on one torch thread, and a busy 2-core machine cannot slow them by oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ctrl_c_in_training(monkeypatch, n: int) -> None:
    """Ctrl-C (KeyboardInterrupt) as the n-th call of train_in starts (a search trial); later calls train normally."""
    import dlrecipe.train as T

    real, calls = T.train_in, {"n": 0}

    def train_in(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "train_in", train_in)


@pytest.fixture
def console_80(monkeypatch):
    """An 80-column terminal for table-layout tests, whatever COLUMNS the suite was started with (rich reads it
    once, when dlrecipe.display is imported)."""
    from dlrecipe.display import console

    monkeypatch.setattr(console, "_width", 80)


@pytest.fixture
def table_csv(tmp_path) -> Path:
    return write_table_csv(tmp_path / "table.csv")


def recipe_overrides(path: Path, csv_path: Path) -> list[str]:
    """--set options a shipped recipe needs to run here (the CSV recipe needs a file)."""
    if path.stem == "csv_table":
        return [f"data.source={str(csv_path)!r}", "data.target='label'"]
    return []


def sigkill_after_trials(command: list[str], runs: Path, trials_csv: str, complete: int,
                         timeout: float = 180) -> pd.DataFrame:
    """Start `python -m dlrecipe COMMAND` (one torch thread), SIGKILL it once the trials.csv matched by the glob
    `trials_csv` under runs has `complete` complete rows, and return those rows."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "dlrecipe", *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, before = time.monotonic() + timeout, None
    while time.monotonic() < deadline and proc.poll() is None and before is None:
        found = list(runs.glob(trials_csv))
        rows = pd.read_csv(found[0]) if found else None
        if rows is not None and (rows.state == "complete").sum() >= complete:
            before = rows[rows.state == "complete"]
        else:
            time.sleep(0.05)  # polling the subprocess's progress, not waiting for a fixed time
    assert proc.poll() is None, f"it ended before it could be killed: {proc.stderr.read()!r}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return before

