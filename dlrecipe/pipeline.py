"""`dlrecipe run`: the whole babysitting recipe in one command, each step feeding the next (lecture 003).

    1-sanity         check the initial loss, gradients, layer health; overfit a small sample          (sanity/)
    2-lr-find        find a learning rate that makes the loss go down, and a range around it          (lr_find.py)
    3-search         coarse random search around that range, then the refined longer trials          (search/)
    3-search-pass<k> step 7, "go to step 5": the previous pass's selected trial is diagnosed and, when a
                     finding is actionable, the search runs again with the change it calls for       (passes.py)
    4-seeds          with a budget, what the passes left: the selected configuration from more seeds
    test             the best model on validation across passes and seeds, or an ensemble of the best few
                     when it is better there; then the test split, read once                         (selection.py)
    report           the recipe's story, each step and pass with its figures, the diagnosis           (report/)

All of it lands in one parent run folder, `runs/<time>-<name>-run/`, with a subfolder per step and, at the top,
`steps.csv` (one row per step and pass) and `summary.json`. A failed sanity check stops the chain (its advice is the
result) unless `force`. `resume_run` continues an interrupted or killed run in its folder: finished steps and passes
are kept, an interrupted search continues with its finished trials, an unfinished sanity or lr-find runs again.

`budget_minutes` plans each pass from the time left: the first gets half of it when more passes may follow (the
last all of it). The cost of one epoch is estimated from lr-find's measured seconds per update, then measured on the
previous pass's trials; the trial counts and epochs are multiplied by the same factor (square root of the ratio
each, so that neither collapses) until the planned epochs fit, or the trial counts grow when they fit many times.
The plans and the time actually taken are written down.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import selection
from .errors import Interrupted, UserError
from .passes import next_change, why_not
from .runs import CsvLog, resolve_device, start_run, write_json

STEPS = ("sanity", "lr-find", "search", "seeds", "test", "report")  # steps.csv rows; "search" repeats as "search 2", ...
FOLDERS = {"sanity": "1-sanity", "lr-find": "2-lr-find", "search": "3-search"}
EPOCH_OVERHEAD = 1.25        # an epoch costs its updates plus validation, logging and snapshots: 25% more
REPORT_RESERVE_S = 5.0       # seconds kept back from the budget for the report (figures, HTML)
MIN_TRIALS, MIN_FINE_TRIALS = 4, 1        # the smallest search --budget can shrink to
MIN_COARSE_EPOCHS, MIN_FINE_EPOCHS = 1, 3
MAX_SCALE_UP = 25.0          # a generous budget multiplies a pass's trial counts by at most this (its epochs come
#                              from the recipe and the diagnosis); what a pass leaves goes to more passes and seeds
DEFAULT_PASSES = 3           # search passes at most: the first, then up to two that follow its diagnosis


@dataclass
class SearchPlan:
    """How many trials and epochs the search runs, and why."""

    trials: int
    coarse_epochs: int
    fine_trials: int
    fine_epochs: int
    epoch_seconds: float | None = None   # estimated cost of one epoch
    available_s: float | None = None     # budget left for the search
    factor: float = 1.0                  # planned / recipe's epochs
    note: str = "the recipe's [search] settings"

    @property
    def epochs(self) -> int:
        """Planned epochs in all (an upper bound: early stopping ends fine trials sooner)."""
        return self.trials * self.coarse_epochs + self.fine_trials * self.fine_epochs

    def to_dict(self) -> dict:
        return {"trials": self.trials, "coarse_epochs": self.coarse_epochs, "fine_trials": self.fine_trials,
                "fine_epochs": self.fine_epochs, "planned_epochs": self.epochs,
                "epoch_seconds": self.epoch_seconds, "available_s": self.available_s, "factor": self.factor,
                "note": self.note}


def plan_search(recipe, budget_s: float | None, epoch_seconds: float | None) -> SearchPlan:
    """Scale the recipe's [search] counts so that the planned epochs fit in budget_s (None: as written)."""
    base = SearchPlan(recipe["search.trials"], recipe["search.coarse_epochs"], recipe["search.fine_trials"],
                      recipe["search.fine_epochs"], epoch_seconds, budget_s)
    if budget_s is None or not epoch_seconds:
        return base
    factor = max(budget_s, 0.0) / (base.epochs * epoch_seconds)
    if factor >= 1:  # room to spare: more random trials (they find better regions), same epochs
        up = min(factor, MAX_SCALE_UP)
        return SearchPlan(max(base.trials, math.floor(base.trials * up)), base.coarse_epochs,
                          max(base.fine_trials, math.floor(base.fine_trials * up)), base.fine_epochs,
                          epoch_seconds, budget_s, up,
                          f"budget allows {factor:.2g}x the recipe's epochs: trial counts x{up:.2g}")
    root = math.sqrt(factor)
    plan = SearchPlan(max(MIN_TRIALS, math.floor(base.trials * root)),
                      max(MIN_COARSE_EPOCHS, math.floor(base.coarse_epochs * root)),
                      max(MIN_FINE_TRIALS, math.floor(base.fine_trials * root)),
                      max(MIN_FINE_EPOCHS, math.floor(base.fine_epochs * root)), epoch_seconds, budget_s)
    plan.factor = plan.epochs / base.epochs
    plan.note = f"budget fits {factor:.2g}x the recipe's epochs: trials and epochs x{root:.2g} each"
    if plan.epochs * epoch_seconds > budget_s * 1.05:
        plan.note += (f"; even the smallest search ({plan.epochs} epochs, ~{plan.epochs * epoch_seconds:.0f} s) "
                      f"is over the {max(budget_s, 0):.0f} s left")
    return plan


