"""Step 6 of the recipe: read the loss and accuracy curves of a run and say what they show, with numbers.

Each rule looks at one epoch-level curve (`metrics.csv`: epoch, lr, train_loss, train_acc, val_loss, val_acc) and
returns a `Finding` that cites what it saw and the next step to try (lectures 002 and 003). The thresholds are
named constants here and listed in the README.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

DIVERGE_RISE = 1.5          # final train loss above 1.5x its start: the loss went up, not down
BOUNCE_FRACTION = 0.4       # more than 40% of epochs raise the train loss ...
BOUNCE_MIN_RISE = 0.02      # ... each by more than 2% (smaller rises are the noise of a converged run): bouncing
OVERFIT_VAL_RISE = 0.10     # val loss 10% above its minimum at the end while train loss kept falling
OVERFIT_MIN_RISE = 0.01     # ... and at least 0.01 above it in absolute terms: a loss near zero (0.0003 -> 0.0011,
#                             "+344%", test accuracy 1.0) rises by large percentages without meaning anything
OVERFIT_GAP = 0.05          # train acc - val acc at the end above 5 points
UNDERFIT_TRAIN_ACC = 0.80   # train accuracy below 80% at the end ...
FLAT_DROP = 0.05            # ... and the train loss fell less than 5% over the second half: underfitting
STILL_IMPROVING_TAIL = 0.10  # best epoch in the last 10% of the epochs (or the last one) and val loss falling
SLOW_TOTAL_DROP = 0.25      # still falling, but the val loss fell < 25% from epoch 1 in the whole run ...
SLOW_KEEPS_PACE = 0.5       # ... its second half fell at least half as much as its first (no slowing down) ...
SLOW_STEADY = 0.7           # ... and it fell in at least 70% of the epochs: the steady, near-linear crawl of a
#                             too-low LR (lecture 002: loss not going down -> LR too low), not a noisy high LR
EARLY_BEST_HEAD = 0.10      # best epoch in the first 10% of at least 10 epochs
NOISY_VAL = 0.10            # val loss scatters around its moving average by > 10% of it (std): noisy validation
NOISY_WINDOW = 5            # epochs in that centred moving average (the trend the scatter is measured from),
NOISY_SKIP = 0.2            # after the first 20% of the epochs (the steep early fall is not noise)
MIN_EPOCHS = 4              # fewer epochs than this: too short to judge trends


@dataclass
class Finding:
    code: str       # diverged | lr_too_high | lr_too_low | overfitting | underfitting | train_longer | early_best
    #                 | noisy_val
    message: str    # what was seen, with numbers
    advice: str     # the next step to try

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "advice": self.advice}


def _best_epoch(m: pd.DataFrame) -> int:
    return int(m.loc[m["val_loss"].idxmin(), "epoch"])


def diagnose(metrics: pd.DataFrame, mixed_train: bool = False, bn_momentum: float | None = None) -> list[Finding]:
    """Findings for one run's per-epoch metrics; an empty list means the curves look healthy.

    mixed_train: the training metrics come from mixup batches (blended inputs and labels). Their loss and accuracy
    measure the fit to the blends, which bounces with each batch's mixing weight and never reaches a clean fit:
    the rules that read training curves (bouncing, underfitting, the train-validation gap) are skipped.
    bn_momentum: the model has batch norm with this running-average rate; noisy validation then names it as a
    likely cause (validation runs in evaluation mode, on running averages that lag fast-changing weights).
    """
    m = metrics.reset_index(drop=True)
    if m.empty:
        return [Finding("no_data", "metrics.csv has no rows", "the run ended before its first epoch finished")]
    findings: list[Finding] = []
    tl, vl = m["train_loss"].to_numpy(float), m["val_loss"].to_numpy(float)
    n = len(m)
    if not (np.isfinite(tl).all() and np.isfinite(vl).all()):
        bad = int(m.loc[~(np.isfinite(tl) & np.isfinite(vl)), "epoch"].iloc[0])
        return [Finding("diverged", f"the loss became NaN/Inf at epoch {bad} (LR {m['lr'].iloc[bad - 1]:g})",
                        "LR too high (or a bad init): divide the LR by 2 until it does not diverge (lecture 002); "
                        "`dlrecipe lr-find` finds one")]
    if tl[-1] > DIVERGE_RISE * tl[0]:
        findings.append(Finding("lr_too_high", f"train loss rose from {tl[0]:.4g} to {tl[-1]:.4g}",
                                "LR too high: divide it by 2 or more and run again"))
    if n >= MIN_EPOCHS and not mixed_train:
        ups = float(np.mean(np.diff(tl) > BOUNCE_MIN_RISE * np.abs(tl[:-1])))
        if ups > BOUNCE_FRACTION and not findings:
            findings.append(Finding("lr_too_high", f"train loss went up in {ups:.0%} of the epochs (noisy, bouncing)",
                                    "decrease the LR (lecture 003: a bouncing loss means the LR is too high)"))
    if n < MIN_EPOCHS:
        return findings

    best = _best_epoch(m)
    has_acc = "train_acc" in m and "val_acc" in m and not mixed_train
    train_falling = tl[-1] < tl[best - 1] or mixed_train
    val_rise = (vl[-1] - vl.min()) / max(abs(vl.min()), 1e-12)
    gap = float(m["train_acc"].iloc[-1] - m["val_acc"].iloc[-1]) if has_acc else math.nan
    if val_rise > OVERFIT_VAL_RISE and vl[-1] - vl.min() > OVERFIT_MIN_RISE and train_falling and best < n:
        extra = f", train-val accuracy gap {gap:.2f}" if has_acc else ""
        findings.append(Finding(
            "overfitting",
            f"val loss rose {val_rise:.0%} above its minimum {vl.min():.4g} (epoch {best}) while train loss fell "
            f"to {tl[-1]:.4g}{extra}",
            "overfitting: more regularisation (weight decay, dropout, augmentation), more data, or a smaller model; "
            "early stopping keeps the best snapshot"))
    elif has_acc and gap > OVERFIT_GAP and train_falling and best < n:
        findings.append(Finding("overfitting", f"train accuracy {m['train_acc'].iloc[-1]:.3f} vs validation "
                                f"{m['val_acc'].iloc[-1]:.3f}: a gap of {gap:.2f} that grew while training",
                                "overfitting: increase regularisation (weight decay, dropout) or get more data"))
    half = tl[n // 2:]
    drop = (half[0] - half[-1]) / max(abs(half[0]), 1e-12)
    if has_acc and m["train_acc"].iloc[-1] < UNDERFIT_TRAIN_ACC and drop < FLAT_DROP:
        findings.append(Finding(
            "underfitting",
            f"train accuracy only {m['train_acc'].iloc[-1]:.3f} and train loss flat ({drop:.1%} drop over the "
            f"second half, at {tl[-1]:.4g})",
            "underfitting: a bigger model, less regularisation, or a higher LR; check `dlrecipe sanity` can "
            "overfit a small sample"))
    if best > n * (1 - STILL_IMPROVING_TAIL) - 1e-9 and vl[-1] < vl[max(n - 3, 0)]:
        total = (vl[0] - vl[-1]) / max(abs(vl[0]), 1e-12)
        first, second = vl[0] - vl[n // 2], vl[n // 2] - vl[-1]
        steady = float(np.mean(np.diff(vl) < 0))
        if 0 < first and total < SLOW_TOTAL_DROP and second >= SLOW_KEEPS_PACE * first and steady >= SLOW_STEADY:
            findings.append(Finding(
                "lr_too_low", f"validation loss fell only {total:.0%} in {n} epochs ({vl[0]:.4g} to {vl[-1]:.4g}), "
                f"as steadily in the second half as in the first ({second:.3g} vs {first:.3g})",
                "LR too low (or a bad init): the loss is crawling down; raise the LR (try 10x, or `dlrecipe "
                "lr-find`) rather than only training longer (lecture 002)"))
        else:
            findings.append(Finding("train_longer", f"validation loss still falling at the last epoch "
                                    f"({vl[-1]:.4g}, best at epoch {best} of {n})",
                                    "still improving: train longer (raise train.epochs)"))
    if n >= 10 and best <= max(1, int(n * EARLY_BEST_HEAD)):
        findings.append(Finding("early_best", f"best validation loss at epoch {best} of {n}",
                                "the best epoch came very early: the LR may be too high, or training runs too long "
                                "(lower train.patience / epochs)"))
    trend = moving_average(vl, NOISY_WINDOW)  # the scatter around the trend, not the trend's own fall
    start = max(1, int(n * NOISY_SKIP))
    noise = float(np.std(((vl - trend) / np.maximum(np.abs(trend), 1e-12))[start:]))
    if noise > NOISY_VAL and not any(f.code in ("lr_too_high",) for f in findings):
        advice = "noisy validation: a larger validation split, a lower LR or a larger batch"
        if bn_momentum is not None:
            advice += (f"; with batch norm, validation uses running averages that follow the weights over about "
                       f"{1 / bn_momentum:.0f} updates (model.bn_momentum = {bn_momentum:g}) and lag when the "
                       f"weights move fast: a lower LR, or a larger model.bn_momentum (torch's default 0.1)")
        findings.append(Finding("noisy_val", f"validation loss scatters by {noise:.0%} around its {NOISY_WINDOW}-epoch "
                                f"moving average", advice))
    return findings


def moving_average(values, window: int) -> np.ndarray:
    """Centred moving average, same length (windows shrink at the ends): a trend line that does not lag."""
    return pd.Series(np.asarray(values, float)).rolling(window, center=True, min_periods=1).mean().to_numpy()


# Step 7 of the recipe ("go back to step 5", lecture 003): what `dlrecipe run` changes for its next search pass when
# a finding is its pass's diagnosis. The first code in this order that a pass's diagnosis holds decides the pass's
# change (a curve that diverges is fixed before it is regularised); train_longer, when also present, adds its epochs.
ACTION_ORDER = ("diverged", "lr_too_high", "overfitting", "underfitting", "lr_too_low", "train_longer", "noisy_val")
ACTIONS = {  # code -> (action, what it changes in plain words)
    "diverged": ("calm", "a lower LR range and a larger batch (lecture 002: divide the LR until it does not diverge)"),
    "lr_too_high": ("calm", "a lower LR range and a larger batch (lecture 003: a bouncing loss: LR too high)"),
    "overfitting": ("regularise", "more regularisation: weight decay up, dropout searched higher, mixup if it fits"),
    "underfitting": ("free", "less regularisation, a higher LR range, longer training"),
    "lr_too_low": ("free", "a higher LR range, less regularisation, longer training (lecture 002: LR too low)"),
    "train_longer": ("longer", "more fine epochs"),
    "noisy_val": ("calm", "a lower LR range and a larger batch"),
}
NOT_ACTED_ON = {"early_best": "early stopping already keeps the best snapshot",
                "no_data": "no epoch finished: nothing to act on"}


def primary_finding(findings: list[Finding]) -> Finding | None:
    """The finding that decides the next pass's change (ACTION_ORDER), or None when none is actionable."""
    codes = {f.code: f for f in findings}
    return next((codes[c] for c in ACTION_ORDER if c in codes), None)
