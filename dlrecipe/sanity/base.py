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
    status: str                 # pass | warn | fail
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

    @property
    def tr(self) -> dict:
        return dict(self.recipe.section("train"))

    @property
    def batch_size(self) -> int:
        return self.recipe["data.batch_size"]

    def failure(self, *names: str) -> str:
        """The advice of the first of these earlier checks that failed ("" when none did): the cause later checks
        name instead of guessing their own."""
        for name in names:
            c = self.earlier.get(name)
            if c is not None and c.status == "fail":
                return f"{c.advice} (found by {name})" if c.advice else f"{name} failed"
        return ""


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
        if warns:
            return f"PASS with warnings ({', '.join(warns)}): the setup trains, but read the advice"
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

