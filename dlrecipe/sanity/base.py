"""What every check shares: the `Check` row, the `Context` a check reads, the `SanityResult`, and the helpers that
make a deterministic copy of the model and pick seeded rows."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

INPUT_SCALE_WARN = 10.0        # RMS of the inputs above this: advise normalising them (standardised data: ~1)
OVERFIT_FLAT = 0.10            # a loss that fell by less than 10% of its start is "flat"


@dataclass
class Check:
    """One row of sanity.csv."""

    check: str
    status: str                 # pass | warn | fail | skip (the check could not run on this model)
    observed: str
    expected: str
    advice: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # numbers behind the row (summary.json)


@dataclass
class Context:
    """What a check reads: the model at initialisation (never modified: checks work on copies), the data, the recipe,
    and the rows of the checks that ran before it. A check is `run(ctx) -> Check`; per-layer or per-iteration rows
    for the run folder's CSVs go in `tables` ("layers": layers.csv, "overfit": overfit.csv)."""

    model: nn.Module
    data: Any
    recipe: Any
    seed: int = 0
    overfit_batches: int = 8
    overfit_steps: int = 3000
    retry: bool = True
    earlier: dict[str, Check] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    causes: tuple[str, ...] = ()  # checks whose failure is the cause of later failures (the runner's STRUCTURAL)

    @property
    def tr(self) -> dict:
        return dict(self.recipe.section("train"))

    @property
    def batch_size(self) -> int:
        return self.recipe["data.batch_size"]

    def cause(self, *extra: str) -> tuple[str, str]:
        """(check, advice) of the first earlier check in `causes` (then `extra`) that failed, ("", "") when none
        did: the cause a later check names instead of guessing one of its own."""
        for name in (*self.causes, *extra):
            c = self.earlier.get(name)
            if c is not None and c.status == "fail":
                return name, c.advice or c.observed
        return "", ""


@dataclass
class SanityResult:
    run_dir: Path | None
    checks: list[Check]
    layers: list[dict]          # rows of layers.csv
    overfit: list[dict]         # rows of overfit.csv
    seconds: float = 0.0
    name: str = ""

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    def exit_code(self, strict: bool = False) -> int:
        """0 pass (warnings allowed unless strict), 1 any failure."""
        return 1 if self.status == "fail" or (strict and self.status == "warn") else 0

    @property
    def verdict(self) -> str:
        fails = [c.check for c in self.checks if c.status == "fail"]
        warns = [c.check for c in self.checks if c.status == "warn"]
        if fails:
            first = next(c for c in self.checks if c.status == "fail")
            return f"FAIL: {', '.join(fails)} failed. {first.advice}"
        skips = [c.check for c in self.checks if c.status == "skip"]
        skipped = f"; {', '.join(skips)} could not run (see its row)" if skips else ""
        if warns:
            first = next(c for c in self.checks if c.status == "warn")
            return f"PASS with warnings ({', '.join(warns)}){skipped}. {first.check}: {first.advice}"
        if skips:
            return f"PASS: {len(self.checks) - len(skips)} checks passed{skipped}"
        return f"PASS: all {len(self.checks)} checks passed; next step: dlrecipe lr-find"

    def to_json(self) -> str:
        """summary.json's content plus the per-layer rows; NaN/Inf written as null."""
        import json

        from ..runs import _clean

        return json.dumps(_clean(self.to_dict()), indent=2, default=str)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "command": "sanity", "status": self.status, "verdict": self.verdict,
                "run_dir": str(self.run_dir) if self.run_dir else None, "seconds": round(self.seconds, 3),
                "checks": [asdict(c) for c in self.checks], "layers": self.layers}


def _status(bad_fail: bool, bad_warn: bool) -> str:
    return "fail" if bad_fail else "warn" if bad_warn else "pass"


