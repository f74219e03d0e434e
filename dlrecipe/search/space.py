"""The searched space: `search.space` entries parsed into distributions, and the fine stage's narrowing.

Lecture 003: LRs and weight decays around what worked in step 3 (coarse), then narrowed around the top-k coarse
trials (fine); log ranges are sampled and narrowed in log space.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import RecipeError, UserError
from ..recipe import SCHEMA, Recipe, _suggest
from ..runs import read_json


KINDS = ("log_uniform", "uniform", "int", "choice")

DEFAULT_WEIGHT_DECAYS = [0.0, 1e-5, 1e-4]  # lecture 003's coarse-search values
LR_DECADE = 10.0         # default LR range: one decade either side of the base LR (two decades in all)
NARROW_PAD = 0.1         # fine ranges: the top-k span plus 10% of the coarse width each side (at least)
EDGE = 0.1               # a best value in the outer 10% of its range (log space for log ranges) is at the edge

NOT_SEARCHABLE = ("name", "description", "task", "train.epochs")  # epochs are set by each stage
# keys that define the examples or their split: trials would be validated on different data (and ranked against
# each other), and the selected model tested on the recipe's split, which may hold its training examples
DATA_KEYS = ("seed", "data.source", "data.format", "data.target", "data.split", "data.preprocess", "data.shape",
             "data.n_samples", "data.noise", "data.classes")

@dataclass(frozen=True)
class Dist:
    """One searched recipe key: log_uniform / uniform / int over [low, high], or a choice of values."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    @property
    def log(self) -> bool:
        return self.kind == "log_uniform"

    def describe(self) -> dict[str, list]:
        """The recipe form, e.g. {"log_uniform": [0.001, 0.1]}."""
        return {self.kind: list(self.choices) if self.kind == "choice" else [self.low, self.high]}

    def suggest(self, trial) -> Any:
        """Sample (or read back, for a retried trial) this key's value through Optuna."""
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        if self.kind == "choice":
            return self.decode(trial.suggest_categorical(self.key, [_encode(c) for c in self.choices]))
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def decode(self, value: Any) -> Any:
        """Optuna's stored value -> the recipe value (list choices are stored as JSON text)."""
        if self.kind == "choice" and isinstance(value, str):
            for c in self.choices:
                if _encode(c) == value:
                    return c
        return value

    def unit(self, value: float) -> float:
        """Where `value` sits in the range: 0 at low, 1 at high (log space for log ranges)."""
        f = math.log10 if self.log else float
        return (f(value) - f(self.low)) / ((f(self.high) - f(self.low)) or 1.0)


def _encode(choice: Any) -> Any:
    """Optuna choices are None/bool/int/float/str: a list (e.g. model.hidden) travels as JSON text."""
    return json.dumps(choice) if isinstance(choice, list) else choice


def _check_value(recipe: Recipe, key: str, value: Any, where: str) -> None:
    try:
        recipe.with_values({key: value})
    except RecipeError as e:
        raise RecipeError(f"{where}: {e}") from None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_dist(recipe: Recipe, key: str, spec: Any) -> Dist:
    """One `search.space` entry -> Dist, or a RecipeError naming the key and quoting the bad values."""
    where = f'search.space."{key}"'
    if key not in SCHEMA:
        raise RecipeError(f"{where}: unknown key {key}{_suggest(key, list(SCHEMA))} (training settings can be "
                          f"searched: train.*, model.*, data.batch_size, the augmentation keys)")
    if key.startswith("search.") or key in NOT_SEARCHABLE:
        why = "train.epochs is set by each stage (search.coarse_epochs, search.fine_epochs)" \
            if key == "train.epochs" else "it is not a training setting"
        raise RecipeError(f"{where} cannot be searched: {why}")
    if key in DATA_KEYS:
        how = ("use --seeds N to see the selected model's spread over seeds" if key == "seed" else
               "compare such settings with separate runs (dlrecipe compare)")
        raise RecipeError(f"{where} cannot be searched: it changes the examples or their split, so trials would "
                          f"be validated on different data and the selected model tested on a split that may "
                          f"hold its training examples; {how}")
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
        raise RecipeError(f"{where} = {spec!r} is not allowed: expected one of {{log_uniform = [low, high]}}, "
                          f"{{uniform = [low, high]}}, {{int = [low, high]}}, {{choice = [value, ...]}}")
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise RecipeError(f"{where} = {{choice = {arg!r}}} is not allowed: expected a non-empty list of values")
        for v in arg:
            _check_value(recipe, key, v, where)
        return Dist(key, kind, choices=tuple(arg))
    if not (isinstance(arg, list) and len(arg) == 2 and all(_is_number(x) for x in arg)):
        raise RecipeError(f"{where} = {{{kind} = {arg!r}}} is not allowed: expected two numbers [low, high]")
    low, high = arg
    key_type = SCHEMA[key].type
    if kind == "int" and (key_type != "int" or not all(isinstance(x, int) for x in arg)):
        raise RecipeError(f"{where} = {{int = {arg}}} is not allowed: int ranges need an integer key and integer "
                          f"bounds ({key} is a {key_type} key)")
    if kind != "int" and key_type != "float":
        hint = "use {int = [low, high]} or {choice = [...]}" if key_type == "int" else "use {choice = [...]}"
        raise RecipeError(f"{where} = {{{kind} = {arg}}} is not allowed: {key} is a {key_type} key: {hint}")
    if low >= high:
        raise RecipeError(f"{where} = {{{kind} = {arg}}} is not allowed: low must be smaller than high "
                          f"(low={low}, high={high})")
    if kind == "log_uniform" and low <= 0:
        raise RecipeError(f"{where} = {{{kind} = {arg}}} is not allowed: low must be larger than 0 for a log range "
                          f"(low={low}, high={high})")
    _check_value(recipe, key, low, where)
    _check_value(recipe, key, high, where)
    return Dist(key, kind, low, high)


