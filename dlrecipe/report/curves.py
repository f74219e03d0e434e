"""The curves a report reads: which metrics.csv files, their diagnosis (told what their recipe says), their plots."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..diagnose import Finding, diagnose, moving_average
from ..errors import UserError
from ..runs import read_json

LOG_AXIS_SPAN = 30    # losses spanning more than 30x are drawn on a log axis
SCATTER_UP_TO = 12    # plots of more curves than this draw only their moving averages (the points would be a cloud)
TRIAL_FOLDERS = ("trials", "4-seeds")   # metrics.csv below these are trials (or seed reruns), not a run's own curve


@dataclass
class Curve:
    label: str                 # e.g. "train" or "trials/3"
    path: Path                 # its metrics.csv
    metrics: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)
    title: str = ""            # in words, e.g. "Search pass 2: selected trial 31"
    notes: list[str] = field(default_factory=list)   # how its training curves were measured (mixup, dropout)


def metric_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(main curves, trial curves): every metrics.csv below run_dir; trials and seed reruns are the second."""
    all_files = sorted(run_dir.rglob("metrics.csv"))
    trials = [p for p in all_files if set(TRIAL_FOLDERS) & set(p.relative_to(run_dir).parts[:-1])]
    return [p for p in all_files if p not in trials], trials


def label_of(run_dir: Path, path: Path) -> str:
    rel = path.parent.relative_to(run_dir)
    return str(rel) if str(rel) != "." else run_dir.name


