"""Soak: many small trains and searches back to back in this process, each round beside a `dlrecipe train`
subprocess, every other search with 2 worker processes (concurrent on 2 cores). Peak and current RSS must not grow from one round to the next, and
no file handle or worker process may be left behind. Bounded in time: rounds stop after SOAK_S seconds."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import small_recipe

SOAK_S = 45          # rounds start until this many seconds have passed (at least MIN_ROUNDS)
MIN_ROUNDS, MAX_ROUNDS = 4, 20
GROWTH_MB = 25       # allowed growth of peak and current RSS from round 2 to the last (allocator noise)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _children() -> list[str]:
    """This process's child processes (command lines), leaving out multiprocessing's resource tracker: one per
    session, started by the first spawned worker and kept on purpose."""
    kids = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split() if (task / "children").exists() else []:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # ended meanwhile
            if "resource_tracker" not in cmd:
                kids.append(cmd)
    return kids


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_many_runs_back_to_back_and_concurrently_leak_nothing(tmp_path, one_thread):
    from dlrecipe.search import search
    from dlrecipe.train import train

    recipe = small_recipe(**{"train.epochs": 3, "search.trials": 3, "search.coarse_epochs": 1,
                             "search.fine_trials": 1, "search.fine_epochs": 1})
    (tmp_path / "r.toml").write_text(recipe.to_toml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rounds, t0 = [], time.monotonic()
    while len(rounds) < MAX_ROUNDS and (len(rounds) < MIN_ROUNDS or time.monotonic() - t0 < SOAK_S):
        beside = subprocess.Popen([sys.executable, "-m", "dlrecipe", "train", str(tmp_path / "r.toml"), "-q",
                                   "--runs-dir", str(tmp_path / "beside")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env)
        assert train(recipe, device="cpu", runs_dir=tmp_path / "runs").summary["status"] == "completed"
        res = search(recipe, device="cpu", runs_dir=tmp_path / "runs", jobs=2 if len(rounds) % 2 else 1)
        assert res.summary["status"] == "completed"
        _, errs = beside.communicate(timeout=300)
        assert beside.returncode == 0, errs
        gc.collect()
        rounds.append({"peak_mb": _status_kb("VmHWM") / 1024, "rss_mb": _status_kb("VmRSS") / 1024,
                       "fds": _fds(), "children": _children(), "s": time.monotonic() - t0})
    seconds = time.monotonic() - t0
    base, last = rounds[1], rounds[-1]
    print(f"\nsoak: {len(rounds)} rounds (train + search, 2 workers every other round, beside a train subprocess) in {seconds:.0f} s; "
          f"peak RSS {base['peak_mb']:.1f} -> {last['peak_mb']:.1f} MB, RSS {base['rss_mb']:.1f} -> "
          f"{last['rss_mb']:.1f} MB from round 2 to {len(rounds)}; fds {[r['fds'] for r in rounds]}; "
          f"children left {[len(r['children']) for r in rounds]}")
    assert all(r["children"] == [] for r in rounds), rounds  # every worker process reaped
    # the same open files after every round from the second (the first 2-worker search opens the resource
    # tracker's pipe, kept for the session)
    assert len({r["fds"] for r in rounds[1:]}) == 1
    assert last["peak_mb"] - base["peak_mb"] < GROWTH_MB
    assert last["rss_mb"] - base["rss_mb"] < GROWTH_MB
