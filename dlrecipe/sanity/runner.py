"""The runner: the registry of checks in their standard order, `parse_only`, and `run_sanity`, which builds the model
once, runs each check on a `Context` and writes the run folder."""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import UserError
from .base import Check, Context, SanityResult
from .outputs import merge_layer_columns, write_outputs
from .overfit_small import OVERFIT_BATCHES, OVERFIT_STEPS

# the checks in the order they run (and appear in sanity.csv); each is the module of the same name, with NAME and
# run(ctx) -> Check: a new check is one module, one name here, and its test
ORDER = ("init_loss", "gradient_check", "layer_health", "update_ratio", "input_independent", "overfit_small")
REGISTRY: dict[str, Callable[[Context], Check]] = {
    name: importlib.import_module(f"{__package__}.{name}").run for name in ORDER}
CHECKS = tuple(REGISTRY)

SANITY_CPU_THREADS = 1         # torch threads on CPU while the checks run (restored afterwards): batches of <= 256
                               # examples gain little from intra-op threads, and lose 10-50x when the cores are busy


def parse_only(only: str | list[str] | None) -> list[str]:
    """'init_loss,overfit_small' -> the checks to run, in their standard order; unknown names are a UserError."""
    if only is None or only == "" or only == []:
        return list(CHECKS)
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    unknown = [s for s in names if s not in CHECKS]
    if unknown:
        raise UserError(f"--only {','.join(unknown)}: unknown check; allowed: {', '.join(CHECKS)}")
    return [c for c in CHECKS if c in names]


def run_sanity(recipe, *, device: str = "auto", runs_dir: str | Path | None = "runs",
               only: str | list[str] | None = None, overfit_batches: int = OVERFIT_BATCHES,
               overfit_steps: int = OVERFIT_STEPS, retry: bool = True, threads: int | None = SANITY_CPU_THREADS,
               progress: Callable[[str], None] | None = None, folder: str | None = None) -> SanityResult:
    """Run the sanity checks of `recipe` and write sanity.csv, layers.csv, overfit.csv, summary.json and plots.

    runs_dir=None runs the checks without writing a run folder. progress(message) is called before and after each
    check. threads: torch CPU threads while the checks run (None: leave torch's setting). folder: the run folder's
    exact name under runs_dir (default: <time>-<name>-sanity).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_sanity(recipe, device=device, runs_dir=runs_dir, only=only, overfit_batches=overfit_batches,
                           overfit_steps=overfit_steps, retry=retry, progress=progress, folder=folder)
    finally:
        torch.set_num_threads(previous)


def _run_sanity(recipe, *, device, runs_dir, only, overfit_batches, overfit_steps, retry, progress,
                folder) -> SanityResult:
    from ..data import load_data
    from ..models import build_model
    from ..runs import marks_interrupted, resolve_device, start_run

    if overfit_batches < 1 or overfit_steps < 1:
        raise UserError(f"--overfit-batches {overfit_batches} / --overfit-steps {overfit_steps}: both must be >= 1")
    names = parse_only(only)
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    device = resolve_device(device)
    data = load_data(recipe, device)  # before the run folder: a bad data file leaves nothing behind
    run_dir = start_run(recipe, runs_dir, "sanity", device, folder) if runs_dir is not None else None
    with marks_interrupted(run_dir, recipe.name, "sanity"):
        seed = recipe["seed"]
        model = build_model(recipe, data, seed=seed).to(device)
        model.requires_grad_(True)
        ctx = Context(model, data, recipe, seed=seed, overfit_batches=overfit_batches, overfit_steps=overfit_steps,
                      retry=retry)
        for name in names:
            say(f"sanity: {name}")
            t = time.perf_counter()
            check = REGISTRY[name](ctx)
            check.seconds = time.perf_counter() - t
            ctx.earlier[name] = check
            say(f"sanity: {name} {check.status} ({check.seconds:.1f} s)")
        checks = list(ctx.earlier.values())
        layer_rows, overfit_rows = ctx.tables.get("layers", []), ctx.tables.get("overfit", [])
        merge_layer_columns(layer_rows, checks)
        result = SanityResult(run_dir, checks, layer_rows, overfit_rows, time.perf_counter() - t0, recipe.name)
        if run_dir is not None:
            write_outputs(result, data.task)
    return result
