"""Workers: claim waiting slots through the storage (WAITING -> RUNNING succeeds for one worker only), sample each
slot's parameters with its own seeded sampler, train it into trials/<n>/ and tell Optuna the outcome.

Coarse slots first; fine slots only once no coarse slot is waiting or running. A worker claims up to
`search.population` slots of a stage at once; those that differ only in per-member settings train as one fused
population (dlrecipe.search.population), each told to Optuna as soon as it finishes.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..recipe import Recipe
from .space import Dist, _space_from, narrow
from .storage import (HOST, JOIN_WAIT_S, LOCAL_POLL_S, POLL_S, _fail_and_requeue, _has_heartbeat, _Heartbeat,
                      _pid_alive, _study_recipe, _wait_for_study, open_storage, set_user_attrs)


def _sampler_seed(seed: int, stage: str, slot: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed, 0 if stage == "coarse" else 1, slot]).generate_state(1)[0])


def _pruner(name: str):
    import optuna

    if name == "median":  # prune below the median of earlier trials at the same epoch, after 5 trials
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "successive-halving":  # keep the best third at epochs 1, 3, 9, ...
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _direction(recipe: Recipe) -> str:
    return "maximize" if _monitor(recipe) == "val_acc" else "minimize"


def _monitor(recipe: Recipe) -> str:
    return "val_acc" if recipe.task == "classification" and recipe["train.monitor"] == "val_acc" else "val_loss"


def _without_test(data):
    """The same data with an empty test split: trials never see it (the test split is used once, at the end)."""
    return replace(data, x_test=data.x_test[:0], y_test=data.y_test[:0])


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@dataclass
class Worker:
    """What a worker needs to run slots of one study: the storage, the study's recipe and space, a run folder."""

    storage: Any
    study_name: str
    recipe: Recipe
    space: dict[str, Dist]
    run_dir: Path                   # trials/<n>/ are written here
    device: str
    prune: str = "none"
    share: int = 1                  # worker processes sharing the slots on this machine (--jobs)
    here: Callable[[], int] | None = None  # those claiming now (--jobs: the leader and the processes up), else share
    note: Callable[[str], None] | None = None  # where a note for the user goes (None: quiet)
    _data: dict = field(default_factory=dict)
    _fine: dict | None = None
    _auto: dict = field(default_factory=dict)
    _noted: set = field(default_factory=set)

    def population_size(self, stage: str, waiting: int, time_up: bool, sharing: int = 1) -> int:
        """How many waiting slots of `stage` to claim at once: search.population (0 = auto: from the model size and
        free memory, and no more than 1/sharing of the waiting slots, so that every worker gets some);
        1 once the stage's --budget time is up (the one trial the stage still needs).

        Auto fuses coarse trials only. Fine trials are the candidates for selection: trained alone, the selected
        one is exactly what `dlrecipe train` with its parameters (and a retrain of a trial run on another machine)
        gives, where a fused run matches it only to float rounding, which long mixup/dropout runs amplify (a 1e-6
        change moves the val_loss of a 30-epoch digits trial by ~4%); and a few long, early-stopped trials gain
        little from fusing. An explicit search.population >= 2 fuses both stages."""
        n = self.recipe["search.population"]
        if time_up or n == 1 or (n == 0 and stage == "fine"):
            return 1  # auto fuses the coarse stage only: see below
        if n == 0:
            if stage not in self._auto:
                from .population import auto_size

                recipe = self.stage_recipe({}, stage)
                self._auto[stage] = auto_size(recipe, self.data_for(recipe), self.device)
            n = min(self._auto[stage], math.ceil(waiting / max(sharing, 1)))
        return max(1, min(n, waiting))

    def workers_here(self) -> int:
        return self.here() if self.here is not None else self.share

    def say(self, study, message: str) -> None:
        """A note once per worker: on stderr (unless quiet) and in the study, for summary.json's warnings."""
        if message in self._noted:
            return
        self._noted.add(message)
        if self.note is not None:
            self.note(message)
        notes = list(study.user_attrs.get("notes", []))
        if message not in notes:
            study.set_user_attr("notes", notes + [message])

    def data_for(self, recipe: Recipe):
        """Load (once per data setting) the split the trial's recipe asks for, without its test split."""
        from ..data import load_data

        key = repr(sorted((k, v) for k, v in recipe.values.items() if k.startswith("data.") or k == "seed"))
        if key not in self._data:
            self._data[key] = _without_test(load_data(recipe, self.device))
        return self._data[key]

    def stage_recipe(self, params: dict[str, Any], stage: str) -> Recipe:
        epochs = self.recipe["search.coarse_epochs" if stage == "coarse" else "search.fine_epochs"]
        return self.recipe.with_values({**params, "train.epochs": epochs})

    def params_of(self, frozen) -> dict[str, Any]:
        return {k: self.space[k].decode(v) if k in self.space else v for k, v in frozen.params.items()}

    def fine_space(self, study) -> dict[str, Dist]:
        """Narrowed around the top-k complete coarse trials (all coarse slots are finished when this is asked)."""
        if self._fine is None:
            top = ranked(study.get_trials(deepcopy=False), _direction(self.recipe), stage="coarse")
            self._fine = narrow(self.space, [self.params_of(t) for t in top[:self.recipe["search.top_k"]]])
        return self._fine


