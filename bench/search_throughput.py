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

Population training (issue 15): the same trials with search.population = 1 (one at a time, as before) and 0 (auto:
trials fused into one model), for three models: the benchmark's MLP above, a small MLP (--small-hidden, 64 wide:
the size where per-step overhead dominates) and recipes/mnist1d_cnn.toml's CNN (--cnn-trials trials). The hand loop
trains each model with plain PyTorch the same way (the CNN: conv-BN-ReLU-maxpool blocks, Adam).
--jobs (issue 15): the fused search with --jobs 1 (this process alone), --jobs 2 (the leader and one more process
when the work left pays for its start-up) and the default, --jobs auto (dlrecipe.search.jobs); --jobs-only measures
just these three.
Run with OMP_NUM_THREADS=1 (torch's threads are then 1, as dlrecipe's thread policy gives these models) and
without it (torch's default), and quote which.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import optuna
import torch
from torch import nn

from dlrecipe.allocator import configure as configure_allocator

SPACE = '{"train.lr" = {log_uniform = [0.005, 0.5]}, "train.weight_decay" = {choice = [0.0, 1e-5, 1e-4]}}'
STAGE = [0.0]  # the last dlrecipe_search's coarse-stage seconds
PROCESSES = [1]  # the last dlrecipe_search's worker processes (the leader and those --jobs started)
DEVICE = ["cpu"]  # --device: where both sides train (the hand loops' tensors and models too)
CNN_SPACE = '{"train.lr" = {log_uniform = [3e-4, 3e-2]}, "train.weight_decay" = {choice = [0.0, 1e-5, 1e-4]}}'


def dlrecipe_search(trials: int, epochs: int, jobs: int | str, hidden: int, batch_size: int, population: int = 0,
                    cnn: bool = False) -> tuple[float, list[dict]]:
    """Seconds for `dlrecipe search recipes/digits_mlp.toml` (cnn: recipes/mnist1d_cnn.toml, its own model and batch
    size) with `trials` coarse trials, and their parameters."""
    from dlrecipe.recipe import load
    from dlrecipe.search import search

    common = [f"search.space={SPACE}", f"search.trials={trials}", f"search.coarse_epochs={epochs}",
              "search.fine_trials=0", "train.patience=0", "train.lr_halving=0", f"search.population={population}"]
    if cnn:
        recipe = load("recipes/mnist1d_cnn.toml", [*common, f"search.space={CNN_SPACE}"])
    else:
        recipe = load("recipes/digits_mlp.toml", [*common, f"model.hidden=[{hidden}, {hidden}]",
                                                  f"data.batch_size={batch_size}", "model.dropout=0.0",
                                                  "data.augment=[]"])  # as the hand loop
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        result = search(recipe, runs_dir=runs, jobs=jobs, quiet=True, device=DEVICE[0])
        seconds = time.perf_counter() - t0
        study = optuna.load_study(study_name=result.summary["study"], storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(result.run_dir / "study.journal"))))
        # the coarse stage: from the first trial's start to the last one's end (no set-up, final test or plots)
        stage = (max(t.datetime_complete for t in study.trials) - min(t.datetime_start for t in study.trials))
    STAGE[-1] = stage.total_seconds()
    PROCESSES[-1] = (result.summary.get("jobs") or {}).get("processes", jobs)
    keys = ("train.lr", "train.weight_decay")
    assert result.summary["trials"]["complete"] + result.summary["trials"]["diverged"] == trials, result.summary
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
    dev = DEVICE[0]
    x_tr, x_va = t(x_tr).to(dev), t(x_va).to(dev)
    y_tr, y_va = torch.as_tensor(y_tr).to(dev), torch.as_tensor(y_va).to(dev)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("train.lr", 0.005, 0.5, log=True)
        wd = trial.suggest_categorical("train.weight_decay", [0.0, 1e-5, 1e-4])
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                              nn.Linear(hidden, 10)).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        loss_fn, gen, best = nn.CrossEntropyLoss(), torch.Generator().manual_seed(0), float("inf")
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(x_tr), generator=gen).to(dev).split(batch_size):
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