def read_metrics(path: Path) -> pd.DataFrame:
    """A metrics.csv, or a one-line error naming it when it cannot be read."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot read it as CSV ({reason}); restore or delete that file") from None


def read_curve(path: Path) -> pd.DataFrame:
    """A metrics.csv with the columns a curve needs, or a one-line error (a foreign or hand-edited file is refused
    here rather than a KeyError deep in the diagnosis)."""
    df = read_metrics(path)
    missing = [c for c in ("train_loss", "val_loss") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: no {' or '.join(missing)} column (it has {', '.join(map(str, df.columns))}); "
                        f"expected a dlrecipe metrics.csv")
    return df


def read_summary(path: Path) -> dict:
    try:
        summary = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: cannot read it as JSON ({e}); restore or delete that file") from None
    if not isinstance(summary, dict):
        raise UserError(f"{path}: holds a JSON {type(summary).__name__}, expected an object; restore or delete it")
    return summary


def recipe_near(run_dir: Path, metrics_path: Path) -> dict:
    """The nearest recipe.toml at or above a curve (within run_dir), parsed; {} when none can be read."""
    import tomllib

    folder = metrics_path.parent
    while True:
        recipe = folder / "recipe.toml"
        if recipe.is_file():
            try:
                return tomllib.loads(recipe.read_text())
            except (tomllib.TOMLDecodeError, OSError):
                return {}
        if folder == run_dir or folder == folder.parent:
            return {}
        folder = folder.parent


def _trial_values(run_dir: Path, metrics_path: Path) -> dict:
    """A search trial's own sampled values (trials.csv row), e.g. {"model.dropout": 0.3}; {} when not a trial."""
    parts = metrics_path.relative_to(run_dir).parts
    if len(parts) < 3 or parts[-3] != "trials":
        return {}
    table = metrics_path.parents[2] / "trials.csv"
    try:
        rows = pd.read_csv(table)
        row = rows[rows["number"].astype(str) == parts[-2]].iloc[0]
    except (OSError, KeyError, IndexError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return {}
    return {k: row[k] for k in rows.columns if "." in k and not pd.isna(row[k])}


def diagnose_curve(run_dir: Path, metrics_path: Path, metrics: pd.DataFrame) -> list[Finding]:
    """diagnose() told what the curve's recipe says: mixup training batches, batch norm's running-average rate."""
    from ..recipe import SCHEMA

    recipe = recipe_near(run_dir, metrics_path)
    model = recipe.get("model", {})
    bn = model.get("bn_momentum", SCHEMA["model.bn_momentum"].default) if model.get("norm") == "batch" else None
    return diagnose(metrics, mixed_train="mixup" in recipe.get("data", {}).get("augment", []), bn_momentum=bn)


def training_notes(run_dir: Path, metrics_path: Path) -> list[str]:
    """How the training curves of this run were measured, when they are not comparable with validation's."""
    recipe = recipe_near(run_dir, metrics_path)
    values = _trial_values(run_dir, metrics_path)
    notes = []
    if "mixup" in recipe.get("data", {}).get("augment", []):
        notes.append("The training loss and accuracy are measured on mixup blends (pairs of examples and their "
                     "labels mixed), which are harder to fit than the real examples: a training loss above the "
                     "validation loss is expected, not a bug.")
    p = float(values.get("model.dropout", recipe.get("model", {}).get("dropout", 0.0)) or 0.0)
    if p > 0:
        notes.append(f"The training curves are computed with dropout on (each hidden unit dropped with probability "
                     f"{p:.2g}); validation runs with it off, so training looks worse than the model is.")
    return notes


def for_a_trial(finding: Finding) -> Finding:
    """A search trial's epochs come from search.fine_epochs, not train.epochs: say so in the advice."""
    advice = finding.advice.replace("raise train.epochs", "raise search.fine_epochs, the fine trials' epochs")
    return Finding(finding.code, finding.message, advice)


def selected_trials(run_dir: Path) -> set[Path]:
    """trials/<n> folders that a search's summary.json (here or below) names as its selected model."""
    out = set()
    for path in run_dir.rglob("summary.json"):
        if set(TRIAL_FOLDERS) & set(path.relative_to(run_dir).parts):
            continue
        n = read_summary(path).get("selected_trial")
        if n is not None:
            out.add(path.parent / "trials" / str(n))
    return out


def loss_scale(curves: list[Curve]) -> str:
    """"log" when the losses span more than LOG_AXIS_SPAN (one early spike, e.g. batch norm's first epoch or a
    diverging run, would flatten every other curve on a linear axis), else "linear"."""
    parts = [c.metrics[k].to_numpy(float) for c in curves for k in ("train_loss", "val_loss") if k in c.metrics]
    losses = np.concatenate(parts) if parts else np.array([])
    losses = losses[np.isfinite(losses)]
    span_log = len(losses) and losses.min() > 0 and losses.max() / losses.min() > LOG_AXIS_SPAN
    return "log" if span_log else "linear"


def plot_curves(curves: list[Curve], path: Path, title: str) -> Path:
    """Loss (and accuracy) per epoch: points as a scatter, a moving average as a line (lecture 003)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_acc = any("val_acc" in c.metrics for c in curves)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4), squeeze=False)
    many, crowd = len(curves) > 3, len(curves) > SCATTER_UP_TO
    for i, c in enumerate(curves):
        m = c.metrics
        color = plt.cm.tab10(i % 10)
        window = max(3, len(m) // 10)
        for ax, cols in zip(axes[0], (("train_loss", "val_loss"), ("train_acc", "val_acc")), strict=False):
            for col, style in zip(cols, ("--", "-"), strict=True):
                if col not in m or (many and col.startswith("train")):
                    continue
                y = m[col].to_numpy(float)
                name = col if len(curves) == 1 else f"{c.label} {col}"
                if not crowd:
                    ax.scatter(m["epoch"], y, s=10, alpha=0.35, color=color if len(curves) > 1 else None)
                ax.plot(m["epoch"], moving_average(y, window), style, label=name,
                        color=color if len(curves) > 1 else None, alpha=0.5 if crowd else 1.0,
                        linewidth=0.8 if crowd else 1.5)
    axes[0][0].set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    axes[0][0].set_yscale(loss_scale(curves))
    if has_acc:
        axes[0][1].set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for ax in axes[0]:
        if len(curves) <= SCATTER_UP_TO:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sparkline(values: list[float] | np.ndarray, width: int = 60) -> str:
    """A one-line terminal curve: ▁▂▃▄▅▆▇█ scaled between the finite minimum and maximum."""
    blocks = "▁▂▃▄▅▆▇█"
    v = np.asarray(values, float)
    if len(v) > width:  # resample long curves to the terminal width
        v = v[np.linspace(0, len(v) - 1, width).round().astype(int)]
    fin = v[np.isfinite(v)]
    if not len(fin):
        return ""
    lo, hi = fin.min(), fin.max()
    scale = (hi - lo) or 1.0
    return "".join("×" if not np.isfinite(x) else blocks[int((x - lo) / scale * (len(blocks) - 1))] for x in v)