def ranked(trials: list, direction: str, stage: str | None = None) -> list:
    """Complete trials (of one stage), best first; ties go to the lower trial number."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and (stage is None or t.user_attrs.get("stage")
                                                                      == stage)]
    sign = -1 if direction == "maximize" else 1
    return sorted(done, key=lambda t: (sign * t.value, t.number))


def work(w: Worker, *, on_trial: Callable[[list], None] | None = None,
         should_stop: Callable[[], bool] = lambda: False, crew=None) -> int:
    """Claim and run slots until every slot of the study is finished; return how many ran here.

    Coarse slots first; fine slots only once no coarse slot is waiting or running (other workers' included).
    on_trial(trials): after each claim ran here, and while waiting for others' slots when one of them finished.
    crew: the leader's --jobs processes (jobs.Crew): told what each claim took, asked between claims whether to
    start one more.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=w.study_name, storage=w.storage, pruner=_pruner(w.prune))
    study_id = w.storage.get_study_id_from_name(w.study_name)
    ran, seen = 0, -1
    poll_s = POLL_S if _has_heartbeat(w.storage) else LOCAL_POLL_S
    while not should_stop():
        if _has_heartbeat(w.storage):
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        dead = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("host") == HOST
                and t.user_attrs.get("pid") not in (None, os.getpid()) and not _pid_alive(t.user_attrs["pid"])]
        for t in dead:
            _fail_and_requeue(study, w.storage, study_id, t, f"its worker (pid {t.user_attrs['pid']}) died before "
                                                             f"it finished; queued again")
        if dead:
            continue
        late = _cannot_finish_in_time(trials, study.user_attrs.get("deadlines"), time.time())
        for t, why in late:
            _skip(w.storage, study_id, t, why)
        if late:
            continue
        active = [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
        if not active:
            break
        if crew is not None:
            crew.tick(trials)
        coarse_busy = any(t.user_attrs.get("stage") == "coarse" for t in active)
        waiting = sorted((t for t in active if t.state == TrialState.WAITING
                          and (t.user_attrs.get("stage") == "coarse" or not coarse_busy)),
                         key=lambda t: (t.user_attrs.get("stage") != "coarse", t.number))
        if not waiting:
            if on_trial is not None and len(trials) - len(active) != seen:  # another worker's slot finished
                seen = len(trials) - len(active)
                on_trial(trials)
            time.sleep(poll_s)  # others are running the last slots (or the coarse stage is finishing)
            continue
        stage = waiting[0].user_attrs.get("stage")
        same = [t for t in waiting if t.user_attrs.get("stage") == stage]
        end = (study.user_attrs.get("deadlines") or {}).get(stage)
        others = {(t.user_attrs.get("host"), t.user_attrs.get("pid")) for t in active if t.state == TrialState.RUNNING}
        # workers that may want these slots: this machine's --jobs, those running trials now, and on a database
        # at least one more (workers on other machines may be about to claim)
        sharing = max(w.workers_here(), len(others - {(HOST, os.getpid())}) + 1, 2 if _has_heartbeat(w.storage) else 1)
        want = w.population_size(stage, len(same), end is not None and time.time() >= end, sharing)
        claimed = []
        for t in same:  # WAITING -> RUNNING succeeds for one worker only: each slot runs once
            trial_id = w.storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                if w.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    claimed.append((trial_id, t))
            except UpdateFinishedTrialError:
                continue
            if len(claimed) == want:
                break
        if not claimed:
            time.sleep(poll_s)
            continue
        report = (lambda: on_trial(study.get_trials(deepcopy=False))) if on_trial is not None else (lambda: None)
        t0 = time.perf_counter()
        _run_slots(w, study, claimed, report)
        if crew is not None:
            crew.ran(stage, len(claimed), time.perf_counter() - t0)
        ran += len(claimed)
        report()
    return ran


def _cannot_finish_in_time(trials: list, deadlines: dict | None, now: float) -> list[tuple[Any, str]]:
    """Waiting slots of a stage whose time (deadlines: stage -> wall-clock end, from --budget) would run out before
    a typical trial of that stage (the median of its complete ones) could finish. A stage with no complete trial yet
    keeps going: the search needs one coarse trial to narrow around and one fine trial to select."""
    import statistics

    from optuna.trial import TrialState

    late = []
    for stage, end in (deadlines or {}).items():
        took = [t.user_attrs.get("seconds") or 0.0 for t in trials
                if t.user_attrs.get("stage") == stage and t.state == TrialState.COMPLETE]
        if took and now + statistics.median(took) > end:
            why = (f"skipped: the --budget's time for the {stage} stage was up (a {stage} trial takes about "
                   f"{statistics.median(took):.1f} s)")
            late += [(t, why) for t in trials if t.state == TrialState.WAITING and t.user_attrs.get("stage") == stage]
    return late


def _skip(storage, study_id: int, frozen, reason: str) -> None:
    """Close a waiting slot unrun: claimed first (WAITING -> RUNNING), so a slot another worker has just claimed is
    left alone; state "skipped" in trials.csv."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
    try:
        if not storage.set_trial_state_values(trial_id, TrialState.RUNNING):
            return
        storage.set_trial_user_attr(trial_id, "state", "skipped")
        storage.set_trial_user_attr(trial_id, "reason", reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return


@dataclass
class _Slot:
    """One claimed slot on its way: its Optuna trial, heartbeat, sampled recipe and trial folder."""

    trial: Any
    beat: Any
    t0: float
    stage: str
    recipe: Recipe | None = None
    folder: Path | None = None
    error: str | None = None
    closed: bool = False


def _open_slot(w: Worker, study, trial_id: int, frozen) -> _Slot:
    """Start a claimed slot: its heartbeat, where it runs, and its parameters from its own seeded sampler."""
    import optuna

    stage, slot = frozen.user_attrs["stage"], frozen.user_attrs["slot"]
    study.sampler = optuna.samplers.RandomSampler(seed=_sampler_seed(w.recipe["seed"], stage, slot))
    trial = optuna.trial.Trial(study, trial_id)
    beat = _Heartbeat(w.storage, trial_id)  # first: a worker lost from now on is noticed by the others
    set_user_attrs(w.storage, trial_id, {"host": HOST, "pid": os.getpid(), "run_dir": str(w.run_dir.resolve())})
    s = _Slot(trial, beat, time.perf_counter(), stage)
    try:
        space = w.fine_space(study) if stage == "fine" else w.space
        params = {key: d.suggest(trial) for key, d in space.items()}
        s.recipe = w.stage_recipe(params, stage)
        s.folder = w.run_dir / "trials" / str(trial.number)
        s.folder.mkdir(parents=True, exist_ok=True)
    except Exception as e:  # noqa: BLE001 - a broken trial is recorded and the search goes on
        s.error = f"{type(e).__name__}: {e}"
    return s


def _epoch_callback(w: Worker, s: _Slot) -> Callable[[dict], bool]:
    """loop.fit's on_epoch for one trial: report the monitored value to Optuna; True when the pruner stops it."""
    monitor, epochs = _monitor(w.recipe), s.recipe["train.epochs"]
    prune = w.prune != "none" and s.stage == "coarse"  # the fine stage has early stopping instead

    def on_epoch(row: dict) -> bool:
        value = row.get(monitor)
        if not prune or value is None or not math.isfinite(value):
            return False  # (without a pruner nothing reads the reports: no storage write per epoch)
        s.trial.report(value, row["epoch"])
        return row["epoch"] < epochs and s.trial.should_prune()
    return on_epoch


def _close_slot(w: Worker, study, s: _Slot, result=None, error: str | None = None) -> None:
    """Record a slot's outcome (a TrainResult, or the error that broke it) and tell Optuna."""
    from optuna.trial import TrialState

    s.beat.stop()
    error = error or s.error
    if error is None:
        sm = result.summary
        state = {"stopped": "pruned", "diverged": "diverged"}.get(sm["status"], "complete")
        reason = "pruned: behind the other trials at this epoch" if state == "pruned" else sm["reason"]
        attrs = {"state": state, "reason": reason, "best_epoch": sm["best_epoch"], "epochs_run": sm["epochs_run"],
                 **{k: v for k, v in sm.items() if k.startswith("best_val_")}, "history": result.history}
        value = sm.get(f"best_{_monitor(w.recipe)}")
        if state == "complete" and (value is None or not math.isfinite(value)):
            state, attrs["state"] = "failed", "failed"
    else:
        state, value, attrs = "failed", None, {"state": "failed", "reason": error}
    attrs["seconds"] = time.perf_counter() - s.t0
    set_user_attrs(w.storage, s.trial._trial_id, {k: _clean(v) for k, v in attrs.items()})
    if state == "complete":
        study.tell(s.trial, value)
    else:
        study.tell(s.trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)
    s.closed = True


def _train_alone(w: Worker, study, s: _Slot) -> None:
    from ..train import train_in

    try:
        result = train_in(s.folder, s.recipe, w.data_for(s.recipe), on_epoch=_epoch_callback(w, s),
                          seed=s.recipe["seed"])
    except Exception as e:  # noqa: BLE001 - a broken trial is recorded and the search goes on
        _close_slot(w, study, s, error=f"{type(e).__name__}: {e}")
        return
    except BaseException:  # Ctrl-C: the trial stays RUNNING; the leader queues it again
        s.beat.stop()
        raise
    _close_slot(w, study, s, result)


def _run_slot(w: Worker, study, trial_id: int, frozen) -> None:
    """Sample one slot's parameters, train it into trials/<n>/, record the outcome and tell Optuna."""
    s = _open_slot(w, study, trial_id, frozen)
    if s.error is not None:
        _close_slot(w, study, s)
    else:
        _train_alone(w, study, s)


def _run_slots(w: Worker, study, claimed: list, report: Callable[[], None]) -> None:
    """Run claimed slots: those whose recipes differ only in per-member settings (population.PER_MEMBER) as one
    fused population, the others (and models that cannot be fused: said once) one at a time. Each trial is told
    to Optuna as soon as it finishes, so a killed population keeps its finished members; trials.csv and the
    progress line (report) follow once the population is done."""
    if len(claimed) == 1:
        _run_slot(w, study, *claimed[0])
        return
    from .fused import NotFusable
    from .population import fusable_kind, group_key, train_population

    slots = [_open_slot(w, study, trial_id, frozen) for trial_id, frozen in claimed]
    try:
        groups: dict[str, list[_Slot]] = {}
        for s in slots:
            if s.error is not None:
                _close_slot(w, study, s)
            else:
                groups.setdefault(group_key(s.recipe), []).append(s)
        for members in groups.values():
            why = fusable_kind(members[0].recipe) if len(members) > 1 else "alone"
            if why is None:
                def done(k: int, result, members=members) -> None:
                    _close_slot(w, study, members[k], result)  # told now: a kill from here on keeps it
                try:
                    train_population([s.folder for s in members], [s.recipe for s in members],
                                     w.data_for(members[0].recipe), on_epoch=[_epoch_callback(w, s) for s in members],
                                     on_done=done)
                    continue
                except NotFusable as e:
                    why = f"{e}; these trials train one at a time"
                except Exception as e:  # noqa: BLE001 - a broken population is recorded and the search goes on
                    for s in members:
                        if not s.closed:
                            _close_slot(w, study, s, error=f"{type(e).__name__}: {e}")
                    continue
            if why != "alone":
                w.say(study, f"population: {why}")
            for s in members:
                if not s.closed:
                    _train_alone(w, study, s)
                    report()
    finally:  # Ctrl-C: heartbeats stop, the unfinished slots stay RUNNING and are queued again by the leader
        for s in slots:
            if not s.closed:
                s.beat.stop()


def _child(storage_url: str, study_name: str, run_dir: str, device: str, parent: int, share: int, states,
           index: int, stop) -> None:
    """A --jobs worker process (dlrecipe.search.jobs): torch threads by dlrecipe.threads' policy for `share`
    processes; it reads the study and loads the data, then comes up (states[index] = the time) unless the leader
    has stopped already, and claims slots until none is left, the leader says stop, or the leader has died.
    Ctrl-C is the leader's to handle (it says stop, then terminates what is still running after a few seconds)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch  # noqa: F401 - the start-up the leader measures

    from ..threads import configure

    storage = open_storage(storage_url)  # reads only until it is up: a process still starting can be terminated
    meta = _wait_for_study(storage, study_name, timeout=JOIN_WAIT_S)
    w = Worker(storage, study_name, _study_recipe(meta, None)[0], _space_from(meta["space"]), Path(run_dir),
               device, meta["prune"], share=share, here=lambda: 1 + sum(v > 0 for v in states[:]))
    data = w.data_for(w.stage_recipe({}, "coarse"))
    configure(w.recipe, tuple(data.x_train.shape[1:]), jobs=share)  # small models 1 thread, else cores / jobs
    with states.get_lock():
        if stop.is_set():
            return
        states[index] = time.time()
    try:
        work(w, should_stop=lambda: stop.is_set() or os.getppid() != parent)
    finally:
        states[index] = -1
