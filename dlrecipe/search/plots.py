"""The search's figures: search_params.png (best metric against each parameter) and search_curves.png."""
from __future__ import annotations

from pathlib import Path

from .space import Dist


def plot_params(path: Path, rows: list[dict], space: dict[str, Dist], monitor: str) -> None:
    """The lectures' random-search picture: best validation metric against each parameter, log axes for log ranges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = f"best_{monitor}"
    keys = list(space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        d = space[key]
        for stage, marker, colour in (("coarse", "o", "tab:blue"), ("fine", "^", "tab:orange")):
            pts = [(r[key], r[col]) for r in rows if r["stage"] == stage and r["state"] in ("complete", "pruned")
                   and r.get(col) is not None and r[key] is not None]
            if d.kind == "choice":
                labels = [str(c) for c in d.choices]
                pts = [(labels.index(str(x)), y) for x, y in pts if str(x) in labels]
                ax.set_xticks(range(len(labels)), labels)
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=colour, label=stage, alpha=0.8)
        if d.log:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path: Path, run_dir: Path, rows: list[dict], monitor: str, selected: int) -> None:
    """Every trial's validation curve on one plot (lecture 003, step 6); the selected trial in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        csv = run_dir / "trials" / str(r["number"]) / "metrics.csv"
        if not csv.is_file():
            continue
        m = pd.read_csv(csv)
        if monitor not in m or m.empty:
            continue
        style = {"color": "black", "lw": 2.2, "zorder": 3} if r["number"] == selected else \
            {"color": "tab:orange" if r["stage"] == "fine" else "tab:blue", "lw": 0.9, "alpha": 0.5}
        ax.plot(m["epoch"], m[monitor], **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel(monitor)
    if monitor == "val_loss":
        ax.set_yscale("log")
    ax.set_title("validation curves: coarse (blue), fine (orange), selected (black)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