def epoch_seconds_from(lr_summary: dict, n_train: int, batch_size: int) -> float | None:
    """Seconds per epoch estimated from lr-find's seconds per update (its setup time included: an overestimate)."""
    updates, seconds = lr_summary.get("iterations"), lr_summary.get("seconds")
    seeds = len(lr_summary.get("seeds") or [1])
    if not updates or not seconds:
        return None
    per_update = seconds / (updates * seeds)
    return per_update * math.ceil(n_train / batch_size) * EPOCH_OVERHEAD


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    steps: list[dict] = field(default_factory=list)
    sanity: object = None
    lr_find: object = None
    search: object = None
    report: object = None

    @property
    def exit_code(self) -> int:
        return 0 if self.summary["status"] == "completed" else 1


def _check_budget(budget_minutes: float | None) -> None:
    if budget_minutes is not None and not (budget_minutes > 0 and math.isfinite(budget_minutes)):
        raise UserError(f"--budget {budget_minutes}: give the minutes the whole run may take, a number above 0")


def run_recipe(recipe, *, device: str = "auto", runs_dir: str | Path = "runs", budget_minutes: float | None = None,
               force: bool = False, jobs: int | str = "auto", say: Callable[[str], None] | None = None,
               quiet: bool = True, passes: int = DEFAULT_PASSES) -> RunResult:
    """Sanity, lr-find, search passes (coarse then fine; pass 1 from lr-find's range, each next one with the change
    its predecessor's diagnosis calls for), extra seeds with the budget left, the selection on validation (an
    ensemble when it pays), the one test, report: one parent folder.

    passes: at most this many search passes (1: no going back to the search).
    say(message) narrates each step (None: silent); quiet=False also shows the search's progress bar.
    """
    from . import search as S
    from .data import load_data

    _check_budget(budget_minutes)
    if not (isinstance(passes, int) and passes >= 1):
        raise UserError(f"--passes {passes}: give the most search passes the run may make, 1 or more (1: one search, "
                        f"no going back to it)")
    S.check_options(jobs, "none", 1, 1)
    S.parse_space(recipe)  # a bad [search] space is a recipe error now, not after sanity and lr-find
    device = resolve_device(device)
    data = load_data(recipe, device)  # a bad data source fails before any folder exists
    run_dir = start_run(recipe, runs_dir, "run", device)
    summary = {"name": recipe.name, "command": "run", "status": "running", "reason": "", "budget_minutes":
               budget_minutes, "force": force, "recipe_path": str(recipe.path.resolve()) if recipe.path else None,
               "passes_max": passes, "steps": {}, "warnings": []}
    write_json(run_dir / "summary.json", summary)  # a run killed in its first step is still a run --resume knows
    return _chain(recipe, run_dir, summary, [], data=data, device=device, jobs=jobs, say=say, quiet=quiet)