def hand_written_cnn(params: list[dict], epochs: int) -> float:
    """recipes/mnist1d_cnn.toml's CNN (conv 32-64-64, kernel 5, BN, ReLU, max-pool 2; head 128), Adam, batch 100,
    written directly against Optuna and PyTorch, on the same tensors dlrecipe trains on."""
    from dlrecipe.data import load_data
    from dlrecipe.recipe import load

    t0 = time.perf_counter()
    data = load_data(load("recipes/mnist1d_cnn.toml"), DEVICE[0])
    x_tr, y_tr, x_va, y_va = data.x_train, data.y_train, data.x_val, data.y_val

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("train.lr", 3e-4, 3e-2, log=True)
        wd = trial.suggest_categorical("train.weight_decay", [0.0, 1e-5, 1e-4])
        torch.manual_seed(0)
        blocks, c = [], 1
        for out in (32, 64, 64):
            blocks += [nn.Conv1d(c, out, 5, padding=2, bias=False), nn.BatchNorm1d(out, momentum=0.01), nn.ReLU(),
                       nn.MaxPool1d(2)]
            c = out
        model = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(64 * 5, 128), nn.ReLU(), nn.Linear(128, 10)).to(
            DEVICE[0])
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
        loss_fn, gen, best = nn.CrossEntropyLoss(), torch.Generator().manual_seed(0), float("inf")
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(x_tr), generator=gen).to(DEVICE[0]).split(100):
                opt.zero_grad()
                loss = loss_fn(model(x_tr[idx]), y_tr[idx])
                if not torch.isfinite(loss):
                    return float("nan")
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = float(loss_fn(model(x_va), y_va))
            best = min(best, val) if np.isfinite(val) else best
        return best if np.isfinite(best) else float("nan")

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for p in params:
        study.enqueue_trial(p)
    study.optimize(objective, n_trials=len(params))
    return time.perf_counter() - t0


