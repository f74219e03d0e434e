"""Trials per minute: `dlrecipe search` against a hand-written Optuna + plain PyTorch loop, and --jobs 2 against 1.

Run: python bench/search_throughput.py [--trials 24] [--epochs 3] [--hidden 512] [--batch-size 16] [--repeats 3]

Every measurement runs the same trials: digits, an MLP hidden-hidden (ReLU, no dropout, no mixup) with SGD +
momentum 0.9, LR
log-uniform over [0.005, 0.5] and weight decay from {0, 1e-5, 1e-4}, drawn by Optuna's RandomSampler, `--epochs`
epochs each, no fine stage, no early stopping or LR halving. The hand-written loop runs exactly the parameters
dlrecipe's seeded sampler drew (enqueued into its study); both stop a trial at its first NaN/Inf loss. The default
model is wider than recipes/digits_mlp.toml's so that a trial takes a few tenths of a second (real trials take
seconds or more; with 0.03 s trials only start-up costs would be measured). The pairs are measured in the same
run, one after the other (with --repeats, interleaved, median kept).
dlrecipe's time is the whole command: run folder, journal storage, per-trial CSV logs and snapshots, the final
test and the plots; the hand loop keeps nothing but the best validation loss.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import optuna
import torch
from torch import nn

SPACE = '{"train.lr" = {log_uniform = [0.005, 0.5]}, "train.weight_decay" = {choice = [0.0, 1e-5, 1e-4]}}'


def dlrecipe_search(trials: int, epochs: int, jobs: int, hidden: int, batch_size: int) -> tuple[float, list[dict]]:
    """Seconds for `dlrecipe search recipes/digits_mlp.toml` with `trials` coarse trials, and their parameters."""
    from dlrecipe.recipe import load
    from dlrecipe.search import search

    recipe = load("recipes/digits_mlp.toml", [f"search.space={SPACE}", f"search.trials={trials}",
                                              f"search.coarse_epochs={epochs}", "search.fine_trials=0",
                                              f"model.hidden=[{hidden}, {hidden}]", f"data.batch_size={batch_size}",
                                              "train.patience=0", "train.lr_halving=0",
                                              "model.dropout=0.0", "data.augment=[]"])  # as the hand loop
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        result = search(recipe, runs_dir=runs, jobs=jobs, quiet=True)
        seconds = time.perf_counter() - t0
    keys = ("train.lr", "train.weight_decay")
    return seconds, [{k: r[k] for k in keys} for r in sorted(result.trials, key=lambda r: r["number"])]


def hand_written(params: list[dict], epochs: int, hidden: int, batch_size: int) -> float:
    """Seconds for the same trials written directly against Optuna and PyTorch (what dlrecipe replaces)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    t0 = time.perf_counter()
    x, y = load_digits(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, train_size=0.7, stratify=y, random_state=0)
    x_va, _, y_va, _ = train_test_split(x_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=0)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
    t = lambda a: torch.as_tensor((a - mean) / std, dtype=torch.float32)
    x_tr, x_va = t(x_tr), t(x_va)
    y_tr, y_va = torch.as_tensor(y_tr), torch.as_tensor(y_va)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("train.lr", 0.005, 0.5, log=True)
        wd = trial.suggest_categorical("train.weight_decay", [0.0, 1e-5, 1e-4])
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                              nn.Linear(hidden, 10))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        loss_fn, gen, best = nn.CrossEntropyLoss(), torch.Generator().manual_seed(0), float("inf")
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(x_tr), generator=gen).split(batch_size):
                opt.zero_grad()
                loss = loss_fn(model(x_tr[idx]), y_tr[idx])
                if not torch.isfinite(loss):
                    return float("nan")  # diverged: stop at once, as dlrecipe does
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = float(loss_fn(model(x_va), y_va))
            best = min(best, val) if np.isfinite(val) else best
        return best if np.isfinite(best) else float("nan")

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # (a NaN trial is a warning)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for p in params:  # the same trials dlrecipe ran
        study.enqueue_trial(p)
    study.optimize(objective, n_trials=len(params))
    return time.perf_counter() - t0


def warm_up() -> None:
    """One-time costs both sides would pay first: sklearn's import, torch's first optimizer (imports dynamo)."""
    from sklearn.datasets import load_digits

    load_digits()
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()
    warm_up()
    runs = {"hand": [], "jobs1": [], "jobs2": []}
    for _ in range(a.repeats):
        seconds, params = dlrecipe_search(a.trials, a.epochs, 1, a.hidden, a.batch_size)
        runs["jobs1"].append(seconds)
        runs["hand"].append(hand_written(params, a.epochs, a.hidden, a.batch_size))
        runs["jobs2"].append(dlrecipe_search(a.trials, a.epochs, 2, a.hidden, a.batch_size)[0])
    per_min = {k: 60 * a.trials / statistics.median(v) for k, v in runs.items()}
    print(f"{a.trials} trials x {a.epochs} epochs on digits, MLP {a.hidden}-{a.hidden}, batch {a.batch_size}, "
          f"torch threads {torch.get_num_threads()}, median of {a.repeats} (seconds: "
          + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in runs.items()) + ")")
    print(f"| {'comparison':<42} | {'A trials/min':>12} | {'B trials/min':>12} | {'A / B':>6} |")
    print(f"|{'-' * 44}|{'-' * 14}|{'-' * 14}|{'-' * 8}|")
    for label, x, y in (("A dlrecipe search --jobs 1, B hand-written", "jobs1", "hand"),
                        ("A dlrecipe search --jobs 2, B --jobs 1", "jobs2", "jobs1")):
        print(f"| {label:<42} | {per_min[x]:>12.1f} | {per_min[y]:>12.1f} | {per_min[x] / per_min[y]:>6.2f} |")


if __name__ == "__main__":
    main()
