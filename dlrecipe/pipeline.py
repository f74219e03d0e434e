"""`dlrecipe run`: the whole babysitting recipe in one command, each step feeding the next (lecture 003).

    1-sanity   check the initial loss, gradients, layer health; overfit a small sample   (sanity.py)
    2-lr-find  find a learning rate that makes the loss go down, and a range around it   (lr_find.py)
    3-search   coarse random search around that range, then the refined longer trials;
               the selected model is tested once on the test split                      (search.py)
    report     the curves of every step, the diagnosis, every step's tables and figures (report.py)

All of it lands in one parent run folder, `runs/<time>-<name>-run/`, with a subfolder per step and, at the top,
`steps.csv` (one row per step) and `summary.json`. A failed sanity check stops the chain (its advice is the
result) unless `force`. `resume_run` continues an interrupted or killed run in its folder: finished steps are
kept, an interrupted search continues with its finished trials, an unfinished sanity or lr-find runs again.

`budget_minutes` scales the search to fit: the cost of one epoch is estimated from lr-find's measured seconds
per update, and the trial counts and epochs are multiplied by the same factor (square root of the ratio each,
so that neither collapses) until the planned epochs fit in what is left of the budget. The plan and the time
actually taken are both written down.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Interrupted, UserError
from .runs import CsvLog, resolve_device, start_run, write_json

STEPS = ("sanity", "lr-find", "search", "report")
FOLDERS = {"sanity": "1-sanity", "lr-find": "2-lr-find", "search": "3-search"}
EPOCH_OVERHEAD = 1.25        # an epoch costs its updates plus validation, logging and snapshots: 25% more
REPORT_RESERVE_S = 5.0       # seconds kept back from the budget for the report (figures, HTML)
MIN_TRIALS, MIN_FINE_TRIALS = 4, 1        # the smallest search --budget can shrink to
MIN_COARSE_EPOCHS, MIN_FINE_EPOCHS = 1, 3
MAX_SCALE_UP = 4.0           # a generous budget multiplies the trial counts by at most this (epochs never grow)


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
               force: bool = False, jobs: int = 1, say: Callable[[str], None] | None = None,
               quiet: bool = True) -> RunResult:
    """Sanity, lr-find, search (coarse then fine, from lr-find's range), final test, report: one parent folder.

    say(message) narrates each step (None: silent); quiet=False also shows the search's progress bar.
    """
    from . import search as S
    from .data import load_data

    _check_budget(budget_minutes)
    S.check_options(jobs, "none", 1, 1)
    S.parse_space(recipe)  # a bad [search] space is a recipe error now, not after sanity and lr-find
    device = resolve_device(device)
    data = load_data(recipe, device)  # a bad data source fails before any folder exists
    run_dir = start_run(recipe, runs_dir, "run", device)
    summary = {"name": recipe.name, "command": "run", "status": "running", "reason": "", "budget_minutes":
               budget_minutes, "force": force, "recipe_path": str(recipe.path.resolve()) if recipe.path else None,
               "steps": {}, "warnings": []}
    write_json(run_dir / "summary.json", summary)  # a run killed in its first step is still a run --resume knows
    return _chain(recipe, run_dir, summary, [], data=data, device=device, jobs=jobs, say=say, quiet=quiet)


RESUMABLE = ("interrupted", "running")  # "running": the process was killed before it could write its end


def resume_run(run_dir: str | Path, *, device: str = "auto", jobs: int = 1, say: Callable[[str], None] | None = None,
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


def _chain(recipe, run_dir: Path, summary: dict, done: list[dict], *, data, device: str, jobs: int,
           say: Callable[[str], None] | None, quiet: bool, spent: float = 0.0) -> RunResult:
    """The steps in order; a step in `done` (steps.csv rows of an earlier try) is kept, not run again."""
    from . import search as S
    from .lr_find import lr_find
    from .report import build_report
    from .runs import read_json
    from .sanity import run_sanity

    say = say or (lambda message: None)
    t0 = time.perf_counter() - spent
    budget_minutes, force = summary.get("budget_minutes"), summary.get("force", False)
    budget_s = None if budget_minutes is None else budget_minutes * 60
    result = RunResult(run_dir, summary)
    kept = {row["step"]: row for row in done}

    with CsvLog(run_dir / "steps.csv", ["step", "status", "result", "seconds", "folder"]) as log:
        def record(step: str, status: str, text: str, seconds: float, folder: str | Path | None) -> None:
            row = {"step": step, "status": status, "result": text, "seconds": round(seconds, 2),
                   "folder": "" if folder is None else str(Path(folder).relative_to(run_dir))}
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
                       else None)
            return row

        def finish(status: str, reason: str) -> RunResult:
            """Record the outcome, then the report (which reads the summary), then the final times."""
            summary.update(status=status, reason=reason)
            write_json(run_dir / "summary.json", summary)
            say("step 4/4 report: curves, diagnosis, every step's tables and figures")
            current[:] = ["report", run_dir, time.perf_counter()]
            t = time.perf_counter()
            result.report = build_report(run_dir)
            codes = sorted({f.code for c in result.report.curves for f in c.findings})
            text = ("diagnosis: " + (", ".join(codes) if codes else "no alarm") if result.report.curves
                    else "no training curves to diagnose (no trial ran)")
            record("report", "done", text, time.perf_counter() - t, None)
            seconds = time.perf_counter() - t0
            summary.update(seconds=seconds, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                           seconds_vs_budget=None if budget_s is None else seconds / budget_s)
            write_json(run_dir / "summary.json", summary)
            return result

        current = ["sanity", run_dir / FOLDERS["sanity"], time.perf_counter()]  # step, folder, started
        try:
            # 1. sanity
            row = keep("sanity")
            if row is not None:
                failed = row["status"] == "fail"
            else:
                _clear_unfinished(run_dir / FOLDERS["sanity"])
                say("step 1/4 sanity: initial loss, gradient check, layer health, overfit a small sample")
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
                say("step 2/4 lr-find: probe LRs from one init, refine by halving, range test")
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

            # 3. search, sized to the budget
            current[:] = ["search", run_dir / FOLDERS["search"], time.perf_counter()]
            search_dir = run_dir / FOLDERS["search"]
            if keep("search") is not None:
                ss = read_json(search_dir / "summary.json")
            else:
                if (search_dir / "search.json").is_file():  # trials ran: continue them (finished ones are kept)
                    say(f"step 3/4 search: continuing {search_dir.name} (its finished trials are kept)")
                    sr = S.resume(search_dir, device=device, jobs=jobs, quiet=quiet)
                else:
                    _clear_unfinished(search_dir)
                    left = None if budget_s is None else budget_s - (time.perf_counter() - t0) - REPORT_RESERVE_S
                    plan = plan_search(recipe, left, epoch_seconds_from(lr_summary, len(data.x_train),
                                                                        recipe["data.batch_size"])
                                       if left is not None else None)
                    summary["plan"] = plan.to_dict()
                    searched = recipe.with_values({"search.trials": plan.trials,
                                                   "search.coarse_epochs": plan.coarse_epochs,
                                                   "search.fine_trials": plan.fine_trials,
                                                   "search.fine_epochs": plan.fine_epochs})
                    say(f"step 3/4 search: {plan.trials} coarse trials x {plan.coarse_epochs} epochs, then "
                        f"{plan.fine_trials} fine x up to {plan.fine_epochs} epochs, LR from lr-find's range "
                        f"({plan.note})")
                    del data  # the search loads its own copy per worker
                    sr = S.search(searched, device=device, runs_dir=run_dir, folder=FOLDERS["search"], jobs=jobs,
                                  from_lr_find=lr_dir, quiet=quiet, budget_s=left)
                result.search = sr
                ss = sr.summary
                record("search", ss["status"], _search_text(ss), ss["seconds"], search_dir)
            summary["search"] = {k: ss.get(k) for k in ("status", "selected_trial", "selected_stage", "best_params",
                                                         "best_epoch", "best_val_loss", "best_val_acc", "test_loss",
                                                         "test_acc", "trials", "warnings")}
            summary.update({k: ss[k] for k in ("best_epoch", "best_val_loss", "best_val_acc", "test_acc", "test_loss")
                            if k in ss})
            if (search_dir / "model.pt").is_file():
                summary["model"] = str((search_dir / "model.pt").relative_to(run_dir))  # the selected snapshot

            # 4. report (in finish)
            if ss["status"] != "completed":
                return finish("failed", f"search: {ss['reason']}")
            note = "" if not failed else " (sanity failed; went on because of --force)"
            return finish("completed", f"selected {_search_text(ss)}{note}")
        except KeyboardInterrupt as e:  # keep what the finished steps wrote, and say how to go on
            step, folder, started = current
            found = re.search(r"with \d+ of \d+ trials finished", str(e)) if step == "search" else None
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


def _search_text(ss: dict) -> str:
    """The search step's one-line result: the selected trial, its parameters and test metric (or the reason)."""
    if ss["status"] != "completed":
        return ss["reason"]
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in ss["best_params"].items())
    tested = f"test acc {ss['test_acc']:.4f}" if "test_acc" in ss else f"test loss {ss['test_loss']:.4g}"
    return f"trial {ss['selected_trial']} ({ss['selected_stage']}): {params}; {tested}"
