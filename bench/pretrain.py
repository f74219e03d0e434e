"""Layer-wise autoencoder pre-training against random init on a small labelled subset (the README's table).

Run with: python bench/pretrain.py [--seeds 3] [--set KEY=VALUE] [--runs-dir /tmp/dlrecipe-pretrain]

For each seed s, recipes/digits_pretrain.toml (100 labelled digits drawn by seed s; pre-training also reads the
other training images without labels) is trained twice: with its [pretrain] (30 epochs per hidden layer, then
fine-tuning) and with pretrain.epochs = 0 (random init, the same 100 labels, the same fine-tuning settings).
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
    ap.add_argument("--runs-dir", default=tempfile.mkdtemp(prefix="dlrecipe-pretrain-"))
    args = ap.parse_args()
    recipe = load(ROOT / "recipes/digits_pretrain.toml", args.set)
    arms = {"layer-wise pre-trained, fine-tuned": {}, "random init": {"pretrain.epochs": 0}}
    results: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        for arm, overrides in arms.items():
            r = train(recipe.with_values({**overrides, "seed": seed}), runs_dir=args.runs_dir, device="cpu")
            results.setdefault(arm, []).append(r.summary["test_acc"])
            print(f"seed {seed} {arm}: test acc {r.summary['test_acc']:.4f} (best epoch {r.summary['best_epoch']})",
                  flush=True)
    print(f"\n| digits, 100 labels, mlp {recipe['model.hidden']} {recipe['model.activation']} | test acc (mean +- std) "
          f"| per seed |")
    print("|---|---|---|")
    for arm, accs in results.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {arm} | {statistics.mean(accs):.3f} +- {sd:.3f} | {', '.join(f'{a:.3f}' for a in accs)} |")


if __name__ == "__main__":
    main()
