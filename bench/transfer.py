"""Transfer learning against training from scratch on few labels (the README's table).

Run with: python bench/transfer.py [--seeds 3] [--set KEY=VALUE] [--runs-dir /tmp/dlrecipe-transfer]

1. trains recipes/mnist1d_source.toml (MNIST-1D digits 0-4, all ~1600 training signals) once, seed 0;
2. for each seed s: recipes/mnist1d_transfer.toml (digits 5-9, 100 labelled signals drawn by seed s) with
   model.pretrained = that run (conv layers frozen, staged unfreezing), and the same recipe from scratch (no
   model.pretrained, nothing frozen); both on the same 100 examples, validation and test signals.
Prints one Markdown row per arm: mean +- std of the test accuracy over the seeds, and each seed's value.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from dlrecipe.recipe import load
from dlrecipe.train import train

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override for every arm, e.g. --set train.epochs=200")
    ap.add_argument("--runs-dir", default=tempfile.mkdtemp(prefix="dlrecipe-transfer-"))
    args = ap.parse_args()
    source = train(load(ROOT / "recipes/mnist1d_source.toml"), runs_dir=args.runs_dir, device="cpu")
    print(f"source (digits 0-4): test acc {source.summary['test_acc']:.4f}, {source.run_dir}")
    transfer_recipe = load(ROOT / "recipes/mnist1d_transfer.toml", args.set)
    arms = {
        "transfer (conv frozen, unfrozen at 15/25)": {"model.pretrained": str(source.run_dir)},
        "from scratch": {"train.freeze": [], "train.unfreeze": []},
    }
    results: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        for arm, overrides in arms.items():
            r = train(transfer_recipe.with_values({**overrides, "seed": seed}), runs_dir=args.runs_dir, device="cpu")
            results.setdefault(arm, []).append(r.summary["test_acc"])
            print(f"seed {seed} {arm}: test acc {r.summary['test_acc']:.4f} (best epoch {r.summary['best_epoch']})",
                  flush=True)
    print("\n| digits 5-9, 100 labels | test acc (mean +- std) | per seed |")
    print("|---|---|---|")
    for arm, accs in results.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {arm} | {statistics.mean(accs):.3f} +- {sd:.3f} | {', '.join(f'{a:.3f}' for a in accs)} |")


if __name__ == "__main__":
    main()
