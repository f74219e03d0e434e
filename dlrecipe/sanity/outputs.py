"""The run folder of `dlrecipe sanity`: sanity.csv, layers.csv, overfit.csv, summary.json and the plots."""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

from .base import Check, SanityResult


def merge_layer_columns(rows: list[dict], checks: list[Check]) -> None:
    """Add update_ratio and gradcheck_max_error to the layers.csv rows (by layer order / module name)."""
    by = {c.check: c for c in checks}
    ratios = by["update_ratio"].details.get("ratios", []) if "update_ratio" in by else []
    per_module = by["gradient_check"].details.get("per_module", {}) if "gradient_check" in by else {}
    for r in rows:
        i = r["layer"] - 1
        r["update_ratio"] = ratios[i] if i < len(ratios) else None
        r["gradcheck_max_error"] = per_module.get(r["name"])
    for c in checks:  # the per-layer lists now live in layers.csv
        c.details.pop("ratios", None)


LAYER_COLUMNS = ["layer", "name", "desc", "kind", "activation", "units", "weight_std", "pre_std", "act_mean", "act_std",
                 "saturated", "zero_frac", "dead", "constant", "duplicate", "grad_norm", "rel_grad", "update_ratio",
                 "gradcheck_max_error", "activation_module", "sparsity", "mean_abs_corr", "correlated_units",
                 "ignoring_units"]


def write_outputs(result: SanityResult, task: str) -> None:
    """sanity.csv, layers.csv, overfit.csv, summary.json, overfit.png and layers.png in the run folder."""
    from ..runs import CsvLog, write_json

    d = result.run_dir
    with CsvLog(d / "sanity.csv", ["check", "status", "observed", "expected", "advice", "seconds"]) as log:
        for c in result.checks:
            log.write(asdict(c))
    if result.layers:
        with CsvLog(d / "layers.csv", LAYER_COLUMNS) as log:
            for r in result.layers:
                log.write(r)
        plot_layers(result.layers, d / "layers.png")
    if result.overfit:
        with CsvLog(d / "overfit.csv", ["attempt", "lr", "iteration", "loss", "acc", "sample_loss",
                                        "sample_acc"]) as log:
            for r in result.overfit:
                log.write(r)
        plot_overfit(result.overfit, d / "overfit.png", task)
    summary = result.to_dict()
    summary.pop("layers")
    summary["figures"] = sorted(p.name for p in d.glob("*.png"))  # overfit, layers, batch (the first batch)
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(d / "summary.json", summary)


def plot_overfit(rows: list[dict], path: Path, task: str) -> None:
    """The overfitting runs' loss per iteration (one line per LR tried) and the sample accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if task == "classification" else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    for attempt in sorted({r["attempt"] for r in rows}):
        rr = [r for r in rows if r["attempt"] == attempt]
        label = f"lr {rr[0]['lr']:g}" + (" (recipe)" if attempt == 1 else "")
        axes[0][0].plot([r["iteration"] for r in rr], [r["loss"] for r in rr], label=label, lw=1)
        if task == "classification":
            ends = [r for r in rr if r["sample_acc"] is not None]
            axes[0][1].plot([r["iteration"] for r in ends], [r["sample_acc"] for r in ends], label=label)
    axes[0][0].set(xlabel="iteration", ylabel="minibatch loss", title="overfit a small sample: loss")
    if all(r["loss"] > 0 for r in rows if math.isfinite(r["loss"])):
        axes[0][0].set_yscale("log")
    starts = [r["loss"] for r in rows if r["iteration"] == 0 and math.isfinite(r["loss"])]
    if starts:  # a diverged attempt's 1e30 would flatten every other curve
        axes[0][0].set_ylim(top=10 * max(starts))
    axes[0][0].legend()
    if task == "classification":
        axes[0][1].set(xlabel="iteration", ylabel="accuracy on the sample", ylim=(0, 1.02),
                       title="training accuracy (goal: 100%)")
        axes[0][1].axhline(1.0, color="gray", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layers(rows: list[dict], path: Path) -> None:
    """Per layer at initialisation: activation mean and std, saturated/dead fractions, relative gradient."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r["layer"] for r in rows]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
    a1.errorbar(layers, [r["act_mean"] for r in rows], yerr=[r["act_std"] for r in rows], fmt="o-", capsize=3)
    a1.set(xlabel="layer", ylabel="activation mean +- std", title="activations at init")
    a2.plot(layers, [r["saturated"] for r in rows], "o-", label="saturated")
    a2.plot(layers, [r["dead"] for r in rows], "s-", label="dead units")
    a2.plot(layers, [r["duplicate"] for r in rows], "^-", label="identical units")
    a2.set(xlabel="layer", ylabel="fraction", ylim=(-0.02, 1.02), title="saturated / dead / identical")
    a2.legend()
    rel = [r["rel_grad"] if r["rel_grad"] and math.isfinite(r["rel_grad"]) and r["rel_grad"] > 0 else math.nan
           for r in rows]
    a3.plot(layers, rel, "o-", label="||dW|| / ||W||")
    upd = [r.get("update_ratio") for r in rows]
    if any(u is not None and math.isfinite(u) and u > 0 for u in upd):
        a3.plot(layers, [u if u is not None and u > 0 else math.nan for u in upd], "s-", label="update ratio")
        a3.axhline(1e-3, color="gray", lw=0.5, ls="--")
    if any(math.isfinite(v) for v in rel):
        a3.set_yscale("log")
    a3.set(xlabel="layer", title="gradients")
    a3.legend()
    for ax in (a1, a2, a3):
        ax.set_xticks(layers)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
