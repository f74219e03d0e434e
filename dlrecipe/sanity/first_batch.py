"""Visualise just before the net (Karpathy's recipe): the first training batch exactly as the model receives it,
after preprocessing and augmentation, drawn the way `fit` draws it (the same seed, batch order and augmentation
generator). batch.png: an image grid with the labels (images), or the signals and per-feature statistics (1-D
signals, tables); batch.csv: per-feature (images: per-channel) mean, std, min and max of the batch."""
from __future__ import annotations

import math
from pathlib import Path

import torch

GRID_IMAGES = 32               # images in the grid (8 per row)
SIGNALS_DRAWN = 8              # 1-D examples drawn as lines
FEATURES_DRAWN = 40            # table features in the statistics plot (the first ones)


def first_batch(recipe, data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """(x, y, y_b, lam) of the first minibatch `fit` trains on: its seeded order, then data.augment."""
    from .. import augment as A
    from ..data import batches

    seed, bs = recipe["seed"], recipe["data.batch_size"]
    device = data.x_train.device
    idx = next(batches(len(data.x_train), bs, torch.Generator().manual_seed(seed), device))
    x, y = data.x_train[idx], data.y_train[idx]
    names = recipe["data.augment"]
    if not names:
        return x, y, None, 1.0
    with torch.random.fork_rng(devices=[device] if x.is_cuda else []):
        gen = torch.Generator(device=device).manual_seed(seed + 1)
        return A.apply(x, y, names, gen, **A.config(recipe.section("data")))


def feature_stats(x: torch.Tensor) -> list[dict]:
    """One row per feature (tables) or channel (images, signals): mean, std, min, max over the batch."""
    per = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() >= 3 else x.t()
    kind = "channel" if x.dim() >= 3 else "feature"
    return [{kind: i, "mean": float(r.mean()), "std": float(r.std(unbiased=False)), "min": float(r.min()),
             "max": float(r.max())} for i, r in enumerate(per.double().cpu())]


def _label(data, y: torch.Tensor, i: int, y_b, lam: float) -> str:
    def name(v) -> str:
        if data.task == "regression":
            return f"{float(v) * data.target_std + data.target_mean:.3g}"
        k = int(v)
        return data.classes[k] if data.classes and k < len(data.classes) else str(k)
    if y_b is None or lam >= 1 or int(y[i]) == int(y_b[i]):
        return name(y[i])
    (major, minor), w = ((y[i], y_b[i]), 1 - lam) if lam >= 0.5 else ((y_b[i], y[i]), lam)
    share = f"{w:.0%}" if w >= 0.005 else "<1%"  # Beta(0.2, 0.2) often blends in a fraction of a percent
    return f"{name(major)} +{name(minor)} {share}"  # mixup: the label that dominates, the other and its weight


def write_batch_view(run_dir: Path, recipe, data) -> list[str]:
    """batch.png and batch.csv in run_dir; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runs import CsvLog

    x, y, y_b, lam = first_batch(recipe, data)
    x, y = x.detach().float().cpu(), y.detach().cpu()
    stats = feature_stats(x)
    with CsvLog(run_dir / "batch.csv", list(stats[0])) as log:
        for r in stats:
            log.write(r)
    aug = ", ".join(recipe["data.augment"]) or "none"
    title = (f"first training batch as the model receives it: {len(x)} examples, shape {list(x.shape[1:])}, "
             f"preprocess {recipe['data.preprocess']}, augment {aug}")
    if x.dim() == 4:  # images (N, C, H, W): a grid, each normalised to its own range for display
        n = min(GRID_IMAGES, len(x))
        cols = min(8, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows + 0.6), squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k >= n:
                continue
            img = x[k]
            img = (img - img.min()) / (img.max() - img.min() + 1e-12)
            if img.shape[0] == 3:
                ax.imshow(img.permute(1, 2, 0).numpy())
            else:
                ax.imshow(img[0].numpy(), cmap="gray")
            ax.set_title(_label(data, y, k, y_b, lam), fontsize=8)
        fig.suptitle(title, fontsize=9)
    else:  # 1-D signals (N, C, L) or tables (N, F): some examples drawn, per-feature statistics
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4))
        flat = x.reshape(len(x), -1)
        for k in range(min(SIGNALS_DRAWN, len(x))):
            a1.plot(flat[k].numpy(), lw=1, marker="." if flat.shape[1] <= 40 else None,
                    label=_label(data, y, k, y_b, lam))
        a1.set(xlabel="position" if x.dim() == 3 else "feature", ylabel="value",
               title=f"{min(SIGNALS_DRAWN, len(x))} examples (legend: label)")
        a1.legend(fontsize=7, ncol=2)
        shown = stats[:FEATURES_DRAWN]
        kind = "channel" if x.dim() >= 3 else "feature"
        pos = [r[kind] for r in shown]
        if x.dim() == 3 and len(stats) == 1:  # a one-channel signal: statistics per position instead
            pos = list(range(min(FEATURES_DRAWN * 4, flat.shape[1])))
            shown = [{"mean": float(flat[:, i].mean()), "std": float(flat[:, i].std(unbiased=False)),
                      "min": float(flat[:, i].min()), "max": float(flat[:, i].max())} for i in pos]
            kind = "position"
        a2.errorbar(pos, [r["mean"] for r in shown], yerr=[r["std"] for r in shown], fmt="o", ms=3, capsize=2,
                    label="mean +- std")
        a2.plot(pos, [r["min"] for r in shown], "v", ms=3, label="min")
        a2.plot(pos, [r["max"] for r in shown], "^", ms=3, label="max")
        a2.axhline(0, color="gray", lw=0.5)
        a2.set(xlabel=kind, title=f"per-{kind} statistics of the batch (standardised data: mean 0, std 1)")
        a2.legend(fontsize=7)
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir / "batch.png", dpi=100)
    plt.close(fig)
    return ["batch.png", "batch.csv"]
