"""The runner: the registry of checks in their standard order, `parse_only`, and `run_sanity`, which builds the model
once, runs each check on a `Context` and writes the run folder."""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import UserError
from .base import Check, Context, SanityResult, not_already
from .outputs import merge_layer_columns, write_outputs
from .overfit_small import OVERFIT_BATCHES, OVERFIT_STEPS

# the checks in the order they run (and appear in sanity.csv); each is the module of the same name, with NAME and
# run(ctx) -> Check: a new check is one module, one name here, and its test
ORDER = ("labels", "unregistered", "nan_forward", "logits", "uses_input", "batch_independence", "eval_deterministic",
         "gradient_flow", "init_loss", "gradient_check", "layer_health", "update_ratio", "input_independent",
         "overfit_small")
# checks whose failure names a bug of the data or the module: later checks that fail for it say so instead of
# guessing a cause of their own (an LR, an init)
STRUCTURAL = ORDER[:8]
REGISTRY: dict[str, Callable[[Context], Check]] = {
    name: importlib.import_module(f"{__package__}.{name}").run for name in ORDER}
CHECKS = tuple(REGISTRY)

SANITY_CPU_THREADS = 1         # torch threads on CPU while the checks run (restored afterwards): batches of <= 256
                               # examples gain little from intra-op threads, and lose 10-50x when the cores are busy

STREAMED_TRAIN_ROWS, STREAMED_VAL_ROWS = 4096, 1024  # streamed data: the rows sanity reads into memory


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
               progress: Callable[[str], None] | None = None, folder: str | None = None,
               debug: bool = False) -> SanityResult:
    """Run the sanity checks of `recipe` and write sanity.csv, layers.csv, overfit.csv, summary.json and plots.

    runs_dir=None runs the checks without writing a run folder. progress(message) is called before and after each
    check. threads: torch CPU threads while the checks run (None: leave torch's setting). folder: the run folder's
    exact name under runs_dir (default: <time>-<name>-sanity). A check that raises is a "skip" row saying why
    (debug=True: the exception propagates).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_sanity(recipe, device=device, runs_dir=runs_dir, only=only, overfit_batches=overfit_batches,
                           overfit_steps=overfit_steps, retry=retry, progress=progress, folder=folder,
                           debug=debug)
    finally:
        torch.set_num_threads(previous)


def skipped(name: str, e: Exception, ctx: Context) -> Check:
    """The row of a check that raised: status skip, the exception and where, and a known cause when one is."""
    from .preflight import exception_words, unregistered, user_frame

    where = user_frame(e)
    advice = "the other checks still ran; run with --debug for the traceback"
    loose = [w for w, _, _ in unregistered(ctx.model)]
    if loose:
        advice = (f"{', '.join(loose)} {'is' if len(loose) == 1 else 'are'} not registered with the module, so the "
                  f"check's copy (float64, another device) does not reach {'it' if len(loose) == 1 else 'them'}: "
                  f"use nn.ModuleList / nn.ModuleDict / nn.Parameter")
    return Check(name, "skip", f"skipped: {exception_words(e)}" + (f" (at {where})" if where else ""),
                 "the check runs", advice)


def _run_sanity(recipe, *, device, runs_dir, only, overfit_batches, overfit_steps, retry, progress,
                folder, debug=False) -> SanityResult:
    from ..data import load_data
    from ..models import build_model
    from ..runs import marks_interrupted, resolve_device, start_run

    if overfit_batches < 1 or overfit_steps < 1:
        raise UserError(f"--overfit-batches {overfit_batches} / --overfit-steps {overfit_steps}: both must be >= 1")
    names = parse_only(only)
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    device = resolve_device(device)
    seed = recipe["seed"]
    # before the run folder: a bad data file or model leaves nothing behind; streamed data as a seeded sample in
    # memory (the checks read at most a few thousand rows)
    data = load_data(recipe, device, one_class_ok=True).in_memory(STREAMED_TRAIN_ROWS, STREAMED_VAL_ROWS, seed)
    model = build_model(recipe, data, seed=seed).to(device)  # one forward pass and loss first (preflight.py)
    run_dir = start_run(recipe, runs_dir, "sanity", device, folder) if runs_dir is not None else None
    with marks_interrupted(run_dir, recipe.name, "sanity"):
        ctx = Context(model, data, recipe, seed=seed, overfit_batches=overfit_batches, overfit_steps=overfit_steps,
                      retry=retry, causes=STRUCTURAL)
        for name in names:
            say(f"sanity: {name}")
            t = time.perf_counter()
            try:
                check = REGISTRY[name](ctx)
            except Exception as e:  # the check cannot run on this model: say why, run the others
                if debug:
                    raise
                check = skipped(name, e, ctx)
            check.advice = not_already(check.advice, recipe)
            by, _ = ctx.cause()
            if by and name not in STRUCTURAL and check.status in ("warn", "fail") and "found by" not in check.advice \
                    and by not in check.advice:
                check.advice += f" (this may follow from what {by} found)"
            check.seconds = time.perf_counter() - t
            ctx.earlier[name] = check
            say(f"sanity: {name} {check.status} ({check.seconds:.1f} s)")
        checks = list(ctx.earlier.values())
        layer_rows, overfit_rows = ctx.tables.get("layers", []), ctx.tables.get("overfit", [])
        merge_layer_columns(layer_rows, checks)
        result = SanityResult(run_dir, checks, layer_rows, overfit_rows, time.perf_counter() - t0, recipe.name)
        if run_dir is not None:
            from .first_batch import write_batch_view

            write_batch_view(run_dir, recipe, data)  # before the summary, which lists the figures
            write_outputs(result, data.task)
    return result