RESUMABLE = ("interrupted", "running")  # "running": the process was killed before it could write its end


def resume_run(run_dir: str | Path, *, device: str = "auto", jobs: int | str = "auto", say: Callable[[str], None] | None = None,
               quiet: bool = True) -> RunResult:
    """Continue an interrupted or killed `dlrecipe run` in its own folder: finished steps are kept as they are, an
    interrupted search continues with its finished trials (search --resume), a step that had not finished runs
    again; then the report. The budget counts the time spent before the interruption."""
    import tomllib

    from . import search as S
    from .data import load_data
    from .recipe import flatten, validate
    from .runs import read_json_or_refuse

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {str(run_dir)!r}: no such folder")
    summary = read_json_or_refuse(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    if summary.get("command") != "run" or not (run_dir / "recipe.toml").is_file():
        raise UserError(f"--resume {str(run_dir)!r}: not a dlrecipe run folder (no summary.json of a run and "
                        f"recipe.toml)")
    if summary.get("status") not in RESUMABLE:
        raise UserError(f"--resume {str(run_dir)!r}: this run is {summary.get('status')} already, nothing to resume "
                        f"(dlrecipe report {run_dir} reads it again)")
    S.check_options(jobs, "none", 1, 1)
    original = summary.get("recipe_path")  # relative data paths resolve as they did for the original recipe file
    recipe = validate(flatten(tomllib.loads((run_dir / "recipe.toml").read_text())),
                      path=Path(original) if original else run_dir / "recipe.toml")
    device = resolve_device(device)
    data = load_data(recipe, device)
    # summary.json (written atomically after every step) rather than steps.csv, which is rewritten from it below
    rows = (summary.get("steps") or {}).values()
    done = [row for row in rows if row["status"] != "interrupted" and row["step"] != "report"]
    killed = summary["status"] == "running"  # killed: no end was written, so no seconds either
    spent = sum(row["seconds"] for row in done) if killed else summary.get("seconds") or 0.0
    summary.setdefault("resumed", []).append({"at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                              "after": "killed" if killed else summary["status"],
                                              "reason": summary.get("reason", "")})
    summary.update(status="running", reason="", steps={})
    summary.setdefault("warnings", [])
    return _chain(recipe, run_dir, summary, done, data=data, device=device, jobs=jobs, say=say, quiet=quiet,
                  spent=spent)


def _clear_unfinished(folder: Path) -> None:
    """Make room to run a step again: a step folder holding only what a command writes before it measures
    anything is removed; anything more is kept, renamed aside (nothing written is lost)."""
    import shutil

    if not folder.exists():
        return
    if {p.name for p in folder.iterdir()} <= {"recipe.toml", "env.json", "summary.json", "summary.json.tmp"}:
        shutil.rmtree(folder)
    else:
        folder.rename(folder.with_name(f"{folder.name}.interrupted-{time.strftime('%Y%m%d-%H%M%S')}"))


def _chain(recipe, run_dir: Path, summary: dict, done: list[dict], *, data, device: str, jobs: int | str,
           say: Callable[[str], None] | None, quiet: bool, spent: float = 0.0) -> RunResult:
    """The steps in order; a step in `done` (steps.csv rows of an earlier try) is kept, not run again."""
    from .data import withheld_test_split
    from .lr_find import lr_find
    from .report import build_report
    from .runs import read_json
    from .sanity import run_sanity

    say = say or (lambda message: None)
    t0 = time.perf_counter() - spent
    budget_minutes, force = summary.get("budget_minutes"), summary.get("force", False)
    max_passes = summary.get("passes_max") or 1
    budget_s = None if budget_minutes is None else budget_minutes * 60
    result = RunResult(run_dir, summary)
    kept = {row["step"]: row for row in done}

    def left_s() -> float | None:
        return None if budget_s is None else budget_s - (time.perf_counter() - t0) - REPORT_RESERVE_S

    with CsvLog(run_dir / "steps.csv", STEP_COLUMNS) as log:
        def record(step: str, status: str, text: str, seconds: float, folder: str | Path | None, **extra) -> None:
            row = {"step": step, "status": status, "result": text, "seconds": round(seconds, 2),
                   "folder": "" if folder is None else str(Path(folder).relative_to(run_dir)),
                   **{k: extra.get(k, "") for k in STEP_COLUMNS[5:]}}
            result.steps.append(row)
            log.write(row)
            summary["steps"][step] = row
            write_json(run_dir / "summary.json", summary)  # up to date after every step

        def keep(step: str) -> dict | None:
            """An earlier try's finished step, written back to steps.csv as it was."""
            row = kept.get(step)
            if row is not None:
                say(f"{step}: kept from the earlier try ({row['status']})")
                record(step, row["status"], row["result"], row["seconds"], run_dir / row["folder"] if row["folder"]
                       else None, **{k: row.get(k, "") for k in STEP_COLUMNS[5:]})
            return row

        def finish(status: str, reason: str) -> RunResult:
            """Record the outcome, then the report (which reads the summary), then the final times."""
            summary.update(status=status, reason=reason)
            write_json(run_dir / "summary.json", summary)
            say("report: curves, diagnosis, every step's tables and figures")
            current[:] = ["report", run_dir, time.perf_counter()]
            t = time.perf_counter()
            result.report = build_report(run_dir)
            final = result.report.final  # the selected model's curve; else every curve diagnosed
            codes = sorted({f.code for c in ([final] if final else result.report.curves) for f in c.findings})
            text = ("diagnosis: " + (", ".join(codes) if codes else "no alarm") if result.report.curves
                    else "no training curves to diagnose (no trial ran)")
            record("report", "done", text, time.perf_counter() - t, None)
            seconds = time.perf_counter() - t0
            summary.update(seconds=seconds, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                           seconds_vs_budget=None if budget_s is None else seconds / budget_s)
            write_json(run_dir / "summary.json", summary)
            build_report(run_dir)  # again, so that the report's header card shows the time the whole run took
            return result

        current = ["sanity", run_dir / FOLDERS["sanity"], time.perf_counter()]  # step, folder, started
        try:
            recipe = _pretrain_first(recipe, run_dir, summary, device, say)  # [pretrain]: every step starts from it
            # 1. sanity
            row = keep("sanity")
            if row is not None:
                failed = row["status"] == "fail"
            else:
                _clear_unfinished(run_dir / FOLDERS["sanity"])
                say("step 1 sanity: initial loss, gradient check, layer health, overfit a small sample")
                s = run_sanity(recipe, device=device, runs_dir=run_dir, folder=FOLDERS["sanity"], progress=say)
                result.sanity = s
                failed = s.status == "fail"
                record("sanity", s.status, s.verdict, s.seconds, s.run_dir)
                summary["sanity"] = {"status": s.status, "checks": {c.check: c.status for c in s.checks}}
                if failed and not force:
                    return finish("stopped", f"sanity failed: {s.verdict} (fix it, or run with --force to go on)")

            # 2. lr-find
            current[:] = ["lr-find", run_dir / FOLDERS["lr-find"], time.perf_counter()]
            lr_dir = run_dir / FOLDERS["lr-find"]
            if keep("lr-find") is not None:
                lr_summary = read_json(lr_dir / "summary.json")
            else:
                _clear_unfinished(lr_dir)
                say("step 2 lr-find: probe LRs from one init, refine by halving, range test")
                lr = lr_find(recipe, device=device, runs_dir=run_dir, folder=FOLDERS["lr-find"], data=data, log=say)
                result.lr_find, lr_summary = lr, lr.summary
                low, high = lr.search_range
                record("lr-find", lr.status, f"recommended lr {lr.recommended_lr:.3g}, search range {low:.3g} .. "
                       f"{high:.3g}", lr.summary["seconds"], lr.run_dir)
                summary["lr_find"] = {"status": lr.status, "recommended_lr": lr.recommended_lr,
                                      "search_range": [low, high]}
                if lr.status != "ok":  # every probe flat or diverged: the range is a guess, say so and go on
                    warning = (f"lr-find: {lr.status}: {lr.evidence}; the search uses its range {low:.3g} .. "
                               f"{high:.3g} anyway")
                    summary["warnings"].append(warning)
                    say(f"warning: {warning}")
            n_train, image_input = len(data.x_train), data.x_train.ndim == 4
            del data  # each search loads its own copy per worker; the end loads the splits once more

            # 3. search, then (step 7 of the lectures) back to the search with the change the diagnosis calls for
            monitor = selection.monitor_of(recipe)
            epoch_s = epoch_seconds_from(lr_summary, n_train, recipe["data.batch_size"])
            overrides: dict = {}
            trigger, change = "", "the recipe's search, LR range from lr-find"
            best_pass, best_value, stop = None, None, ""
            passes = summary["passes"] = []
            for k in range(1, max_passes + 1):
                step, folder = pass_step(k), pass_folder(k)
                search_dir = run_dir / folder
                current[:] = [step, search_dir, time.perf_counter()]
                pass_recipe = recipe.with_values(overrides)
                rec = {"pass": k, "step": step, "folder": folder, "trigger": trigger, "change": change,
                       "overrides": overrides}
                passes.append(rec)
                if keep(step) is not None:
                    ss = read_json(search_dir / "summary.json")
                else:
                    with withheld_test_split():  # a pass selects on validation; the test split waits for the end
                        sr = _search_pass(pass_recipe, k, search_dir, run_dir, lr_dir, left_s(), max_passes,
                                          epoch_s, n_train, summary, rec, device, jobs, quiet, say)
                    result.search = sr
                    ss = sr.summary
                    value = ss.get(f"best_{monitor}")
                    record(step, ss["status"], _search_text(ss), ss["seconds"], search_dir, trigger=trigger,
                           change=change, best_val="" if value is None else f"{monitor} {value:.4g}")
                epoch_s = measured_epoch_seconds(search_dir) or epoch_s  # what this machine takes, overheads in
                if ss["status"] != "completed":
                    if k == 1:
                        summary["search"] = {k2: ss.get(k2) for k2 in SEARCH_KEYS}
                        return finish("failed", f"search: {ss['reason']}")
                    stop = f"pass {k}'s search found no model ({ss['reason']})"
                    break
                value = ss.get(f"best_{monitor}")
                rec["best_val"] = value
                findings = selected_findings(run_dir, search_dir, ss)
                rec["diagnosis"] = [f.code for f in findings]
                if best_pass is not None and not selection.better(value, best_value, monitor):
                    stop = (f"pass {k} did not improve {monitor.replace('_', ' ')} ({value:.4g}, pass {best_pass}: "
                            f"{best_value:.4g})")
                    break
                best_pass, best_value = k, value
                summary["search"] = {k2: ss.get(k2) for k2 in SEARCH_KEYS}
                if k == max_passes:
                    stop = f"--passes {max_passes} done" if max_passes > 1 else ""
                    break
                nxt = next_change(findings, pass_recipe, ss.get("space") or {}, ss.get("best_params") or {},
                                  n_train=n_train, image_input=image_input)
                if nxt is None:
                    stop = why_not(findings)
                    break
                left = left_s()
                if left is not None and epoch_s and left < MIN_PASS_EPOCHS * epoch_s:
                    stop = (f"the budget is spent ({max(left, 0):.0f} s left, a pass needs "
                            f"~{MIN_PASS_EPOCHS * epoch_s:.0f})")
                    break
                overrides = {**overrides, **nxt.overrides}
                trigger, change = nxt.trigger, nxt.text
                say(f"pass {k} diagnosis: {nxt.trigger}: back to the search with {nxt.text}")
            summary["passes_stop"] = stop
            write_json(run_dir / "summary.json", summary)

            # 4. extra seeds of the best configuration, with what the budget has left (ensemble members)
            best_dir = run_dir / pass_folder(best_pass)
            best_values = selection.selected_values(best_dir, recipe, summary["search"])
            current[:] = ["seeds", run_dir / selection.SEEDS_FOLDER, time.perf_counter()]
            seeds = []
            if keep("seeds") is None and budget_s is not None:
                t = time.perf_counter()
                with withheld_test_split():
                    seeds = selection.extra_seeds(recipe, best_values, best_dir, summary["search"], run_dir, left_s,
                                                  device, say)
                if seeds:
                    record("seeds", "completed", f"{len(seeds)} more seed{'s' if len(seeds) > 1 else ''} of the "
                           f"selected configuration (pass {best_pass}): ensemble candidates", time.perf_counter() - t,
                           run_dir / selection.SEEDS_FOLDER)

            # 5. the selected model on validation (an ensemble when it pays), then the test split, once
            current[:] = ["test", run_dir, time.perf_counter()]
            if keep("test") is None:
                t = time.perf_counter()
                say("test: the best model on validation across the passes (an ensemble when it is better), "
                    "tested once")
                text = selection.select_and_test(recipe, run_dir, passes, summary, device)
                record("test", "completed", text, time.perf_counter() - t, None)
            summary.update({k2: summary["selected"].get(k2) for k2 in ("test_acc", "test_loss")
                            if k2 in summary["selected"]})
            summary["best_epoch"] = summary["search"].get("best_epoch")  # the best pass's selected trial
            summary.update({f"best_val_{k2}": v for k2, v in summary["selected"]["val"].items()})  # the selected
            #                                                     model's validation figures (an ensemble's own)
            summary["model"] = summary["selected"]["model"]

            note = "" if not failed else " (sanity failed; went on because of --force)"
            npass = len([p for p in passes if p.get("best_val") is not None])
            how = f" after {npass} pass{'es' if npass != 1 else ''} ({stop})" if max_passes > 1 else ""
            return finish("completed", f"selected {summary['selected']['text']}{how}{note}")
        except KeyboardInterrupt as e:  # keep what the finished steps wrote, and say how to go on
            step, folder, started = current
            found = re.search(r"with \d+ of \d+ trials finished", str(e)) if step.startswith("search") else None
            reason = (f"interrupted (Ctrl-C) during {step}" + (f" {found.group(0)}" if found else "")
                      + f"; the finished steps{' and trials' if found else ''} are kept: continue with "
                        f"dlrecipe run --resume {run_dir}")
            record(step, "interrupted", reason, time.perf_counter() - started,
                   folder if folder.exists() and folder != run_dir else None)
            inner = folder / "summary.json"
            if folder != run_dir and inner.is_file():  # the step's own summary points to the parent's resume
                step_summary = read_json(inner)
                if step_summary.get("status") == "interrupted":
                    write_json(inner, {**step_summary, "reason": f"interrupted (Ctrl-C) as a step of "
                                                                 f"{run_dir.name}: continue with dlrecipe run "
                                                                 f"--resume {run_dir}"})
            summary.update(status="interrupted", reason=reason, seconds=time.perf_counter() - t0,
                           finished=time.strftime("%Y-%m-%d %H:%M:%S"))
            write_json(run_dir / "summary.json", summary)
            raise Interrupted(reason) from None


def _pretrain_first(recipe, run_dir: Path, summary: dict, device: str, say: Callable[[str], None]):
    """[pretrain] epochs > 0: layer-wise autoencoder pre-training into 0-pretrain/ (kept by --resume), then the
    recipe every later step uses starts from its pretrain.pt (model.pretrained) instead of pre-training again."""
    if recipe["pretrain.epochs"] < 1:
        return recipe
    from .pretrain import pretrain

    folder = run_dir / "0-pretrain"
    if not (folder / "pretrain.pt").is_file():
        _clear_unfinished(folder)
        say(f"step 0 pretrain: greedy layer-wise autoencoders, {recipe['pretrain.epochs']} epochs per hidden layer")
        pretrain(recipe, device=device, runs_dir=run_dir, folder=folder.name, say=say)
    summary["pretrain"] = {"folder": folder.name, "weights": str(folder / "pretrain.pt")}
    return recipe.with_values({"pretrain.epochs": 0, "model.pretrained": str((folder / "pretrain.pt").resolve())})


SEARCH_KEYS = ("status", "selected_trial", "selected_stage", "best_params", "best_epoch", "best_val_loss",
               "best_val_acc", "trials", "warnings")
STEP_COLUMNS = ["step", "status", "result", "seconds", "folder", "trigger", "change", "best_val"]
MIN_PASS_EPOCHS = 2 * (MIN_TRIALS * MIN_COARSE_EPOCHS + MIN_FINE_TRIALS * MIN_FINE_EPOCHS)  # a pass worth starting
PASS_SHARE = 2               # a pass gets 1/2 of the budget left when more passes may follow (all of it when none)


def pass_step(k: int) -> str:
    return "search" if k == 1 else f"search {k}"


def pass_folder(k: int) -> str:
    return FOLDERS["search"] if k == 1 else f"{FOLDERS['search']}-pass{k}"


def measured_epoch_seconds(search_dir: Path) -> float | None:
    """Seconds per trained epoch over a finished search's trials (their overheads included), from trials.csv."""
    import pandas as pd

    try:
        t = pd.read_csv(search_dir / "trials.csv")
    except (OSError, pd.errors.EmptyDataError):
        return None
    epochs, seconds = pd.to_numeric(t.get("epochs_run"), errors="coerce"), pd.to_numeric(t.get("seconds"),
                                                                                         errors="coerce")
    ok = (epochs > 0) & seconds.notna()
    return float(seconds[ok].sum() / epochs[ok].sum()) if ok.any() else None


def selected_findings(run_dir: Path, search_dir: Path, ss: dict) -> list:
    """The diagnosis of a pass: the findings on its selected trial's curve, read as the report reads it."""
    from .report import diagnose_curve, read_metrics

    path = search_dir / "trials" / str(ss.get("selected_trial")) / "metrics.csv"
    if not path.is_file():
        return []
    return diagnose_curve(run_dir, path, read_metrics(path))


def _search_pass(pass_recipe, k: int, search_dir: Path, run_dir: Path, lr_dir: Path, left: float | None,
                 max_passes: int, epoch_s: float | None, n_train: int, summary: dict, rec: dict, device: str,
                 jobs: int | str, quiet: bool, say):
    """One search pass: continued when its trials had started (a resume), else planned from the budget left."""
    from . import search as S

    if (search_dir / "search.json").is_file():  # trials ran: continue them (finished ones are kept)
        say(f"{pass_step(k)}: continuing {search_dir.name} (its finished trials are kept)")
        return S.resume(search_dir, device=device, jobs=jobs, quiet=quiet)
    _clear_unfinished(search_dir)
    share = None if left is None else left / (PASS_SHARE if k < max_passes else 1)
    plan = plan_search(pass_recipe, share, epoch_s if share is not None else None)
    rec["plan"] = plan.to_dict()
    if k == 1:
        summary["plan"] = plan.to_dict()
    searched = pass_recipe.with_values({"search.trials": plan.trials, "search.coarse_epochs": plan.coarse_epochs,
                                        "search.fine_trials": plan.fine_trials,
                                        "search.fine_epochs": plan.fine_epochs})
    say(f"step 3 search{'' if k == 1 else f' (pass {k})'}: {plan.trials} coarse trials x {plan.coarse_epochs} "
        f"epochs, then {plan.fine_trials} fine x up to {plan.fine_epochs} epochs"
        f"{', LR from lr-find' if k == 1 else ''} ({plan.note})")
    return S.search(searched, device=device, runs_dir=run_dir, folder=search_dir.name, jobs=jobs,
                    from_lr_find=lr_dir if k == 1 else None, quiet=quiet, budget_s=share)


def _search_text(ss: dict) -> str:
    """A search pass's one-line result: the selected trial, its parameters and validation metric (or the reason).
    Passes never see the test split: the run tests its final selection once, at the end."""
    if ss["status"] != "completed":
        return ss["reason"]
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in ss["best_params"].items())
    val = (f"val acc {ss['best_val_acc']:.4f}" if ss.get("best_val_acc") is not None
           else f"val loss {ss['best_val_loss']:.4g}")
    return f"trial {ss['selected_trial']} ({ss['selected_stage']}): {params}; {val}"
