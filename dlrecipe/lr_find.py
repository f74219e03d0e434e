"""`dlrecipe lr-find`: step 3 of the babysitting recipe, a learning rate that makes the loss go down, with evidence.

Three parts, all on the recipe's model, optimizer and full training split, with a small weight decay (lecture 003):

1. Probes. "A good LR makes the loss drop significantly within ~100 iterations" (lecture 003): each candidate LR
   trains a fresh copy of the model, from the same initialisation and on the same minibatches, for
   PROBE_ITERATIONS updates; its smoothed curve is classified diverged, flat or good (`classify`). Then the gap
   between the best good LR and the smallest diverged one above it is refined by halving, "start with a large LR
   and divide by 2 until the loss does not diverge" (lecture 002).
2. Range test (Smith 2017). One run with the LR growing exponentially, stopped at divergence, the model and the
   optimizer restored afterwards (`range_test`); three rules read a suggestion off its smoothed curve
   (`steepest`, `valley`, `min_over_10`), each NaN-safe.
3. Recommendation. The good probe with the lowest final smoothed loss, the evidence for it (which probes dropped,
   whether the range test agrees) and a range around it to search; `dlrecipe search` reads `recommended_lr` and
   `search_range` from the run's summary.json.

All thresholds are the named constants below; the README and `dlrecipe lr-find --help` quote them.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

# --- thresholds (documented in the README and in `dlrecipe lr-find --help`) ------------------------------------
DEFAULT_LRS = (1e-1, 1e-2, 1e-3, 1e-4)  # lecture 003's LRs to try
PROBE_ITERATIONS = 80        # updates per probe: lecture 003's "~100 iterations", 80 to leave a halving in the budget
PROBE_WEIGHT_DECAY = 1e-4    # "small weight decay" (lecture 003), used when the recipe's train.weight_decay is 0
SMOOTHING = 0.9              # EMA of the loss, s_t = 0.9 s_(t-1) + 0.1 loss_t, bias-corrected: ~10-iteration window
DIVERGED_FACTOR = 2.0        # diverged: NaN/Inf, or the smoothed loss rose above 2x its start
REBOUND_FRACTION = 0.5       # diverged too: after dropping, the loss climbed back by more than half of its drop
FLAT_FRACTION = 0.2          # flat: the smoothed loss fell by less than 20% of its start
MAX_HALVINGS = 3             # refinement probes between the smallest diverged LR and the best good LR below it
RANGE_START_LR = 1e-7        # range test: first LR ...
RANGE_END_LR = 10.0          # ... last LR, reached after RANGE_ITERATIONS updates growing exponentially
RANGE_ITERATIONS = 100       # range test length: 12 points per decade over 1e-7..10
RANGE_STOP_FACTOR = 4.0      # range test stops when the smoothed loss exceeds 4x its minimum so far (as fastai)
RANGE_SKIP_START = 10         # the rules ignore the first 10 range-test updates: the EMA is still warming up there
ITERATION_BUDGET = 500       # updates per seed in all: 4 probes x 80 + range test 100 + one halving probe
SEARCH_BELOW = 10.0          # search range: recommended / 10 ...
SEARCH_ABOVE = 3.0           # ... to recommended x 3, never above an LR whose probe diverged
AGREE_BELOW = 10.0           # the range test agrees when recommended is in [min(rules) / 10, LR at the loss minimum]

VERDICTS = ("good", "flat", "diverged")


# --- curves: smoothing, classification, range-test rules ----------------------------------------------------------

def smooth(losses: Sequence[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average of a loss curve; NaN from the first non-finite loss onwards."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        if not math.isfinite(loss) or (out and not math.isfinite(out[-1])):
            out.append(math.nan)
            continue
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


@dataclass(frozen=True)
class Verdict:
    """How one probe's loss curve behaved, measured on the smoothed loss."""

    verdict: str             # good | flat | diverged
    start_loss: float        # smoothed loss at the first update (= the first minibatch's loss)
    final_loss: float        # smoothed loss at the last update (NaN when diverged to NaN/Inf)
    min_loss: float
    drop: float              # (start - final) / start: the fraction of the start loss that was lost
    reason: str