def check_copy(model: nn.Module, *, dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy in training mode with dropout, DropConnect and RReLU's random slope off (deterministic)."""
    from ..models import DropConnectLinear

    m = copy.deepcopy(model)
    if dtype is not None:
        m = m.to(dtype)
    m.train()
    for mod in m.modules():
        if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.RReLU)):
            mod.eval()
        if isinstance(mod, DropConnectLinear):
            mod.p = 0.0
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = 0.0  # batch statistics in the forward pass, running averages left alone
    return m


def _outputs(model: nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    out = model(x)
    return out.squeeze(-1) if task == "regression" else out


def _seeded_rows(n: int, k: int, seed: int, device) -> torch.Tensor:
    """k row indices out of n, a seeded permutation (the same rows on every run)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:k].to(device)


def _units(a: torch.Tensor) -> torch.Tensor:
    """Activations as (units, observations): MLP (B, H) -> (H, B); conv (B, C, ...) -> (C, B * positions)."""
    if a.dim() == 2:
        return a.t()
    return a.transpose(0, 1).reshape(a.shape[1], -1)


def input_rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())



def eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy in evaluation mode (dropout off, batch norm on its running statistics): what predictions use."""
    return copy.deepcopy(model).eval()


def batch(ctx: Context, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n seeded training rows (x, y), the same on every run."""
    d = ctx.data
    idx = _seeded_rows(len(d.x_train), min(n, len(d.x_train)), ctx.seed, d.x_train.device)
    return d.x_train[idx], d.y_train[idx]


def layer_name(names: dict, mod: nn.Module) -> str:
    """"layer 'fc1' (Linear 64->128)": how a check names a module of the model."""
    from .preflight import describe

    name = names.get(mod, "?")
    return f"the model's own forward ({type(mod).__name__})" if name == "" else f"layer '{name}' ({describe(mod)})"


def record_calls(model: nn.Module) -> tuple[list[tuple[nn.Module, tuple, Any]], Any]:
    """Forward hooks on every module: (module, inputs, output) in the order the calls end (innermost first, the
    model itself last). Returns the list and a function that removes the hooks."""
    calls: list[tuple[nn.Module, tuple, Any]] = []
    handles = [m.register_forward_hook(lambda mod, i, o: calls.append((mod, i, o))) for m in model.modules()]
    return calls, lambda: [h.remove() for h in handles]


def tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a module's inputs or output (a tensor, or a tuple / list / dict of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    return []


def not_already(advice: str, recipe) -> str:
    """Advice never recommends what the recipe already has: a suggested model.init = 'auto' where the init is
    already 'auto' becomes the next remedy (a named init for a python factory, whose 'auto' keeps its own init;
    batch norm for dlrecipe's models)."""
    import re

    if recipe["model.init"] != "auto" or "model.init = 'auto'" not in advice:
        return advice
    if recipe["model.kind"] == "python":
        named = ("model.init = 'he_normal' (relu) or 'xavier_normal' (tanh, sigmoid): with 'auto' your factory keeps "
                 "its own init")
        return re.sub(r"model\.init = 'auto'(: xavier/he)?( \(xavier for tanh, he for relu\))?", named, advice)
    bn = ("batch norm (model.norm = 'batch'; the init is already 'auto')" if recipe["model.norm"] != "batch" else
          "fewer layers or another activation (the init is already 'auto' and batch norm is on)")
    for pattern in (r"use model\.init = 'auto'( \(xavier for tanh, he for relu\))? or batch norm",
                    r"use model\.init = 'auto', relu, or batch norm", r"scale the init down \(model\.init = 'auto'[^)]*\)",
                    r"use He init \(model\.init = 'auto'\)", r"use a random init \(model\.init = 'auto'\)",
                    r"use model\.init = 'auto'"):
        advice = re.sub(pattern, f"use {bn}", advice)
    return advice.replace("model.init = 'auto'", bn)


# standard layers that are deterministic in evaluation mode and treat each example on its own: a finding first seen
# in the output of one of these was made by forward code just before it
PLAIN_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.Flatten, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU,
                nn.Tanh, nn.Sigmoid, nn.SELU, nn.Softmax, nn.LogSoftmax, nn.modules.pooling._MaxPoolNd,
                nn.modules.pooling._AvgPoolNd, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.Embedding)
