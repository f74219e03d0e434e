"""The commands: `search` (a new study), `resume` (a killed one) and `join` (--worker); the leader runs the slots
here or in --jobs worker processes, waits for every slot, then selects, tests and reports."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..display import err
from ..errors import Interrupted, UserError
from ..recipe import Recipe, _suggest
from ..runs import read_json_or_refuse, resolve_device, start_run, write_json
from .jobs import Crew, auto_workers, parse_jobs
from .select import SearchResult, _finish, _write_trials_csv, trial_rows
from .space import Dist, _space_from, parse_space, read_lr_find
from .storage import (HOST, _fail_and_requeue, _has_heartbeat, _pid_alive, _queue_slots, _redact, _saved_storage,
                      _study_recipe, _wait_for_study, open_storage)
from .terminal import SearchProgress
from .workers import JOIN_WAIT_S, Worker, _direction, _monitor, work


PRUNERS = ("none", "median", "successive-halving")

def check_options(jobs: int | str | None, prune: str, seeds: int, ensemble: int) -> None:
    parse_jobs(jobs)
    if prune not in PRUNERS:
        raise UserError(f"--prune {prune!r} is unknown{_suggest(prune, PRUNERS)} Allowed: {', '.join(PRUNERS)}")
    if seeds < 1:
        raise UserError(f"--seeds {seeds} is not allowed: at least 1 (1 = no reruns)")
    if ensemble < 1:
        raise UserError(f"--ensemble {ensemble} is not allowed: at least 1 (1 = no ensemble)")



def search(recipe: Recipe, *, device: str = "auto", runs_dir: str | Path = "runs", jobs: int | str = "auto",
           prune: str = "none", seeds: int = 1, ensemble: int = 1, storage: str | None = None,
           study: str | None = None, from_lr_find: str | Path | None = None, quiet: bool = True,
           folder: str | None = None, budget_s: float | None = None) -> SearchResult:
    """Run `dlrecipe search`: a new run folder and study, coarse then fine trials, the selected model tested once.

    folder: the run folder's exact name under runs_dir (default: <time>-<name>-search).
    jobs: worker processes at most, or "auto" (dlrecipe.search.jobs: extra ones start only when they pay).
    budget_s: seconds the trials may take (`dlrecipe run --budget`), shared between the stages in proportion to
    their planned epochs; a slot that a typical trial of its stage could not finish in its stage's time is skipped.
    """
    from ..data import load_data

    check_options(jobs, prune, seeds, ensemble)
    lr_find = read_lr_find(from_lr_find) if from_lr_find else None
    space = parse_space(recipe, lr_find)
    device = resolve_device(device)
    from ..models import build_model

    # a bad data source, or a model whose forward pass fails (one line naming the layer), fails here, before a run
    # folder exists, rather than in every trial
    build_model(recipe, load_data(recipe, device))
    st = open_storage(storage) if storage else None  # so does a bad --storage, or a --study that exists
    if st is not None and study and study in {s.study_name for s in st.get_all_studies()}:
        raise UserError(f"--study {study!r} already exists in {_redact(storage)}: choose another name, join it "
                        f"with --worker, or continue its run folder with --resume RUN")
    run_dir = start_run(recipe, runs_dir, "search", device, folder)
    where = storage or str(run_dir / "study.journal")
    if "://" not in where:  # a journal file: absolute, so a resume from another working folder finds it
        where = str(Path(where).resolve())
    settings = {"storage": where, "study": study or run_dir.name,
                "seeds": seeds, "ensemble": ensemble, "lr_find": lr_find, "budget_s": budget_s}
    meta = {"recipe": recipe.user_values(), "recipe_path": str(recipe.path.resolve()) if recipe.path else None,
            "space": {k: d.describe() for k, d in space.items()}, "prune": prune,
            "trials": recipe["search.trials"], "fine_trials": recipe["search.fine_trials"]}
    write_json(run_dir / "search.json", {**settings, **meta})  # what --resume needs, written first
    if _redact(where) != where:  # the one file that keeps a storage password (--resume reconnects): owner only
        os.chmod(run_dir / "search.json", 0o600)
    st = st or open_storage(settings["storage"])
    _queue_slots(st, settings["study"], meta, _direction(recipe), resume=False)
    if budget_s is not None:
        import optuna

        coarse = recipe["search.trials"] * recipe["search.coarse_epochs"]
        share = coarse / max(coarse + recipe["search.fine_trials"] * recipe["search.fine_epochs"], 1)
        start = time.time()  # wall clock: every worker, here or on another machine, reads the same deadlines
        optuna.load_study(study_name=settings["study"], storage=st).set_user_attr(
            "deadlines", {"coarse": start + budget_s * share, "fine": start + budget_s})
    return _lead(run_dir, recipe, space, st, settings, prune, device, jobs, quiet)


def resume(run_dir: str | Path, *, recipe: Recipe | None = None, device: str = "auto", jobs: int | str = "auto",
           quiet: bool = True) -> SearchResult:
    """Continue a killed search in its own run folder: finished trials are kept, trials left running are queued
    again, and the remaining slots are run. No worker of that search may still be running."""
    import optuna
    from optuna.trial import TrialState

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {str(run_dir)!r}: no such folder")
    if not (run_dir / "search.json").is_file():
        raise UserError(f"--resume {str(run_dir)!r}: not a dlrecipe search run folder (no search.json)")
    status = (read_json_or_refuse(run_dir / "summary.json").get("status") if (run_dir / "summary.json").is_file()
              else None)
    if status not in (None, "interrupted"):  # None: killed before it could write its summary
        raise UserError(f"--resume {str(run_dir)!r}: this search is {status} already, nothing to resume "
                        f"(dlrecipe report {run_dir} reads it again)")
    check_options(jobs, "none", 1, 1)
    saved = read_json_or_refuse(run_dir / "search.json")
    saved["storage"] = _saved_storage(run_dir, saved["storage"])
    r, differ = _study_recipe(saved, recipe)
    if differ:
        err.print(f"note: --resume uses the search's own recipe; ignoring what differs in this one: "
                  f"{', '.join(differ)}", highlight=False)
    device = resolve_device(device)
    st = open_storage(saved["storage"])
    _queue_slots(st, saved["study"], {k: saved[k] for k in ("recipe", "recipe_path", "space", "prune", "trials",
                                                             "fine_trials")}, _direction(r), resume=True)
    study = optuna.load_study(study_name=saved["study"], storage=st)
    study.set_user_attr("deadlines", None)  # a resumed search runs every slot left, whatever its first budget
    study_id = st.get_study_id_from_name(saved["study"])
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mine = t.user_attrs.get("host") in (None, HOST)
        pid = t.user_attrs.get("pid")
        if (mine and (pid is None or not _pid_alive(pid))) or (not mine and not _has_heartbeat(st)):
            _fail_and_requeue(study, st, study_id, t, "left running when the search was stopped; queued again")
    return _lead(run_dir, r, _space_from(saved["space"]), st, saved, saved["prune"], device, jobs, quiet)



def join(recipe: Recipe | None, *, storage: str, study: str, device: str = "auto", runs_dir: str | Path = "runs",
         quiet: bool = True) -> tuple[Path, int]:
    """`--worker`: run slots of an existing study (on this or another machine) into a new run folder here."""
    device = resolve_device(device)
    st = open_storage(storage)
    meta = _wait_for_study(st, study, JOIN_WAIT_S, announce=not quiet)
    r, differ = _study_recipe(meta, recipe)
    if differ and not quiet:
        err.print(f"note: a worker uses the study's recipe; ignoring what differs in this one: {', '.join(differ)}",
                  highlight=False)
    run_dir = start_run(r, runs_dir, "search-worker", device)
    t0 = time.perf_counter()
    w = Worker(st, study, r, _space_from(meta["space"]), run_dir, device, meta["prune"],
               note=None if quiet else _note)
    progress = SearchProgress(meta["trials"] + meta["fine_trials"], _monitor(r), quiet)
    try:
        n = work(w, on_trial=lambda trials: progress.update(trial_rows(trials, w.space, r.task)))
    finally:
        progress.close()
    write_json(run_dir / "summary.json", {
        "name": r.name, "command": "search-worker", "status": "completed", "study": study,
        "storage": _redact(storage), "trials_run": n, "seconds": time.perf_counter() - t0,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return run_dir, n


def _note(message: str) -> None:
    err.print(f"note: {message}", highlight=False)


def _lead(run_dir: Path, recipe: Recipe, space: dict[str, Dist], storage, settings: dict, prune: str, device: str,
          jobs: int | str | None, quiet: bool) -> SearchResult:
    """Run the slots (here, and in up to `jobs` - 1 more worker processes when they pay), wait for every slot, then
    select, test and report.

    Ctrl-C writes summary.json with status "interrupted" and the --resume command, then raises Interrupted."""
    import optuna

    t0 = time.perf_counter()
    name = settings["study"]
    most = parse_jobs(jobs) or _auto_jobs(recipe, device)
    w = Worker(storage, name, recipe, space, run_dir, device, prune, share=most, note=None if quiet else _note)
    total = recipe["search.trials"] + recipe["search.fine_trials"]
    progress = SearchProgress(total, _monitor(recipe), quiet)
    kept = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    progress.start_from(trial_rows(kept, space, recipe.task))  # a resumed search: its finished trials, one line

    def record(trials: list) -> None:
        rows = trial_rows(trials, space, recipe.task)
        _write_trials_csv(run_dir, rows)
        progress.update(rows)

    try:
        return _run_and_finish(w, run_dir, storage, settings, device, most, record, progress, t0)
    except KeyboardInterrupt:
        from optuna.trial import TrialState

        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        study_id = storage.get_study_id_from_name(name)
        for t in trials:  # the trial cut short here is queued again now, so a resume (even in this process) reruns it
            pid = t.user_attrs.get("pid")  # this process's, or a --jobs process's that has stopped
            if t.state == TrialState.RUNNING and t.user_attrs.get("host") == HOST and \
                    (pid == os.getpid() or (pid is not None and not _pid_alive(pid))):
                _fail_and_requeue(study, storage, study_id, t, "interrupted (Ctrl-C); queued again")
        rows = trial_rows(study.get_trials(deepcopy=False), space, recipe.task)
        _write_trials_csv(run_dir, rows)
        done = sum(r["state"] not in ("running", "waiting") and not r["retried"] for r in rows)
        reason = (f"interrupted (Ctrl-C) with {done} of {total} trials finished; they are kept: continue with "
                  f"dlrecipe search --resume {run_dir}")
        write_json(run_dir / "summary.json", {
            "name": recipe.name, "command": "search", "status": "interrupted", "reason": reason,
            "study": name, "storage": _redact(settings["storage"]), "trials_finished": done,
            "seconds": time.perf_counter() - t0, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        raise Interrupted(reason) from None


def _auto_jobs(recipe: Recipe, device: str) -> int:
    """--jobs auto's most processes here (dlrecipe.search.jobs)."""
    from ..threads import cores

    omp = os.environ.get("OMP_NUM_THREADS", "")
    local = any("dlrecipe.memory:" in str(recipe[k] or "") for k in ("data.source", "model.factory"))
    return auto_workers(cores=cores(), omp_threads=int(omp) if omp.isdigit() else None, device=device,
                        local_objects=local)