def classify(losses: Sequence[float]) -> Verdict:
    """Diverged, flat or good, from a probe's raw losses (thresholds: DIVERGED_FACTOR, REBOUND_FRACTION,
    FLAT_FRACTION)."""
    s = smooth(losses)
    if not s:
        return Verdict("flat", math.nan, math.nan, math.nan, 0.0, "no iterations")
    start = s[0]
    bad = next((i for i, v in enumerate(s) if not math.isfinite(v)), None)
    finite = s if bad is None else s[:bad]
    low = min(finite) if finite else math.nan
    if bad is not None:
        return Verdict("diverged", start, math.nan, low, math.nan, f"loss became NaN/Inf at iteration {bad + 1}")
    final = s[-1]
    scale = abs(start) if start != 0 else 1.0
    drop = (start - final) / scale
    peak = max(s)
    if peak > DIVERGED_FACTOR * start:
        return Verdict("diverged", start, final, low, drop,
                       f"loss rose to {peak / scale:.1f}x its start (limit {DIVERGED_FACTOR:g}x)")
    if start - low >= FLAT_FRACTION * scale and final - low > REBOUND_FRACTION * (start - low):
        return Verdict("diverged", start, final, low, drop,
                       f"loss fell to {low:.3g}, then climbed back to {final:.3g}")
    if drop < FLAT_FRACTION:
        return Verdict("flat", start, final, low, drop, f"loss fell {drop:.0%} (under {FLAT_FRACTION:.0%})")
    return Verdict("good", start, final, low, drop, f"loss fell {drop:.0%}")


