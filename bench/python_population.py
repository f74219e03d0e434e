"""Trials per minute of a python factory's model (model.kind = "python"): vmapped populations against one at a time.

Run (from the repository root): OMP_NUM_THREADS=1 python bench/python_population.py [--trials 24] [--epochs 3]
    [--hidden 64] [--batch-size 16] [--repeats 3]

The trials are bench/search_throughput.py's (digits, SGD + momentum 0.9, LR log-uniform over [0.005, 0.5], weight
decay from {0, 1e-5, 1e-4}, Optuna's RandomSampler, no fine stage, no early stopping), for an MLP hidden-hidden
(ReLU) written as the user's own factory (`mlp` below, an nn.Sequential) and as a custom module with a skip
connection (`skip`, not an nn.Sequential), each with search.population = 1 (one at a time) and 0 (auto: the coarse
trials vmapped, dlrecipe/search/vmapped.py). For reference, in the same run: dlrecipe's built-in mlp kind of the
same widths fused by FusedNet (its own init, so its trials are not the same ones), and the hand-written Optuna +
PyTorch loop on the python MLP's trials. Ratios are measured in the same run (with --repeats, interleaved, median).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from search_throughput import SPACE, hand_written, warm_up  # the same trials and hand loop

HERE = "bench/python_population.py"  # the factories below, as model.factory names them (from the repository root)


def mlp(input_shape, num_outputs, width: int = 64):
    n = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, num_outputs))


class Skip(nn.Module):
    """A custom forward: the second hidden layer added to the first (not an nn.Sequential: FusedNet cannot fuse it)."""

    def __init__(self, n_in: int, n_out: int, width: int):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(n_in, width), nn.Linear(width, width), nn.Linear(width, n_out)

    def forward(self, x):
        h = torch.relu(self.a(x.flatten(1)))
        return self.out(h + torch.relu(self.b(h)))


def skip(input_shape, num_outputs, width: int = 64):
    return Skip(math.prod(input_shape), num_outputs, width)


def run_search(trials: int, epochs: int, hidden: int, batch_size: int, population: int,
               factory: str | None) -> tuple[float, float, list[dict], list[str]]:
    """(command seconds, coarse-stage seconds, the trials' parameters, the search's warnings)."""
    from dlrecipe.recipe import load
    from dlrecipe.search import search

    model = (['model.kind="python"', f'model.factory="{HERE}:{factory}"', f"model.width={hidden}"] if factory
             else [f"model.hidden=[{hidden}, {hidden}]"])
    recipe = load("recipes/digits_mlp.toml", [
        f"search.space={SPACE}", f"search.trials={trials}", f"search.coarse_epochs={epochs}", "search.fine_trials=0",
        "train.patience=0", "train.lr_halving=0", f"search.population={population}", f"data.batch_size={batch_size}",
        "model.dropout=0.0", "data.augment=[]", *model])
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        result = search(recipe, runs_dir=runs, quiet=True)
        seconds = time.perf_counter() - t0
        study = optuna.load_study(study_name=result.summary["study"], storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(result.run_dir / "study.journal"))))
        stage = max(t.datetime_complete for t in study.trials) - min(t.datetime_start for t in study.trials)
    assert result.summary["trials"]["complete"] + result.summary["trials"]["diverged"] == trials, result.summary
    params = [{k: r[k] for k in ("train.lr", "train.weight_decay")} for r in sorted(result.trials,
                                                                                  key=lambda r: r["number"])]
    return seconds, stage.total_seconds(), params, list(result.summary.get("warnings", []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    warm_up()
    run_search(4, 1, a.hidden, a.batch_size, 0, "mlp")  # first-use costs (imports, vmap's set-up) before timing
    t, e, h, b = a.trials, a.epochs, a.hidden, a.batch_size
    variants = {
        "mlp one": lambda: run_search(t, e, h, b, 1, "mlp"), "mlp vmap": lambda: run_search(t, e, h, b, 0, "mlp"),
        "skip one": lambda: run_search(t, e, h, b, 1, "skip"), "skip vmap": lambda: run_search(t, e, h, b, 0, "skip"),
        "built-in fused": lambda: run_search(t, e, h, b, 0, None)}
    stage: dict[str, list[float]] = {k: [] for k in [*variants, "hand"]}
    command: dict[str, list[float]] = {k: [] for k in variants}
    notes: set[str] = set()
    for _ in range(a.repeats):  # interleaved: each repeat measures every variant once, in the same minute
        for name, run in variants.items():
            seconds, coarse, params, warnings = run()
            command[name].append(seconds)
            stage[name].append(coarse)
            notes.update(w for w in warnings if w.startswith("population:"))
            if name == "mlp one":
                stage["hand"].append(hand_written(params, e, h, b))
    print(f"digits, {t} trials x {e} epochs, MLP {h}-{h}, batch {b}; torch threads {torch.get_num_threads()} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores, median of {a.repeats}; coarse stage: first trial's start to last one's end")
    per_min = {k: 60 * t / statistics.median(v) for k, v in stage.items()}
    cmd_min = {k: 60 * t / statistics.median(v) for k, v in command.items()}
    print(f"| {'comparison (A / B)':<55} | {'A trials/min':>12} | {'B trials/min':>12} | {'A / B':>6} |")
    print(f"|{'-' * 57}|{'-' * 14}|{'-' * 14}|{'-' * 8}|")
    for text, x, y, table in (
            ("coarse stage, python MLP: vmapped / one at a time", "mlp vmap", "mlp one", per_min),
            ("coarse stage, python skip net: vmapped / one at a time", "skip vmap", "skip one", per_min),
            ("coarse stage, python MLP vmapped / hand loop", "mlp vmap", "hand", per_min),
            ("coarse stage, python MLP one at a time / hand loop", "mlp one", "hand", per_min),
            ("coarse stage, built-in mlp fused / python MLP vmapped", "built-in fused", "mlp vmap", per_min),
            ("command, python MLP: vmapped / one at a time", "mlp vmap", "mlp one", cmd_min)):
        print(f"| {text:<55} | {table[x]:>12.1f} | {table[y]:>12.1f} | {table[x] / table[y]:>6.2f} |", flush=True)
    for n in sorted(notes):
        print("note:", n)


if __name__ == "__main__":
    main()
