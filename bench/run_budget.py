"""How much of its --budget a `dlrecipe run` uses: seconds taken / seconds given, for recipes with room to improve.

Run with: python bench/run_budget.py [--budget MINUTES] [--repeats N] [recipes ...]

Each run is a whole `dlrecipe run RECIPE --budget MINUTES` in this process (sanity, lr-find, the search passes, the
extra seeds, the selection and the test, the report), in a temporary folder. For each recipe it prints the ratio
of the run's own clock (summary.json's seconds, which start when the run does: Python's start-up is outside) to the
budget, the passes it made and why it stopped, and its test metric; then the median ratio over every run.

Target (issue 14): a run with something left to improve uses >= 0.70 and <= 1.05 of its budget. The default recipes
are the digits MLP (its curves still call for changes after one search) and the MNIST-1D MLP (overfitting).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", default=[str(ROOT / "recipes" / "digits_mlp.toml"),
                                                   str(ROOT / "recipes" / "mnist1d_mlp.toml")])
    ap.add_argument("--budget", type=float, default=1.0, help="minutes per run (default 1)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per recipe (default 1)")
    args = ap.parse_args()

    import torch

    from dlrecipe.pipeline import run_recipe
    from dlrecipe.recipe import load

    torch.set_num_threads(1)
    ratios = []
    for path in args.recipes:
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                res = run_recipe(load(path), device="cpu", runs_dir=tmp, budget_minutes=args.budget)
                s = res.summary
                npass = sum(p.get("best_val") is not None for p in s.get("passes") or [])
                seeds = len(list(Path(res.run_dir, "4-seeds").glob("*/model.pt")))
                tested = f"test acc {s['test_acc']:.4f}" if "test_acc" in s else f"test loss {s.get('test_loss')}"
                ratios.append(s["seconds_vs_budget"])
                print(f"{Path(path).stem:14s} budget {args.budget:g} min: {s['seconds']:6.1f} s = "
                      f"{s['seconds_vs_budget']:.2f} of it; {npass} pass{'es' if npass != 1 else ''} "
                      f"({s.get('passes_stop')}); "
                      f"{seeds} extra seeds; {s['selected']['kind']}; {tested}", flush=True)
    print(f"median seconds / budget over {len(ratios)} runs: {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}; target 0.70 .. 1.05)")


if __name__ == "__main__":
    main()
