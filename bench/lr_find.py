"""dlrecipe lr-find against the torch-lr-finder package: seconds and suggested LR on the same model and data.

Run with: python bench/lr_find.py [--repeats N] [--threads T] [--cases digits_mlp,mnist1d_mlp]
(needs the bench extra: pip install -e '.[bench]')

For each shipped recipe and each repeat r (seed = r: the initial weights and the batch order change, the data split
does not), in one process and interleaved so that neither tool always runs on a warmer cache:

- dlrecipe lr-find: probes + halving refinement + range test (~500 updates), its `recommended_lr`;
- dlrecipe range test alone (100 updates, 1e-7..10), its `steepest` and `valley` suggestions;
- torch-lr-finder `LRFinder.range_test` (100 updates, 1e-7..10, its defaults otherwise: smooth_f 0.05,
  diverge_th 5) and the suggestion of its `plot(suggest_lr=True)` (steepest gradient, skip 10 start, 5 end).

All get the same model (dlrecipe's factory, same initial weights), the same optimizer (the recipe's, with the same
small weight decay) and the same training tensors and batch size. Times are medians over the repeats; the
suggested LR is the median, with its range over the repeats (how stable the answer is); "val acc" trains the
recipe for 3 epochs at each repeat's suggestion (seed r) and reports the mean best validation accuracy, beside
the best of the lectures' four LRs (0.1, 0.01, 0.001, 0.0001) for reference. Nothing is written.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import time
from pathlib import Path

import torch

from dlrecipe import lr_find as L
from dlrecipe.augment import config as augment_config
from dlrecipe.components import build_optimizer
from dlrecipe.data import load_data
from dlrecipe.loop import fit, loss_function
from dlrecipe.models import build_model
from dlrecipe.recipe import load

ROOT = Path(__file__).resolve().parents[1]
CASES = {"digits_mlp": ROOT / "recipes/digits_mlp.toml", "mnist1d_mlp": ROOT / "recipes/mnist1d_mlp.toml"}
LECTURE_LRS = (1e-1, 1e-2, 1e-3, 1e-4)


def probe_train_table(recipe) -> dict:
    """The [train] table lr-find trains with: the recipe's, with its small weight decay when the recipe has none."""
    tr = dict(recipe.section("train"))
    tr["weight_decay"] = tr["weight_decay"] or L.PROBE_WEIGHT_DECAY
    return tr


def run_dlrecipe(recipe, data) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = L.lr_find(recipe, device="cpu", runs_dir=None, data=data)
    return time.perf_counter() - t0, {"lr-find recommended": res.recommended_lr,
                                      "_updates": res.summary["iterations"]}


def run_dlrecipe_range(recipe, data) -> tuple[float, dict]:
    tr = probe_train_table(recipe)
    t0 = time.perf_counter()
    model = build_model(recipe, data)
    optimizer = build_optimizer(model, dict(tr, lr=L.RANGE_START_LR))
    test = L.range_test(model, optimizer, data, tr, seed=recipe["seed"], batch_size=recipe["data.batch_size"])
    seconds = time.perf_counter() - t0
    return seconds, {"range test steepest": test.suggestions["steepest"],
                     "range test valley": test.suggestions["valley"], "_updates": len(test.losses)}


