"""Torch CPU threads for the shipped recipes: seconds per epoch with 1 thread against torch's default, on an idle
machine and on one where another process keeps a core busy (a CI runner or a laptop doing something else).

Run with: python bench/threads.py [--repeats 3] [--epochs 3]

Both settings run the same recipe, model, data, batch order and epochs in one process (interleaved, medians kept);
"busy" starts a second process that spins on one core for the duration of the measurement. torch's default is one
intra-op thread per physical core; OpenMP threads wait for each other at every operator, so when one of them is
descheduled by another process, every small operator waits for it.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path

import torch

from dlrecipe import recipe as R
from dlrecipe.data import load_data
from dlrecipe.loop import fit
from dlrecipe.models import build_model

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["digits_mlp", "mnist1d_mlp", "mnist1d_cnn"]
NO_STOPPING = ["train.patience=0", "train.lr_halving=0", "train.schedule='plateau'"]


def seconds_per_epoch(name: str, threads: int, epochs: int) -> float:
    recipe = R.load(ROOT / "recipes" / f"{name}.toml", [*NO_STOPPING, f"train.epochs={epochs}"])
    data = load_data(recipe, "cpu")
    model = build_model(recipe, data)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    fit(model, data, recipe.section("train"), batch_size=recipe["data.batch_size"], augment=recipe["data.augment"])
    return (time.perf_counter() - t0) / epochs


def spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def measure(default: int, repeats: int, epochs: int) -> dict[tuple[str, int], float]:
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for name in RECIPES:
            for threads in (1, default) if _ % 2 == 0 else (default, 1):  # alternate which goes first
                times.setdefault((name, threads), []).append(seconds_per_epoch(name, threads, epochs))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    default = torch.get_num_threads()
    for name in RECIPES:  # warm-up: data generation caches, first-call costs
        seconds_per_epoch(name, 1, 1)
    idle = measure(default, a.repeats, a.epochs)
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    hog.start()
    try:
        busy = measure(default, a.repeats, a.epochs)
    finally:
        stop.set()
        hog.join()
    print(f"seconds per epoch, median of {a.repeats} x {a.epochs} epochs; torch default threads = {default}")
    print(f"| {'recipe':<12} | {'machine':<7} | {'1 thread':>9} | {f'{default} threads':>10} | {'default / 1':>11} |")
    print(f"|{'-' * 14}|{'-' * 9}|{'-' * 11}|{'-' * 12}|{'-' * 13}|")
    for label, t in (("idle", idle), ("busy", busy)):
        for name in RECIPES:
            one, many = t[(name, 1)], t[(name, default)]
            print(f"| {name:<12} | {label:<7} | {one:>9.3f} | {many:>10.3f} | {many / one:>11.2f} |")


if __name__ == "__main__":
    main()
