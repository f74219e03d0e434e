"""overfit_small: a small sample to ~100% training accuracy, regularisation off; diagnosis and LR retries."""
from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from .. import components as C
from .base import OVERFIT_FLAT, Check, _outputs, _seeded_rows, check_copy

NAME = "overfit_small"
OVERFIT_BATCHES = 8            # minibatches in the sample (lecture 003: ~5-10)
OVERFIT_MAX_EXAMPLES = 1000    # and at most this many examples (lecture 002: ~500-1000)
OVERFIT_STEPS = 3000           # iteration budget per attempt (a pass stops early: shipped recipes need 50-2000)
OVERFIT_PASS_ACC = 0.99        # classification: lecture 003 says 100%; 99% leaves room for the few examples noisy
                               # data holds twice with different labels (the spiral's arms overlap at the centre)
OVERFIT_WARN_ACC = 0.90        # warn at this or more (it learns, but not all the way within the budget)
OVERFIT_REG_PASS = 0.10        # regression: pass when the sample loss is below 10% of predicting the mean (R2 > 0.9)
OVERFIT_REG_WARN = 0.30        # warn below 30% of it
OVERFIT_FLAT_STOP = 0.2        # an attempt whose best sample loss has not improved by 1% for this fraction of the
                               # budget stops: the rest would not change the diagnosis
OVERFIT_BOUNCE = 0.25          # more than a quarter of epochs ending with a higher sample loss: "bouncing"
OVERFIT_CAPACITY_SHRINK = 8    # when no LR passes: retry on 1/8 of the sample (at the best LR tried); a pass there
OVERFIT_CAPACITY_MIN = 16      # (at least 16 examples) means the model is too small for the sample, not broken
OVERFIT_RETRY_FACTORS = {      # LR multipliers retried on failure, in order, until one passes
    "high": (0.1, 0.01, 1e-3, 1e-4),
    "low": (10.0, 100.0, 1e3, 1e4),
    "unclear": (0.1, 10.0, 0.01, 100.0),
}