def run_torch_lr_finder(recipe, data) -> tuple[float, dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.data import DataLoader, TensorDataset
    from torch_lr_finder import LRFinder

    tr = probe_train_table(recipe)
    t0 = time.perf_counter()
    model = build_model(recipe, data)
    optimizer = build_optimizer(model, dict(tr, lr=L.RANGE_START_LR))
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=recipe["data.batch_size"],
                        shuffle=True, generator=torch.Generator().manual_seed(recipe["seed"]))
    finder = LRFinder(model, optimizer, loss_function(recipe.task, tr), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its tqdm, prints
        finder.range_test(loader, start_lr=L.RANGE_START_LR, end_lr=L.RANGE_END_LR, num_iter=L.RANGE_ITERATIONS)
        fig, ax = plt.subplots()
        _, suggestion = finder.plot(ax=ax, suggest_lr=True)
        plt.close(fig)
    finder.reset()  # restores the model and the optimizer, as dlrecipe's range test does
    seconds = time.perf_counter() - t0
    return seconds, {"torch-lr-finder steepest": float(suggestion), "_updates": len(finder.history["lr"])}


def val_acc(recipe, data, lr: float | None) -> float:
    """Best validation accuracy of a 3-epoch run of the recipe at `lr` (NaN when there is no suggestion)."""
    if lr is None or not math.isfinite(lr):
        return math.nan
    model = build_model(recipe, data)
    d = recipe.section("data")  # the recipe as `dlrecipe train` runs it, augmentation (digits: mixup) included
    result = fit(model, data, dict(recipe.section("train"), lr=lr, epochs=3), seed=recipe["seed"],
                 batch_size=d["batch_size"], augment=d["augment"], aug_cfg=augment_config(d))
    accs = [h["val_acc"] for h in result.history if math.isfinite(h["val_acc"])]
    return max(accs, default=0.0)


def bench_case(name: str, path: Path, repeats: int) -> list[dict]:
    base = load(path)
    data = load_data(base)
    tools = {"dlrecipe lr-find": run_dlrecipe, "dlrecipe range test": run_dlrecipe_range,
             "torch-lr-finder": run_torch_lr_finder}
    times: dict[str, list[float]] = {t: [] for t in tools}
    updates: dict[str, list[int]] = {t: [] for t in tools}
    suggestions: dict[str, list[tuple[int, float | None]]] = {}
    owner: dict[str, str] = {}
    run_one = lambda tool, recipe: tools[tool](recipe, data)
    for r in range(repeats):
        recipe = base.with_values({"seed": base["seed"] + r})
        order = list(tools) if r % 2 == 0 else list(reversed(tools))  # alternate which tool runs first
        for tool in order:
            seconds, found = run_one(tool, recipe)
            times[tool].append(seconds)
            updates[tool].append(found.pop("_updates"))
            for rule, lr in found.items():
                suggestions.setdefault(rule, []).append((recipe["seed"], lr))
                owner[rule] = tool
    rows = []
    for rule, pairs in suggestions.items():
        lrs = [lr for _, lr in pairs if lr is not None]
        accs = [val_acc(base.with_values({"seed": seed}), data, lr) for seed, lr in pairs]
        tool = owner[rule]
        rows.append({"case": name, "method": rule, "updates": int(statistics.median(updates[tool])),
                     "seconds": statistics.median(times[tool]),
                     "lr": math.exp(statistics.median([math.log(v) for v in lrs])) if lrs else None,
                     "lr_min": min(lrs, default=None), "lr_max": max(lrs, default=None),
                     "val_acc": statistics.fmean(accs)})
    lecture = {lr: statistics.fmean(val_acc(base.with_values({"seed": base["seed"] + r}), data, lr)
                                    for r in range(repeats)) for lr in LECTURE_LRS}
    best = max(lecture, key=lecture.get)
    rows.append({"case": name, "method": "best lecture LR (reference)", "updates": None, "seconds": None,
                 "lr": best, "lr_min": best, "lr_max": best, "val_acc": lecture[best]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="seeds per case (medians over them)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny models, steadier timings)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}: allowed {', '.join(CASES)}")
    rows = [row for name in names for row in bench_case(name, CASES[name], args.repeats)]

    fmt = lambda v, spec: format(v, spec) if v is not None else format("-", spec.split(".")[0])
    header = f"{'case':<12} {'method':<30} {'updates':>7} {'seconds':>8} {'suggested LR':>12} " \
             f"{'min..max over seeds':>21} {'3-epoch val acc':>15}"
    print(f"lr-find bench: {args.repeats} repeats (seeds), torch {torch.__version__}, {args.threads} thread(s); "
          f"times are medians")
    print(header)
    print("-" * len(header))
    for r in rows:
        spread = "-" if r["lr_min"] is None else f"{r['lr_min']:.3g}..{r['lr_max']:.3g}"
        print(f"{r['case']:<12} {r['method']:<30} {fmt(r['updates'], '>7')} {fmt(r['seconds'], '>8.3f')} "
              f"{fmt(r['lr'], '>12.3g')} {spread:>21} {r['val_acc']:>15.4f}")


if __name__ == "__main__":
    main()