def _descent(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[list[float], list[float]]:
    """The range test's (lr, smoothed loss) points the rules read: the finite prefix, without the EMA's warm-up
    (RANGE_SKIP_START updates, fewer for a short test)."""
    xs, ys = [], []
    for lr, s in zip(lrs, smoothed):
        if not (math.isfinite(s) and math.isfinite(lr) and lr > 0):
            break
        xs.append(lr)
        ys.append(s)
    skip = min(RANGE_SKIP_START, len(xs) // 5)
    return xs[skip:], ys[skip:]


def steepest(lrs: Sequence[float], smoothed: Sequence[float]) -> float | None:
    """The LR where the smoothed loss falls fastest against log10(LR), before its minimum (torch-lr-finder's rule)."""
    import numpy as np

    xs, ys = _descent(lrs, smoothed)
    if len(xs) < 3:
        return None
    stop = int(np.argmin(ys)) + 1  # past the minimum the loss only rises
    if stop < 3:
        return None
    grad = np.gradient(np.asarray(ys[:stop]), np.log10(xs[:stop]))
    return float(xs[int(np.argmin(grad))])


def valley(lrs: Sequence[float], smoothed: Sequence[float]) -> float | None:
    """fastai's valley rule: the middle of the longest decreasing stretch of the smoothed loss (O(n^2), n ~ 100)."""
    xs, ys = _descent(lrs, smoothed)
    n = len(ys)
    if n < 3:
        return None
    lds = [1] * n  # lds[i]: longest decreasing subsequence ending at i
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if ys[i] < ys[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    return float(xs[max(0, max_start + int(sections) + int(sections / 2))])


def min_over_10(lrs: Sequence[float], smoothed: Sequence[float]) -> float | None:
    """The LR of the smoothed loss's minimum, divided by 10 (the original LR range test heuristic)."""
    xs, ys = _descent(lrs, smoothed)
    if len(xs) < 2:
        return None
    return xs[min(range(len(ys)), key=ys.__getitem__)] / 10


RULES: dict[str, Callable[[Sequence[float], Sequence[float]], float | None]] = {
    "steepest": steepest, "valley": valley, "min_over_10": min_over_10,
}


# --- training iterations --------------------------------------------------------------------------------------

def _stream(data, batch_size: int, seed: int) -> Iterator:
    """Minibatch index tensors forever, epoch after epoch, in a seeded order (the same for every probe)."""
    import torch

    from .data import batches

    gen = torch.Generator().manual_seed(seed)
    while True:
        yield from batches(len(data.x_train), batch_size, gen, data.x_train.device)


@dataclass
class _Steps:
    """One model + optimizer taking minibatch steps at a given LR, as loop.fit does (L1, clipping, augmentation)."""

    model: Any
    optimizer: Any
    data: Any
    tr: dict
    seed: int
    batch_size: int
    augment: list[str] = field(default_factory=list)
    aug_cfg: dict = field(default_factory=dict)

    def run(self, lr_at: Callable[[int], float], iterations: int,
            stop: Callable[[float, float], bool]) -> tuple[list[float], list[float]]:
        """Up to `iterations` updates; lr_at(i) sets the LR of update i; stop(loss, smoothed) ends early.

        Returns (lrs, losses): the loss of each minibatch before its update. A NaN/Inf loss ends the run
        without updating, so the weights stay finite.
        """
        import torch
        from torch import nn

        from . import augment as A
        from . import components as C
        from .loop import loss_function

        torch.manual_seed(self.seed)  # dropout, DropConnect, RReLU
        aug_gen = torch.Generator(device=self.data.x_train.device).manual_seed(self.seed + 1)
        loss_fn = loss_function(self.data.task, self.tr)
        l1, clip = self.tr.get("l1", 0.0), self.tr.get("grad_clip", 0.0)
        stream = _stream(self.data, self.batch_size, self.seed)
        self.model.train()
        lrs, losses, avg = [], [], 0.0
        for i in range(iterations):
            lr = lr_at(i)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            idx = next(stream)
            xb, yb = self.data.x_train[idx], self.data.y_train[idx]
            yb_b, lam = None, 1.0
            if self.augment:
                xb, yb, yb_b, lam = A.apply(xb, yb, self.augment, aug_gen, **self.aug_cfg)
            out = self.model(xb)
            if self.data.task == "regression":
                out = out.squeeze(-1)  # (B, 1) -> (B,)
            loss = loss_fn(out, yb)
            if yb_b is not None:  # mixup
                loss = lam * loss + (1 - lam) * loss_fn(out, yb_b)
            value = float(loss.detach())
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                break
            objective = loss + C.weight_penalty(self.model, l1) if l1 > 0 else loss
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            avg = SMOOTHING * avg + (1 - SMOOTHING) * value
            if stop(value, avg / (1 - SMOOTHING ** (i + 1))):
                break
        return lrs, losses


def probe(steps: _Steps, lr: float, iterations: int = PROBE_ITERATIONS) -> list[float]:
    """Train at a constant LR for `iterations` updates (fewer when it diverges); return the raw losses."""
    start: list[float] = []

    def stop(loss: float, smoothed: float) -> bool:
        if not start:
            start.append(smoothed)
        return smoothed > DIVERGED_FACTOR * start[0]

    return steps.run(lambda i: lr, iterations, stop)[1]


@dataclass
class RangeTest:
    """One LR range test: the LR of each update, its loss, the smoothed loss and each rule's suggestion."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stopped: str                      # why it ended, in words
    suggestions: dict[str, float | None]
    seed: int = 0

    def lr_at_min(self) -> float | None:
        xs, ys = _descent(self.lrs, self.smoothed)
        return xs[min(range(len(ys)), key=ys.__getitem__)] if xs else None


def range_test(model, optimizer, data, tr: dict, *, start_lr: float = RANGE_START_LR, end_lr: float = RANGE_END_LR,
               iterations: int = RANGE_ITERATIONS, seed: int = 0, batch_size: int = 64,
               augment: list[str] | None = None, aug_cfg: dict | None = None) -> RangeTest:
    """Smith's LR range test: LR from start_lr to end_lr, exponentially, over `iterations` updates.

    Stops when the loss is NaN/Inf or the smoothed loss exceeds RANGE_STOP_FACTOR x its minimum so far. The rules'
    suggestions are None when the smoothed loss never fell by FLAT_FRACTION (nothing to read off the curve). The
    model's weights and buffers, its train/eval mode and the optimizer's state (momentum buffers, LRs) are
    restored afterwards, even when it fails.
    """
    check_range_bounds(start_lr, end_lr)
    if iterations < 2:
        raise UserError(f"range test iterations = {iterations}: at least 2 are needed")
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    ratio = end_lr / start_lr
    best = [math.inf]
    why = [f"reached the end LR {end_lr:g}"]

    def stop(loss: float, smoothed: float) -> bool:
        best[0] = min(best[0], smoothed)
        if smoothed > RANGE_STOP_FACTOR * best[0]:
            why[0] = f"smoothed loss above {RANGE_STOP_FACTOR:g}x its minimum"
            return True
        return False

    try:
        steps = _Steps(model, optimizer, data, tr, seed, batch_size, augment or [], aug_cfg or {})
        lrs, losses = steps.run(lambda i: start_lr * ratio ** (i / (iterations - 1)), iterations, stop)
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        model.train(was_training)
    if losses and not math.isfinite(losses[-1]):
        why[0] = f"loss became NaN/Inf at LR {lrs[-1]:.3g}"
    smoothed = smooth(losses)
    finite = [v for v in smoothed if math.isfinite(v)]
    fell = bool(finite) and min(finite) <= (1 - FLAT_FRACTION) * finite[0]
    if not fell:  # a flat curve's steepest point is noise: no suggestion rather than a random one
        why[0] += f"; the loss never fell by {FLAT_FRACTION:.0%}, no suggestion"
    suggestions = {name: rule(lrs, smoothed) if fell else None for name, rule in RULES.items()}
    return RangeTest(lrs, losses, smoothed, f"stopped after {len(losses)} updates: {why[0]}", suggestions, seed)


def check_range_bounds(start_lr: float, end_lr: float) -> None:
    if not (math.isfinite(start_lr) and math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise UserError(f"range test bounds start_lr = {start_lr:g}, end_lr = {end_lr:g} are not allowed: "
                        f"0 < start_lr < end_lr")


# --- recommendation -------------------------------------------------------------------------------------------

@dataclass
class ProbeCurve:
    """One probe's raw and smoothed losses, for one LR and one seed."""

    lr: float
    seed: int
    stage: str                # grid (the candidate LRs) or halving (the refinement)
    losses: list[float]
    verdict: Verdict

    @property
    def smoothed(self) -> list[float]:
        return smooth(self.losses)


def _aggregate(curves: list[ProbeCurve]) -> list[dict]:
    """One row per LR over seeds, largest LR first: diverged if any seed diverged, good only if every seed was."""
    rows = []
    for lr in sorted({c.lr for c in curves}, reverse=True):
        mine = [c for c in curves if c.lr == lr]
        verdicts = [c.verdict.verdict for c in mine]
        verdict = "diverged" if "diverged" in verdicts else "good" if set(verdicts) == {"good"} else "flat"
        mean = lambda xs: statistics.fmean(xs) if all(math.isfinite(x) for x in xs) else math.nan
        reason = "; ".join(sorted({c.verdict.reason for c in mine}))
        rows.append({
            "lr": lr, "stage": mine[0].stage, "verdict": verdict,
            "start_loss": mean([c.verdict.start_loss for c in mine]),
            "final_loss": mean([c.verdict.final_loss for c in mine]),
            "drop": mean([c.verdict.drop for c in mine]),
            "iterations": max(len(c.losses) for c in mine),
            "seed_verdicts": verdicts, "reason": reason,
        })
    return rows


def choose(rows: list[dict]) -> tuple[float, str]:
    """The recommended LR from aggregated probe rows, and a status: ok, all_flat or all_diverged.

    ok: the good probe with the lowest final smoothed loss. all_flat: nothing dropped enough, the non-diverged
    probe with the lowest final loss. all_diverged: a tenth of the smallest LR tried.
    """
    good = [r for r in rows if r["verdict"] == "good"]
    if good:
        return min(good, key=lambda r: (r["final_loss"], -r["lr"]))["lr"], "ok"
    alive = [r for r in rows if r["verdict"] == "flat" and math.isfinite(r["final_loss"])]
    if alive:
        return min(alive, key=lambda r: (r["final_loss"], -r["lr"]))["lr"], "all_flat"
    return min(r["lr"] for r in rows) / 10, "all_diverged"


def halving_bounds(rows: list[dict]) -> tuple[float, float] | None:
    """(upper, lower): halve from `upper`, the smallest diverged LR above the current choice, while above `lower`."""
    lr, status = choose(rows)
    if status == "all_diverged":
        return min(r["lr"] for r in rows), 0.0
    above = [r["lr"] for r in rows if r["verdict"] == "diverged" and r["lr"] > lr]
    if not above:
        return None
    upper = min(above)
    below = [r["lr"] for r in rows if r["lr"] < upper and r["verdict"] != "diverged"]
    return upper, max(below, default=0.0)


def search_range(recommended: float, rows: list[dict]) -> tuple[float, float]:
    """[recommended / SEARCH_BELOW, recommended x SEARCH_ABOVE], the top capped at the smallest diverged LR above."""
    high = recommended * SEARCH_ABOVE
    diverged = [r["lr"] for r in rows if r["verdict"] == "diverged" and r["lr"] > recommended]
    if diverged:
        high = min(high, min(diverged))
    return recommended / SEARCH_BELOW, high


def _geomedian(values: list[float | None]) -> float | None:
    """Median of the positive finite values on a log scale (None when there are none)."""
    logs = [math.log(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    return math.exp(statistics.median(logs)) if logs else None


def agreement(recommended: float, rules: dict[str, float | None], lr_at_min: float | None) -> tuple[bool | None, str]:
    """Does the range test agree? Yes when recommended lies in [min(rules) / AGREE_BELOW, LR at the loss minimum]."""
    found = [v for v in rules.values() if v is not None]
    if not found or lr_at_min is None:
        return None, "the range test gave no suggestion (its loss never fell before diverging)"
    low = min(found) / AGREE_BELOW
    if recommended > lr_at_min:
        return False, (f"the range test disagrees: its loss was lowest at {lr_at_min:.3g}, below {recommended:.3g} "
                       f"(an increasing LR diverges earlier than a constant one; the probes are the direct test)")
    if recommended < low:
        return False, (f"the range test disagrees: its rules suggest larger LRs ({_fmt_rules(rules)}); "
                       f"try adding larger --lrs")
    return True, (f"the range test agrees: {recommended:.3g} lies between its smallest suggestion / "
                  f"{AGREE_BELOW:g} and its loss minimum at {lr_at_min:.3g} ({_fmt_rules(rules)})")


def _fmt_rules(rules: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in rules.items() if v is not None)


def _evidence(rows: list[dict], recommended: float, status: str) -> str:
    said = []
    for r in rows:
        drop = "-" if not math.isfinite(r["drop"]) else f"{r['drop']:.0%}"
        said.append(f"{r['lr']:g} {r['verdict']} ({drop})" if r["verdict"] != "diverged"
                    else f"{r['lr']:g} diverged")
    probes = "probes, loss drop in ~" + f"{PROBE_ITERATIONS} updates: " + ", ".join(said)
    if status == "ok":
        return f"{recommended:.3g} reached the lowest smoothed loss of the good probes; {probes}"
    if status == "all_flat":
        return (f"no probe dropped the loss by {FLAT_FRACTION:.0%}: the LRs are too low or the init is bad "
                f"(lectures 002/003; try larger --lrs or dlrecipe sanity); {probes}")
    return (f"every probe diverged: too large LRs, a bad init or a bug (lecture 002; try smaller --lrs or "
            f"dlrecipe sanity); {probes}")


# --- the command ----------------------------------------------------------------------------------------------

@dataclass
class LrFindResult:
    """What `lr_find` found: the recommendation, its evidence, and every curve behind it."""

    recommended_lr: float
    search_range: tuple[float, float]
    status: str                          # ok | all_flat | all_diverged
    evidence: str
    range_agrees: bool | None
    rules: dict[str, float | None]       # each rule's suggestion: probes, steepest, valley, min_over_10
    probes: list[dict]                   # aggregated rows, largest LR first
    curves: list[ProbeCurve]
    range_tests: list[RangeTest]         # one per seed
    per_seed: list[dict]                 # {"seed", "recommended_lr", rule: suggestion}
    summary: dict
    run_dir: Path | None = None


def parse_lrs(text: str) -> list[float]:
    """'0.1,0.01,1e-3' -> [0.1, 0.01, 0.001]; positive, finite, distinct."""
    try:
        values = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise UserError(f"--lrs {text!r}: expected comma-separated numbers, e.g. --lrs 0.1,0.01,0.001") from None
    check_lrs(values)
    return values


def check_lrs(lrs: Sequence[float]) -> None:
    if not lrs:
        raise UserError("lrs is empty: give at least one learning rate, e.g. --lrs 0.1,0.01")
    bad = [v for v in lrs if not (math.isfinite(v) and v > 0)]
    if bad:
        raise UserError(f"lrs {list(lrs)}: {bad[0]:g} is not allowed, learning rates must be positive and finite")
    if len(set(lrs)) != len(lrs):
        raise UserError(f"lrs {list(lrs)}: a learning rate appears twice")


def lr_find(recipe, *, device: str = "auto", runs_dir: str | Path | None = "runs", seeds: int = 1,
            lrs: Sequence[float] | None = None, start_lr: float = RANGE_START_LR, end_lr: float = RANGE_END_LR,
            iterations: int = PROBE_ITERATIONS, range_iterations: int = RANGE_ITERATIONS,
            budget: int = ITERATION_BUDGET, data=None, log: Callable[[str], None] | None = None,
            folder: str | None = None) -> LrFindResult:
    """Probe, refine, range-test and recommend a learning rate for `recipe` (see the module docstring).

    seeds: repeat with seeds recipe.seed, +1, ...: verdicts must hold for every seed, and each seed's own
    recommendation is reported (per_seed) to show the spread. budget: updates per seed in all; refinement
    probes run only while it allows. runs_dir None: write nothing. data: already loaded data (tests, bench).
    folder: the run folder's exact name under runs_dir (default: <time>-<name>-lr-find).
    """
    from . import augment as A
    from . import components as C
    from .data import load_data
    from .models import build_model
    from .runs import marks_interrupted, resolve_device, start_run

    if seeds < 1:
        raise UserError(f"--seeds {seeds}: at least 1")
    lrs = list(DEFAULT_LRS if lrs is None else lrs)
    check_lrs(lrs)
    check_range_bounds(start_lr, end_lr)
    if iterations < 2 or range_iterations < 2:
        raise UserError(f"iterations = {iterations}, range iterations = {range_iterations}: at least 2 each")
    log = log or (lambda message: None)
    t0 = time.perf_counter()
    device = resolve_device(device)
    if data is None:
        data = load_data(recipe, device)  # before the run folder: a bad data file leaves nothing behind

    tr = dict(recipe.section("train"))
    tr["weight_decay"] = tr["weight_decay"] or PROBE_WEIGHT_DECAY
    d = recipe.section("data")
    aug_cfg = A.config(d)
    seed_list = [recipe["seed"] + k for k in range(seeds)]
    models, inits = {}, {}
    for s in seed_list:
        models[s] = build_model(recipe, data, seed=s).to(device)
        inits[s] = copy.deepcopy(models[s].state_dict())  # every probe of this seed starts here
    used = dict.fromkeys(seed_list, 0)
    run_dir = None if runs_dir is None else start_run(recipe, runs_dir, "lr-find", device, folder)  # data and model built
    with marks_interrupted(run_dir, recipe.name, "lr-find"):
        def steps_for(s: int, lr: float) -> _Steps:
            model = models[s]
            model.load_state_dict(inits[s])
            optimizer = C.build_optimizer(model, dict(tr, lr=lr))
            return _Steps(model, optimizer, data, tr, s, d["batch_size"], d["augment"], aug_cfg)

        curves: list[ProbeCurve] = []

        def run_probes(lr: float, stage: str) -> dict:
            for s in seed_list:
                losses = probe(steps_for(s, lr), lr, iterations)
                used[s] += len(losses)
                curves.append(ProbeCurve(lr, s, stage, losses, classify(losses)))
            row = next(r for r in _aggregate(curves) if r["lr"] == lr)
            log(f"probe lr {lr:<8g} {row['verdict']:<8} {row['reason']}")
            return row

        for lr in sorted(lrs, reverse=True):
            run_probes(lr, "grid")

        # refinement (lecture 002): halve down from the smallest diverged LR above the choice, while the budget allows
        bounds = halving_bounds(_aggregate(curves))
        if bounds is not None:
            upper, lower = bounds
            lr = upper / 2
            for _ in range(MAX_HALVINGS):
                if lr <= lower * 1.5 or budget - range_iterations - max(used.values()) < iterations:
                    break  # the next halving would land on (or next to) a probed LR, or the budget is spent
                if run_probes(lr, "halving")["verdict"] == "good":
                    break
                lr /= 2

        rows = _aggregate(curves)
        recommended, status = choose(rows)

        tests = []
        for s in seed_list:
            steps = steps_for(s, start_lr)
            tests.append(range_test(steps.model, steps.optimizer, data, tr, start_lr=start_lr, end_lr=end_lr,
                                    iterations=range_iterations, seed=s, batch_size=d["batch_size"],
                                    augment=d["augment"], aug_cfg=aug_cfg))
            used[s] += len(tests[-1].losses)
            found = _fmt_rules(tests[-1].suggestions)
            log(f"range test (seed {s}): {tests[-1].stopped}" + (f"; {found}" if found else ""))

        per_seed = []
        for s, test in zip(seed_list, tests):
            own, _ = choose(_aggregate([c for c in curves if c.seed == s]))
            per_seed.append({"seed": s, "recommended_lr": own, **test.suggestions})
        rules = {"probes": recommended, **{name: _geomedian([t.suggestions[name] for t in tests]) for name in RULES}}
        range_rules = {k: v for k, v in rules.items() if k != "probes"}
        agrees, agree_text = agreement(recommended, range_rules, _geomedian([t.lr_at_min() for t in tests]))
        low, high = (float(f"{v:.4g}") for v in search_range(recommended, rows))
        evidence = _evidence(rows, recommended, status) + "; " + agree_text
        own = [p["recommended_lr"] for p in per_seed]
        summary = {
            "name": recipe.name, "command": "lr-find", "status": status,
            "recommended_lr": recommended, "search_range": [low, high],
            "evidence": evidence, "range_test_agrees": agrees, "rules": rules,
            "probes": [dict(r) for r in rows],
            "range_test": [{"seed": t.seed, "stopped": t.stopped, "lr_at_min": t.lr_at_min(), **t.suggestions}
                           for t in tests],
            "seeds": seed_list, "per_seed": per_seed,
            "spread": {"min": min(own), "max": max(own), "ratio": max(own) / min(own)},
            "iterations": max(used.values()), "budget": budget,
            "thresholds": {"probe_iterations": iterations, "smoothing": SMOOTHING, "diverged_factor": DIVERGED_FACTOR,
                           "rebound_fraction": REBOUND_FRACTION, "flat_fraction": FLAT_FRACTION,
                           "probe_weight_decay": tr["weight_decay"], "range": [start_lr, end_lr, range_iterations],
                           "range_stop_factor": RANGE_STOP_FACTOR, "search_below": SEARCH_BELOW,
                           "search_above": SEARCH_ABOVE},
            "seconds": time.perf_counter() - t0, "seed": recipe["seed"],
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        result = LrFindResult(recommended, (low, high), status, evidence, agrees, rules, rows, curves, tests, per_seed,
                              summary, run_dir)
        if run_dir is not None:
            write_outputs(result, run_dir)
        return result


def check_apply_path(out: str | Path, recipe_path: str | Path | None) -> Path:
    """Where --apply may write: never the input recipe itself, and into a folder that exists."""
    out = Path(out)
    if recipe_path is not None and (out.resolve() == Path(recipe_path).resolve()
                                    or (out.exists() and out.samefile(recipe_path))):
        raise UserError(f"--apply {out}: that is the input recipe, which lr-find never changes; "
                        f"write the copy to another file, e.g. --apply {Path(recipe_path).stem}_lr.toml")
    if not out.parent.is_dir():
        raise UserError(f"--apply {out}: folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise UserError(f"--apply {out}: is a folder, expected a file name such as tuned.toml")
    return out


def apply_lr(recipe, lr: float, out: str | Path, note: str = "") -> Path:
    """Write a copy of `recipe` with train.lr = lr to `out` (not the recipe's own file).

    A data file named relative to the recipe's folder is rewritten relative to out's folder, so the copy loads
    the same data wherever it is written.
    """
    import os

    from .data import DATASETS, resolve_source
    from .recipe import validate

    out = check_apply_path(out, recipe.path)
    overrides: dict[str, Any] = {"train.lr": float(f"{lr:.4g}")}
    source = recipe["data.source"]
    if source not in DATASETS and not Path(source).is_absolute():
        found = resolve_source(source, recipe["data.format"], recipe.path)
        overrides["data.source"] = os.path.relpath(found.resolve(), out.resolve().parent)
    if "data.source" in overrides:  # validated where it will live, so the rewritten path resolves
        copy_ = validate({**recipe.user_values(), **overrides}, path=out)
    else:
        copy_ = recipe.with_values(overrides)
    header = f"# written by dlrecipe lr-find from {recipe.path}: train.lr = {overrides['train.lr']:g}"
    out.write_text(header + (f" ({note})" if note else "") + "\n" + copy_.to_toml())
    return out


def write_outputs(result: LrFindResult, run_dir: Path) -> None:
    """probes.csv, range_test.csv, lr_find.png and summary.json (last: its presence marks a finished run)."""
    from .runs import CsvLog, write_json

    several = len(result.range_tests) > 1
    seed_col = ["seed"] if several else []
    with CsvLog(run_dir / "probes.csv", ["lr", *seed_col, "iteration", "loss", "smoothed_loss"]) as log:
        for c in result.curves:
            for i, (loss, s) in enumerate(zip(c.losses, c.smoothed), start=1):
                log.write({"lr": c.lr, "seed": c.seed, "iteration": i, "loss": loss, "smoothed_loss": s})
    with CsvLog(run_dir / "range_test.csv", ["lr", *seed_col, "loss", "smoothed_loss"]) as log:
        for t in result.range_tests:
            for lr, loss, s in zip(t.lrs, t.losses, t.smoothed):
                log.write({"lr": lr, "seed": t.seed, "loss": loss, "smoothed_loss": s})
    plot(result, run_dir / "lr_find.png")
    write_json(run_dir / "summary.json", result.summary)


def plot(result: LrFindResult, path: Path) -> None:
    """Probe curves (smoothed loss per iteration) beside the range test (smoothed loss against LR, log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab10")
    lrs = [r["lr"] for r in result.probes]
    verdicts = {r["lr"]: r["verdict"] for r in result.probes}
    for c in result.curves:
        k = lrs.index(c.lr) % 10
        first = c.seed == result.range_tests[0].seed
        left.plot(range(1, len(c.losses) + 1), c.losses, color=colours(k), alpha=0.15, lw=0.8)
        left.plot(range(1, len(c.losses) + 1), c.smoothed, color=colours(k), lw=1.6,
                  ls="--" if c.stage == "halving" else "-",
                  label=f"{c.lr:g}: {verdicts[c.lr]}" if first else None)
    finite = [v for c in result.curves for v in c.losses if math.isfinite(v)]
    if finite:
        top = max(c.verdict.start_loss for c in result.curves if math.isfinite(c.verdict.start_loss))
        left.set_ylim(0, DIVERGED_FACTOR * top * 1.1)
    left.set(xlabel="iteration", ylabel="training loss (smoothed; raw faint)",
             title=f"probes: loss drop in {PROBE_ITERATIONS} updates")
    left.legend(title="LR: verdict", fontsize=8)
    for t in result.range_tests:
        right.plot(t.lrs, t.losses, color="grey", alpha=0.25, lw=0.8)
        right.plot(t.lrs, t.smoothed, color="black", lw=1.5)
    markers = {"steepest": "tab:blue", "valley": "tab:green", "min_over_10": "tab:purple"}
    for name, colour in markers.items():
        value = result.rules.get(name)
        if value is not None:
            right.axvline(value, color=colour, ls=":", label=f"{name} {value:.3g}")
    right.axvline(result.recommended_lr, color="tab:red", lw=2, label=f"recommended {result.recommended_lr:.3g}")
    right.axvspan(*result.search_range, color="tab:red", alpha=0.08, label="search range")
    starts = [t.smoothed[0] for t in result.range_tests if t.smoothed and math.isfinite(t.smoothed[0])]
    if starts:
        right.set_ylim(0, 1.5 * max(starts))  # the blow-up at the end goes off the top
    right.set_xscale("log")
    right.set(xlabel="learning rate", ylabel="training loss", title="range test (LR growing exponentially)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
