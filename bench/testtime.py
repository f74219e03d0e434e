"""Test-time averaging: test metrics with and without MC dropout and TTA (the README's table).

Run with: python bench/testtime.py [--seeds 3] [--runs-dir /tmp/dlrecipe-testtime]

- MC dropout: recipes/digits_mlp.toml (dropout 0.3, mixup) with test.mc_dropout = 20;
- TTA: a small 2-D CNN on the 8x8 digits, trained with random crops (padding 1), tested with test.tta = ["crops"]
  (the centre and 4 corner crops of the padded image).
Each run reports the plain test metrics and the averaged ones of the same trained model (summary.json); prints
one Markdown row per setting with the means over the seeds.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from dlrecipe.recipe import load
from dlrecipe.train import train

ROOT = Path(__file__).resolve().parent.parent

CNN = {"model.kind": "cnn", "model.conv": [16, 32], "model.kernel_size": 3, "model.pool": "max", "model.norm": "batch",
       "model.hidden": [64], "model.dropout": 0.0, "data.augment": ["crop"], "data.crop_padding": 1,
       "train.optimizer": "adam", "train.lr": 3e-3, "train.momentum": 0.0}
SETTINGS = {
    "digits_mlp, test.mc_dropout = 20": {"test.mc_dropout": 20},
    "digits 2-D CNN (crop-augmented), test.tta = [crops]": {**CNN, "test.tta": ["crops"]},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs-dir", default=tempfile.mkdtemp(prefix="dlrecipe-testtime-"))
    args = ap.parse_args()
    base = load(ROOT / "recipes/digits_mlp.toml")
    rows = []
    for name, overrides in SETTINGS.items():
        acc, acc_avg, loss, loss_avg = [], [], [], []
        for seed in range(args.seeds):
            s = train(base.with_values({**overrides, "seed": seed}), runs_dir=args.runs_dir, device="cpu").summary
            acc.append(s["test_acc"]), acc_avg.append(s["test_acc_averaged"])
            loss.append(s["test_loss"]), loss_avg.append(s["test_loss_averaged"])
            print(f"{name} seed {seed}: acc {s['test_acc']:.4f} -> {s['test_acc_averaged']:.4f}, loss "
                  f"{s['test_loss']:.4f} -> {s['test_loss_averaged']:.4f}", flush=True)
        m = statistics.mean
        rows.append(f"| {name} | {m(acc):.3f} | {m(acc_avg):.3f} | {m(loss):.3f} | {m(loss_avg):.3f} |")
    print(f"\n| setting ({args.seeds} seeds, means) | test acc plain | averaged | test loss plain | averaged |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