def overfit_attempt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tr: dict, task: str, *, batch_size: int,
                    steps: int, seed: int, attempt: int = 1) -> list[dict]:
    """Train `model` (in place) on the small sample (x, y) for up to `steps` iterations.

    One row per iteration: attempt, lr, iteration, loss (minibatch, before the update), acc; at the end of each
    pass over the sample also sample_loss and sample_acc (the whole sample, after the pass). Stops at 100%
    training accuracy (regression: loss below OVERFIT_REG_PASS of the mean's loss) or at NaN/Inf; otherwise runs
    the whole budget (at the end, OVERFIT_PASS_ACC passes).
    """
    from ..loop import loss_function

    loss_fn = loss_function(task, tr)
    opt = C.build_optimizer(model, tr)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    baseline = float(loss_fn(torch.full_like(y, float(y.mean())), y)) if task == "regression" else None
    def sample_metrics() -> tuple[float, float | None]:
        with torch.no_grad():  # the whole sample in training mode (batch norm on batch statistics, dropout is off)
            outs = torch.cat([_outputs(model, x[i:i + batch_size], task) for i in range(0, len(x), batch_size)])
            acc = float((outs.argmax(1) == y).double().mean()) if task == "classification" else None
            return float(loss_fn(outs, y)), acc

    model.train()
    loss0, acc0 = sample_metrics()
    rows: list[dict] = [{"attempt": attempt, "lr": tr["lr"], "iteration": 0, "loss": loss0, "acc": acc0,
                         "sample_loss": loss0, "sample_acc": acc0}]
    it, best, best_it = 0, loss0, 0
    while it < steps:
        model.train()
        for idx in torch.randperm(len(x), generator=g).to(x.device).split(batch_size):
            out = _outputs(model, x[idx], task)
            loss = loss_fn(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tr.get("grad_clip", 0.0) > 0:
                nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
            opt.step()
            it += 1
            row = {"attempt": attempt, "lr": tr["lr"], "iteration": it, "loss": float(loss.detach()),
                   "acc": float((out.argmax(1) == y[idx]).double().mean()) if task == "classification" else None,
                   "sample_loss": None, "sample_acc": None}
            rows.append(row)
            if not math.isfinite(row["loss"]) or it >= steps:
                break
        if not math.isfinite(rows[-1]["loss"]):
            break
        rows[-1]["sample_loss"], rows[-1]["sample_acc"] = sample_metrics()
        if rows[-1]["sample_loss"] < 0.99 * best:
            best, best_it = rows[-1]["sample_loss"], it
        elif it - best_it >= OVERFIT_FLAT_STOP * steps:
            break  # stuck
        if task == "classification" and rows[-1]["sample_acc"] == 1.0:
            break
        if task == "regression" and rows[-1]["sample_loss"] < OVERFIT_REG_PASS * baseline:
            break
    return rows


def _final(rows: list[dict], task: str, baseline: float | None) -> tuple[str, float]:
    """(status, score) of one attempt: accuracy (classification) or loss / mean's loss (regression)."""
    ends = [r for r in rows if r["sample_loss"] is not None]
    if not ends or not math.isfinite(rows[-1]["loss"]) or not math.isfinite(ends[-1]["sample_loss"]):
        return "fail", math.nan
    if task == "classification":
        acc = ends[-1]["sample_acc"]
        return ("pass" if acc >= OVERFIT_PASS_ACC else "warn" if acc >= OVERFIT_WARN_ACC else "fail"), acc
    frac = ends[-1]["sample_loss"] / baseline
    return ("pass" if frac < OVERFIT_REG_PASS else "warn" if frac < OVERFIT_REG_WARN else "fail"), frac


def diagnose(rows: list[dict]) -> tuple[str, str]:
    """(kind, words) from one attempt's loss trajectory: diverged, rising, flat, bouncing or slow."""
    bad = next((r for r in rows if not math.isfinite(r["loss"])), None)
    if bad is not None:
        return "high", f"the loss became NaN/Inf at iteration {bad['iteration']}: LR too high (or bad init)"
    ends = [r["sample_loss"] for r in rows if r["sample_loss"] is not None]  # whole-sample loss: init, each pass
    start, end = ends[0], ends[-1]
    if end > start * 1.05:
        return "high", f"the loss rose from {start:.3g} to {end:.3g}: LR too high (or bad init)"
    if end > start * (1 - OVERFIT_FLAT):
        return "low", (f"the loss stayed flat ({start:.3g} -> {end:.3g}): LR too low, bad init or dead units")
    ups = sum(b > a * 1.05 for a, b in itertools.pairwise(ends))
    if len(ends) > 4 and ups / (len(ends) - 1) > OVERFIT_BOUNCE:
        return "high", (f"the loss bounces up and down ({ups} of {len(ends) - 1} passes ended higher): "
                        f"decrease the LR")
    return "unclear", (f"the loss fell ({start:.3g} -> {end:.3g}) but not far enough within the budget: a higher LR, "
                       f"more iterations (--overfit-steps) or a bigger model")


def _better(a: float, b: float, task: str) -> bool:
    """Score a beats b: higher accuracy, lower loss ratio; NaN never wins."""
    if not math.isfinite(a):
        return False
    return not math.isfinite(b) or (a > b if task == "classification" else a < b)


def check_overfit_small(model: nn.Module, data, tr: dict, *, batch_size: int, batches: int = OVERFIT_BATCHES,
                        steps: int = OVERFIT_STEPS, seed: int = 0, retry: bool = True,
                        layer_failure: str = "", cause_by: str = "layer_health") -> tuple[Check, list[dict]]:
    """Check: a small sample to (nearly) 100% training accuracy with regularisation, dropout and augmentation off.

    On failure the loss trajectory names the likely cause and other LRs are retried to tell which (not when
    layer_failure, the advice of the earlier check `cause_by` that failed, already names the cause).
    """
    from ..loop import loss_function

    n = min(len(data.x_train), batches * batch_size, OVERFIT_MAX_EXAMPLES)
    idx = _seeded_rows(len(data.x_train), n, seed, data.x_train.device)
    x, y = data.x_train[idx], data.y_train[idx]
    tr0 = {**tr, "weight_decay": 0.0, "l1": 0.0}
    baseline = (float(loss_function(data.task, tr0)(torch.full_like(y, float(y.mean())), y))
                if data.task == "regression" else None)
    goal = (f"{OVERFIT_PASS_ACC:.0%} training accuracy" if data.task == "classification" else
            f"loss below {OVERFIT_REG_PASS:.0%} of predicting the mean")
    expected = f"{goal} on {n} examples within {steps} iterations"

    def attempt(lr: float, number: int, k: int = n) -> tuple[list[dict], str, float]:
        m = check_copy(model)
        xs, ys = x[:k], y[:k]
        base = baseline if k == n or baseline is None else float(
            loss_function(data.task, tr0)(torch.full_like(ys, float(ys.mean())), ys))
        rows = overfit_attempt(m, xs, ys, {**tr0, "lr": lr}, data.task, batch_size=batch_size, steps=steps,
                               seed=seed, attempt=number)
        return (rows, *_final(rows, data.task, base))

    lr = tr["lr"]
    rows, status, score = attempt(lr, 1)
    all_rows = list(rows)
    def score_txt(s: float) -> str:
        if not math.isfinite(s):
            return "diverged (NaN/Inf)"
        return f"{s:.1%} accuracy" if data.task == "classification" else f"loss {s:.3g} x the mean's"
    its = rows[-1]["iteration"]
    observed = f"{score_txt(score)} after {its} iterations at lr {lr:g}"
    if data.task == "classification" and status == "pass" and score < 1.0:
        observed += f" ({round((1 - score) * n)} of {n} examples not fitted: noisy or duplicate labels?)"
    details: dict[str, Any] = {"examples": n, "iterations": its, "score": score, "lr": lr, "attempts": []}
    if status == "pass":
        return Check("overfit_small", "pass", observed, expected, details=details), all_rows
    kind, words = diagnose(rows)
    advice = words
    if layer_failure:
        advice = f"{words.split(': ')[0]}. The cause, found by {cause_by}: {layer_failure}"
    if retry and status == "fail" and not layer_failure:
        best_lr, best_score = lr, score
        for number, factor in enumerate(OVERFIT_RETRY_FACTORS[kind], start=2):
            lr2 = lr * factor
            rows2, status2, score2 = attempt(lr2, number)
            all_rows += rows2
            details["attempts"].append({"lr": lr2, "status": status2, "score": score2})
            if _better(score2, best_score, data.task):
                best_lr, best_score = lr2, score2
            if status2 == "pass":  # the setup can learn: the recipe's LR is the problem, which lr-find solves
                side = "too high" if factor < 1 else "too low"
                status = "warn"
                advice = (f"passes at lr {lr2:g} ({score_txt(score2)} in {rows2[-1]['iteration']} iterations): your "
                          f"lr {lr:g} is {side} for this; set train.lr = {lr2:g} or run dlrecipe lr-find"
                          + (f". {words}" if kind == ("high" if factor < 1 else "low") else ""))
                break
        else:
            tried = ", ".join(f"{lr * f:g}" for f in OVERFIT_RETRY_FACTORS[kind])
            advice += f" (no pass at lr {tried} either: look at the init, the data and the model)"
            k = max(OVERFIT_CAPACITY_MIN, n // OVERFIT_CAPACITY_SHRINK)
            if k < n:  # can it memorise fewer examples? then the sample is too much for the model, not a bug
                rows3, status3, score3 = attempt(best_lr, len(OVERFIT_RETRY_FACTORS[kind]) + 2, k)
                all_rows += rows3
                details["capacity"] = {"examples": k, "lr": best_lr, "status": status3, "score": score3}
                if status3 != "fail":
                    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
                    status = "warn"
                    advice = (f"the model memorises {k} examples ({score_txt(score3)} at lr {best_lr:g}) but not "
                              f"{n}: with {params:,} trainable parameters it is too small to memorise the whole "
                              f"sample, which is no bug (a bigger model fits it; or --overfit-batches 1)")
    details.update(kind=kind)
    return Check("overfit_small", status, observed, expected, advice, details=details), all_rows



def run(ctx) -> Check:
    by, cause = ctx.cause("layer_health")
    check, ctx.tables["overfit"] = check_overfit_small(
        ctx.model, ctx.data, ctx.tr, batch_size=ctx.batch_size, batches=ctx.overfit_batches,
        steps=ctx.overfit_steps, seed=ctx.seed, retry=ctx.retry, layer_failure=cause, cause_by=by or "layer_health")
    return check