def _run_and_finish(w: Worker, run_dir: Path, storage, settings: dict, device: str, most: int,
                    record: Callable[[list], None], progress: SearchProgress, t0: float) -> SearchResult:
    """The leader is worker 1 (torch, the storage and the data are loaded here already); with most > 1, jobs.Crew
    starts more processes while the work left pays for their start-up. The summary says how many ran."""
    import optuna

    crew = None
    if most > 1:
        data = w.data_for(w.stage_recipe({}, "coarse"))
        crew = Crew(settings, run_dir, device, most, w.recipe, tuple(data.x_train.shape[1:]))
        w.here = crew.here
    try:
        try:
            work(w, on_trial=record, crew=crew)
            if crew is not None:
                crew.release()  # nothing left to claim: those up stop at their next look, those starting at once
            study = optuna.load_study(study_name=settings["study"], storage=storage)
            record(study.get_trials(deepcopy=False))
        finally:
            progress.close()
        settings["jobs"] = {"most": most, "processes": 1 + (crew.started() if crew is not None else 0)}
        return _finish(w, study, settings, t0)  # meanwhile the processes up exit on their own
    finally:
        if crew is not None:  # reaped; after Ctrl-C or an error a process still in a trial gets 5 s, then is ended
            crew.close(wait_s=5.0)
