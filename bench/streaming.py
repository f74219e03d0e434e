"""Data larger than memory: peak memory and epoch time of streamed training (data.in_memory = false) as the
on-disk dataset grows 10x, against in-memory training on the same images.

    python bench/streaming.py                     # 2,000 and 20,000 PNGs of 3x32x32, 2 epochs each
    python bench/streaming.py --base 500 --repeats 3

Each measurement runs in a fresh process (peak RSS is per process: `ru_maxrss` of the trainer, and of its
DataLoader workers separately) and trains 2 epochs: "fit s" is the whole fit (with the workers' start and
shutdown), "epoch s" the second epoch's own time (training and validation pass). Prints a table and two ratios: the streamed trainer's peak RSS at 10x over 1x
(goal <= 1.2: memory stays flat) and the streamed epoch time over the in-memory one at 1x.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from dlrecipe.data import load_data
from dlrecipe.loop import fit
from dlrecipe.models import build_model
from dlrecipe.recipe import validate
folder, in_memory, workers = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
r = validate({"data.source": folder, "data.format": "imagefolder", "data.in_memory": in_memory,
              "data.workers": workers, "data.preprocess": "per_channel", "model.hidden": [64],
              "data.batch_size": 128, "train.epochs": 2, "train.eval_batch_size": 512, "train.patience": 0})
t0 = time.perf_counter()
d = load_data(r)
load_s = time.perf_counter() - t0
m = build_model(r, d)
t0 = time.perf_counter()
res = fit(m, d, r.section("train"), batch_size=128)
fit_s = time.perf_counter() - t0
print(json.dumps({"load_s": load_s, "fit_s": fit_s, "epoch_s": res.history[-1]["seconds"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "train_loss": res.history[0]["train_loss"]}))
"""


def make_folder(root: Path, n: int, size: int = 32) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(4):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = i % 4
        a = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        a[..., k % 3] += 120 + 40 * (k // 3)
        Image.fromarray(a).save(root / f"c{k}" / f"{i:06d}.png")
    return root


def measure(folder: Path, in_memory: bool, workers: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), "1" if in_memory else "0", str(workers)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=2000, help="images in the 1x dataset")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers for the streamed runs")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (1, 10):
            t0 = time.perf_counter()
            folder = make_folder(Path(tmp) / f"x{factor}", a.base * factor)
            print(f"wrote {a.base * factor} PNGs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            modes = [("streamed", False)] + ([("in memory", True)] if factor == 1 else [])
            for mode, in_memory in modes:
                runs = [measure(folder, in_memory, a.workers) for _ in range(a.repeats)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append({"images": a.base * factor, "mode": mode, **med})
    print(f"{'images':>8} {'mode':>10} {'peak RSS MB':>12} {'workers MB':>11} {'load s':>7} {'fit s':>6} "
          f"{'epoch s':>8}")
    for r in rows:
        print(f"{r['images']:>8} {r['mode']:>10} {r['rss_mb']:>12.0f} {r['workers_rss_mb']:>11.0f} "
              f"{r['load_s']:>7.2f} {r['fit_s']:>6.2f} {r['epoch_s']:>8.2f}")
    s1, s10, m1 = rows[0], rows[2], rows[1]
    print(f"\npeak RSS, streamed, 10x / 1x data: {s10['rss_mb'] / s1['rss_mb']:.2f} (goal <= 1.2)")
    print(f"second epoch's time (train + validation), streamed / in memory (1x): {s1['epoch_s'] / m1['epoch_s']:.2f}; "
          f"streamed 10x / 1x: {s10['epoch_s'] / s1['epoch_s']:.1f}  "
          f"(in memory also reads every image up front: load {m1['load_s']:.1f} s vs {s1['load_s']:.1f} s)")
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, workers {a.workers}, "
          f"repeats {a.repeats} (medians)")


if __name__ == "__main__":
    main()