def parse_space(recipe: Recipe, lr_find: dict | None = None) -> dict[str, Dist]:
    """The recipe's `search.space`, or the default one when it is empty.

    Default (lecture 003): LR log-uniform over two decades around the lr-find recommendation (its `search_range`
    when it gives one) or the recipe's LR; weight decay from {0, 1e-5, 1e-4}. With an lr-find result, its LR
    range also replaces a `train.lr` entry of the recipe's own space (asking for --from-lr-find says so).
    """
    table = dict(recipe["search.space"])
    if lr_find and lr_find.get("search_range"):
        lr_range = list(lr_find["search_range"])
    else:
        base = (lr_find or {}).get("recommended_lr") or recipe["train.lr"]
        lr_range = [base / LR_DECADE, base * LR_DECADE]
    if not table:
        table = {"train.lr": {"log_uniform": lr_range}, "train.weight_decay": {"choice": DEFAULT_WEIGHT_DECAYS}}
    elif lr_find:
        table["train.lr"] = {"log_uniform": lr_range}
    return {key: parse_dist(recipe, key, spec) for key, spec in table.items()}


def _space_from(described: dict[str, dict]) -> dict[str, Dist]:
    """Rebuild a space stored as {key: {kind: [...]}} (already validated by the process that stored it)."""
    out = {}
    for key, spec in described.items():
        kind, arg = next(iter(spec.items()))
        out[key] = Dist(key, kind, choices=tuple(arg)) if kind == "choice" else Dist(key, kind, arg[0], arg[1])
    return out


def read_lr_find(path: str | Path) -> dict:
    """`recommended_lr` (and `search_range` when present) from an lr-find run folder or its summary.json."""
    p = Path(path)
    summary_path = p / "summary.json" if p.is_dir() else p
    if not summary_path.is_file():
        raise UserError(f"--from-lr-find {str(path)!r}: no summary.json there (give a dlrecipe lr-find run folder)")
    s = read_json(summary_path)
    lr = s.get("recommended_lr")
    if not _is_number(lr) or lr <= 0:
        raise UserError(f"--from-lr-find {str(path)!r}: summary.json has no recommended_lr (recommended_lr = "
                        f"{lr!r}): did lr-find finish?")
    rng = s.get("search_range")
    ok = isinstance(rng, list) and len(rng) == 2 and all(_is_number(x) for x in rng) and 0 < rng[0] < rng[1]
    return {"recommended_lr": float(lr), "search_range": [float(rng[0]), float(rng[1])] if ok else None,
            "run": str(p)}


def narrow(space: dict[str, Dist], top: list[dict[str, Any]]) -> dict[str, Dist]:
    """The fine space: each numeric range shrunk to the span of the top-k coarse values plus a margin.

    Log ranges are narrowed in log space. Choices stay whole (Optuna keeps a choice's values fixed within a study).
    The new range never leaves the coarse one; `edge_warnings` says when it should have.
    """
    out = dict(space)
    for key, d in space.items():
        values = [p[key] for p in top if key in p]
        if d.kind == "choice" or not values:
            continue
        f, inv = (math.log10, lambda t: 10 ** t) if d.log else (float, float)
        lo, hi = f(d.low), f(d.high)
        ts = [f(v) for v in values]
        pad = max(0.25 * (max(ts) - min(ts)), NARROW_PAD * (hi - lo))
        low, high = max(d.low, inv(min(ts) - pad)), min(d.high, inv(max(ts) + pad))
        if d.kind == "int":
            low, high = max(int(d.low), math.floor(low)), min(int(d.high), math.ceil(high))
        out[key] = replace(d, low=low, high=high)
    return out


def edge_warnings(space: dict[str, Dist], best: dict[str, Any]) -> list[str]:
    """One line per numeric key whose best coarse value sits in the outer 10% of its range."""
    lines = []
    for key, d in space.items():
        if d.kind == "choice" or key not in best:
            continue
        u = d.unit(best[key])
        side = "low" if u <= EDGE else "high" if u >= 1 - EDGE else None
        if side:
            lines.append(f"{key}: the best coarse value {best[key]:.3g} is at the {side} edge of its range "
                         f"[{d.low:g}, {d.high:g}]: widen the range {'below' if side == 'low' else 'above'} it")
    return lines