def warm_up() -> None:
    """One-time costs both sides would pay first: sklearn's import, torch's first optimizer (imports dynamo); and
    the malloc settings every dlrecipe command makes (dlrecipe.allocator), for every variant, the hand loop too."""
    from sklearn.datasets import load_digits

    configure_allocator()
    load_digits()
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--small-hidden", type=int, default=64)
    ap.add_argument("--cnn-trials", type=int, default=12)
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: mlp, small, cnn")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where both sides train")
    ap.add_argument("--no-jobs2", action="store_true", help="leave out --jobs 2 (on a GPU: one device, one process)")
    ap.add_argument("--jobs-only", action="store_true", help="only --jobs 1, --jobs 2 and the default (--jobs auto)")
    a = ap.parse_args()
    DEVICE[0] = a.device
    skip = set(a.skip.split(",")) - {""}
    warm_up()
    t, e = a.trials, a.epochs
    parts = {  # name -> (label, trials, runner per variant)
        "mlp": (f"digits MLP {a.hidden}-{a.hidden}, batch {a.batch_size}", t, {
            "hand": lambda p: hand_written(p, e, a.hidden, a.batch_size),
            "one": lambda: dlrecipe_search(t, e, 1, a.hidden, a.batch_size, population=1),
            "fused": lambda: dlrecipe_search(t, e, 1, a.hidden, a.batch_size),
            "jobs2": lambda: dlrecipe_search(t, e, 2, a.hidden, a.batch_size),
            "auto": lambda: dlrecipe_search(t, e, "auto", a.hidden, a.batch_size)}),
        "small": (f"digits MLP {a.small_hidden}-{a.small_hidden}, batch {a.batch_size}", t, {
            "hand": lambda p: hand_written(p, e, a.small_hidden, a.batch_size),
            "one": lambda: dlrecipe_search(t, e, 1, a.small_hidden, a.batch_size, population=1),
            "fused": lambda: dlrecipe_search(t, e, 1, a.small_hidden, a.batch_size),
            "jobs2": lambda: dlrecipe_search(t, e, 2, a.small_hidden, a.batch_size),
            "auto": lambda: dlrecipe_search(t, e, "auto", a.small_hidden, a.batch_size)}),
        "cnn": ("MNIST-1D CNN (mnist1d_cnn.toml)", a.cnn_trials, {
            "hand": lambda p: hand_written_cnn(p, e),
            "one": lambda: dlrecipe_search(a.cnn_trials, e, 1, 0, 0, population=1, cnn=True),
            "fused": lambda: dlrecipe_search(a.cnn_trials, e, 1, 0, 0, cnn=True),
            "jobs2": lambda: dlrecipe_search(a.cnn_trials, e, 2, 0, 0, cnn=True),
            "auto": lambda: dlrecipe_search(a.cnn_trials, e, "auto", 0, 0, cnn=True)}),
    }
    print("command: the whole dlrecipe search (run folder, storage, logs, final test, plots); coarse stage: first "
          "trial's start to last trial's end")
    print(f"{e} epochs per trial, torch threads {torch.get_num_threads()} (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores, device {a.device}, median of {a.repeats}; glibc malloc thresholds set (dlrecipe."
          f"allocator) for every variant: {configure_allocator()}")
    print(f"| {'model':<40} | {'comparison (A / B)':<44} | {'A trials/min':>12} | {'B trials/min':>12} | {'A / B':>6} |")
    print(f"|{'-' * 42}|{'-' * 46}|{'-' * 14}|{'-' * 14}|{'-' * 8}|")
    for name, (label, n, run) in parts.items():
        if name in skip:
            continue
        times: dict[str, list[float]] = {k: [] for k in [*run, *(f"{v}_stage" for v in run)]}
        procs: dict[str, list[int]] = {}
        for _ in range(a.repeats):  # interleaved: each repeat measures every variant once, in the same minute
            if not a.jobs_only:
                seconds, params = run["one"]()
                times["one"].append(seconds)
                times["one_stage"].append(STAGE[-1])
                times["hand"].append(run["hand"](params))
            for k in ("fused",) if a.no_jobs2 else ("fused", "jobs2", "auto"):
                times[k].append(run[k]()[0])
                times[f"{k}_stage"].append(STAGE[-1])
                procs.setdefault(k, []).append(PROCESSES[-1])
        per_min = {k: 60 * n / statistics.median(v) for k, v in times.items() if v}
        for text, x, y in (("coarse stage, populations (auto) / hand", "fused_stage", "hand"),
                           ("coarse stage, one at a time / hand", "one_stage", "hand"),
                           ("coarse stage, --jobs 2 / --jobs 1", "jobs2_stage", "fused_stage"),
                           ("command, populations (auto) / hand", "fused", "hand"),
                           ("command, one at a time / hand", "one", "hand"),
                           ("command, populations / one at a time", "fused", "one"),
                           ("command, --jobs 2 / --jobs 1", "jobs2", "fused"),
                           ("coarse stage, default (auto) / --jobs 1", "auto_stage", "fused_stage"),
                           ("coarse stage, default (auto) / --jobs 2", "auto_stage", "jobs2_stage"),
                           ("command, default (auto) / --jobs 1", "auto", "fused"),
                           ("command, default (auto) / --jobs 2", "auto", "jobs2")):
            if x not in per_min or y not in per_min:
                continue
            print(f"| {label:<40} | {text:<44} | {per_min[x]:>12.1f} | {per_min[y]:>12.1f} | "
                  f"{per_min[x] / per_min[y]:>6.2f} |", flush=True)
        print(f"  ({label}: worker processes per repeat: "
              + ", ".join(f"{k} {procs[k]}" for k in procs) + ")", flush=True)


if __name__ == "__main__":
    main()
