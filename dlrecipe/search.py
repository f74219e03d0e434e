"""`dlrecipe search`: steps 4 and 5 of the recipe, a coarse random search then a refinement, on Optuna.

Lecture 003: try LRs and weight decays around what worked in step 3 for 1-5 epochs (coarse), then narrow around the
best and train longer, 10-20 epochs (fine); random search beats grid search (Bergstra and Bengio 2012).

How the work is shared. The search is one Optuna study whose trials are created up front as numbered WAITING
"slots": `trials` coarse ones, then `fine_trials` fine ones. A worker claims a slot through the storage (WAITING ->
RUNNING succeeds for one worker only), so any number of workers, in one process, in several on one machine (a
journal file) or on many machines (a database URL), run every slot exactly once. Fine slots are claimed only when
no coarse slot is waiting or running; a fine trial narrows the space around the top-k coarse trials, a
deterministic function of the finished coarse trials, so every worker narrows the same way. Each trial samples
with its own RandomSampler seeded by (seed, stage, slot): the same trials whatever the number of workers. A trial
whose worker died (a dead process on this machine, or a silent heartbeat on a database) is failed and queued again
with the same parameters. The process that started the search waits for every slot, selects the best fine trial's
snapshot, tests it (and the --seeds / --ensemble models) once, and writes the report.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .atomic import replace as replace_file
from .display import err, fmt
from .errors import Interrupted, RecipeError, UserError
from .recipe import SCHEMA, Recipe, _suggest, validate
from .runs import read_json, read_json_or_refuse, resolve_device, start_run, write_json

KINDS = ("log_uniform", "uniform", "int", "choice")
PRUNERS = ("none", "median", "successive-halving")
DEFAULT_WEIGHT_DECAYS = [0.0, 1e-5, 1e-4]  # lecture 003's coarse-search values
LR_DECADE = 10.0         # default LR range: one decade either side of the base LR (two decades in all)
NARROW_PAD = 0.1         # fine ranges: the top-k span plus 10% of the coarse width each side (at least)
EDGE = 0.1               # a best value in the outer 10% of its range (log space for log ranges) is at the edge
HEARTBEAT_S = 10         # database workers record a heartbeat this often ...
GRACE_S = 60             # ... and a trial silent this long is failed and queued again
JOIN_WAIT_S = 120        # a --worker waits this long for the study to be created
POLL_S = 0.5             # how often an idle worker (or the leader of --jobs N) looks at the study
NOT_SEARCHABLE = ("name", "description", "task", "train.epochs")  # epochs are set by each stage
# keys that define the examples or their split: trials would be validated on different data (and ranked against
# each other), and the selected model tested on the recipe's split, which may hold its training examples
DATA_KEYS = ("seed", "data.source", "data.format", "data.target", "data.split", "data.preprocess", "data.shape",
             "data.n_samples", "data.noise", "data.classes")
HOST = socket.gethostname()


# ---------------------------------------------------------------------------------------------------- the space

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


# ---------------------------------------------------------------------------------------------------- storage

def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str):
    """A database URL (postgresql://, mysql://, sqlite:///) -> RDBStorage with heartbeats; else a journal file."""
    import inspect

    import optuna

    _quiet_optuna()
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        if Path(url).is_dir():
            raise UserError(f"--storage {url!r} is a folder: expected a journal file (created when missing) or a "
                            f"database URL (postgresql://, mysql://, sqlite:///)")
        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--storage {url!r}: cannot create its folder ({e.strerror or e})") from None
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in DATABASES:  # a misspelt scheme: said here, not as SQLAlchemy's "Can't load plugin"
        raise UserError(f"--storage {_redact(url)}: unknown database {scheme!r}{_suggest(scheme, DATABASES)} "
                        f"Allowed: postgresql://, mysql://, sqlite:///, or a journal file path")
    given, url = url, _postgres_driver(url)
    # optuna 5 renamed failed_trial_callback; both are called for trials whose heartbeat went silent
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params \
        else "failed_trial_callback"
    last: Exception | None = None
    for attempt in range(5):  # workers starting together on a fresh database race to create the tables
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                              **{callback: _requeue})
        except ImportError as e:
            raise UserError(f"--storage {_redact(given)}: {e}") from None
        except Exception as e:  # noqa: BLE001 - sqlalchemy's errors: connection refused, bad URL, table race
            last = e
            time.sleep(0.5 * (attempt + 1))
    first = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    raise UserError(f"--storage {_redact(given)}: cannot open it: {first}")


DATABASES = ("postgresql", "postgres", "mysql", "mariadb", "sqlite", "oracle", "mssql")  # SQLAlchemy's dialects


def _postgres_driver(url: str) -> str:
    """postgresql://: SQLAlchemy >= 2.1 defaults to psycopg 3; use psycopg2 when only that one is installed."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def _requeue(study, frozen) -> None:
    """Queue a failed trial again with the same stage, slot and parameters (it counts once in the results)."""
    import optuna
    from optuna.trial import TrialState

    attrs = {k: frozen.user_attrs[k] for k in ("stage", "slot") if k in frozen.user_attrs}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
        user_attrs={**attrs, "retry_of": frozen.number}, system_attrs={"fixed_params": dict(frozen.params)}))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_and_requeue(study, storage, study_id: int, frozen, reason: str) -> bool:
    """Fail a trial left RUNNING by a dead worker and queue it again; False when another worker got there first."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
    try:
        storage.set_trial_user_attr(trial_id, "state", "failed")
        storage.set_trial_user_attr(trial_id, "reason", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    _requeue(study, frozen)
    return True


def _has_heartbeat(storage) -> bool:
    get = getattr(storage, "get_heartbeat_interval", None)
    return bool(get and get())


class _Heartbeat:
    """Records a database heartbeat for one trial in a thread (Optuna only does this inside study.optimize)."""

    def __init__(self, storage, trial_id: int):
        self._stop = threading.Event()
        self._thread = None
        if _has_heartbeat(storage):
            def beat():
                while True:
                    storage.record_heartbeat(trial_id)
                    if self._stop.wait(storage.get_heartbeat_interval()):
                        return
            self._thread = threading.Thread(target=beat, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# ---------------------------------------------------------------------------------------------------- workers

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
    _data: dict = field(default_factory=dict)
    _fine: dict | None = None

    def data_for(self, recipe: Recipe):
        """Load (once per data setting) the split the trial's recipe asks for, without its test split."""
        from .data import load_data

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
         should_stop: Callable[[], bool] = lambda: False) -> int:
    """Claim and run slots until every slot of the study is finished; return how many ran here.

    Coarse slots first; fine slots only once no coarse slot is waiting or running (other workers' included).
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=w.study_name, storage=w.storage, pruner=_pruner(w.prune))
    study_id = w.storage.get_study_id_from_name(w.study_name)
    ran = 0
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
        coarse_busy = any(t.user_attrs.get("stage") == "coarse" for t in active)
        waiting = sorted((t for t in active if t.state == TrialState.WAITING
                          and (t.user_attrs.get("stage") == "coarse" or not coarse_busy)),
                         key=lambda t: (t.user_attrs.get("stage") != "coarse", t.number))
        claimed = None
        for t in waiting:
            trial_id = w.storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                if w.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    claimed = (trial_id, t)
                    break
            except UpdateFinishedTrialError:
                continue
        if claimed is None:
            time.sleep(POLL_S)  # others are running the last slots (or the coarse stage is finishing)
            continue
        _run_slot(w, study, *claimed)
        ran += 1
        if on_trial is not None:
            on_trial(study.get_trials(deepcopy=False))
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


def _run_slot(w: Worker, study, trial_id: int, frozen) -> None:
    """Sample one slot's parameters, train it into trials/<n>/, record the outcome and tell Optuna."""
    import optuna
    from optuna.trial import TrialState

    from .train import train_in

    stage, slot = frozen.user_attrs["stage"], frozen.user_attrs["slot"]
    study.sampler = optuna.samplers.RandomSampler(seed=_sampler_seed(w.recipe["seed"], stage, slot))
    trial = optuna.trial.Trial(study, trial_id)
    beat = _Heartbeat(w.storage, trial_id)  # first: a worker lost from now on is noticed by the others
    for k, v in (("host", HOST), ("pid", os.getpid()), ("run_dir", str(w.run_dir.resolve()))):
        trial.set_user_attr(k, v)
    t0 = time.perf_counter()
    monitor = _monitor(w.recipe)
    attrs: dict[str, Any] = {}
    try:
        space = w.fine_space(study) if stage == "fine" else w.space
        params = {key: d.suggest(trial) for key, d in space.items()}
        recipe = w.stage_recipe(params, stage)
        folder = w.run_dir / "trials" / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        epochs = recipe["train.epochs"]
        prune = w.prune != "none" and stage == "coarse"  # the fine stage has early stopping instead

        def on_epoch(row: dict) -> bool:
            value = row.get(monitor)
            if value is None or not math.isfinite(value):
                return False
            trial.report(value, row["epoch"])
            return prune and row["epoch"] < epochs and trial.should_prune()

        result = train_in(folder, recipe, w.data_for(recipe), on_epoch=on_epoch, seed=recipe["seed"])
        s = result.summary
        state = {"stopped": "pruned", "diverged": "diverged"}.get(s["status"], "complete")
        reason = "pruned: behind the other trials at this epoch" if state == "pruned" else s["reason"]
        attrs = {"state": state, "reason": reason, "best_epoch": s["best_epoch"], "epochs_run": s["epochs_run"],
                 **{k: v for k, v in s.items() if k.startswith("best_val_")}, "history": result.history}
        value = s.get(f"best_{monitor}")
        if state == "complete" and (value is None or not math.isfinite(value)):
            state, attrs["state"] = "failed", "failed"
    except Exception as e:  # noqa: BLE001 - a broken trial is recorded and the search goes on
        state, value = "failed", None
        attrs = {"state": "failed", "reason": f"{type(e).__name__}: {e}"}
    finally:
        beat.stop()
    attrs["seconds"] = time.perf_counter() - t0
    for k, v in attrs.items():
        trial.set_user_attr(k, _clean(v))
    if state == "complete":
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)


def _child(storage_url: str, study_name: str, run_dir: str, device: str, threads: int, parent: int) -> None:
    """A --jobs worker process: torch threads = cores / jobs; stops claiming when its parent has died."""
    import torch

    torch.set_num_threads(threads)
    storage = open_storage(storage_url)
    meta = _wait_for_study(storage, study_name, timeout=JOIN_WAIT_S)
    w = Worker(storage, study_name, _study_recipe(meta, None)[0], _space_from(meta["space"]), Path(run_dir),
               device, meta["prune"])
    work(w, should_stop=lambda: os.getppid() != parent)


def _wait_for_study(storage, name: str, timeout: float, announce: bool = False) -> dict:
    """The study's dlrecipe settings, once its leader has queued every slot."""
    import optuna

    deadline, said = time.monotonic() + timeout, False
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            if study.user_attrs.get("ready"):
                return study.user_attrs["dlrecipe"]
        except KeyError:  # no such study yet
            pass
        if time.monotonic() > deadline:
            raise UserError(f"--study {name!r}: no such search in this storage after {timeout:.0f} s (start it with "
                            f"dlrecipe search RECIPE --storage URL --study {name})")
        if announce and not said:
            err.print(f"waiting for study {name!r} to be created ...", highlight=False)
            said = True
        time.sleep(POLL_S)


def _study_recipe(meta: dict, local: Recipe | None) -> tuple[Recipe, list[str]]:
    """The study's recipe; a local recipe file only supplies data.source (a path can differ between machines)."""
    values = dict(meta["recipe"])
    path = Path(meta["recipe_path"]) if meta.get("recipe_path") else None
    differ: list[str] = []
    if local is not None:
        values["data.source"], path = local["data.source"], local.path
        mine = local.user_values()
        differ = sorted(k for k in set(values) | set(mine) if k not in ("data.source", "name")
                        and mine.get(k) != values.get(k))
    return validate(values, path=path), differ


# ---------------------------------------------------------------------------------------------------- the leader

@dataclass
class SearchResult:
    run_dir: Path
    summary: dict
    trials: list[dict]          # the rows of trials.csv
    warnings: list[str]


class SearchProgress:
    """Trials done out of all slots, with the best validation value so far (stderr; nothing when quiet)."""

    def __init__(self, total: int, monitor: str, quiet: bool = False):
        self.total, self.monitor, self.quiet, self.done = total, monitor, quiet, 0
        self._shown: set[int] = set()  # trial numbers already printed (plain lines)
        self._bar = None
        if not quiet and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err)
            self._task = self._bar.add_task("trials", total=total, info="")
            self._bar.start()

    def update(self, rows: list[dict]) -> None:
        done = self._finished(rows)
        scored = [r[f"best_{self.monitor}"] for r in done if r["state"] == "complete"]
        best = (max if self.monitor == "val_acc" else min)(scored) if scored else None
        info = f"best {self.monitor} {fmt(best)}"
        if self._bar is not None:
            self._bar.update(self._task, completed=len(done), info=info)
        elif not self.quiet:
            new = [r for r in done if r["number"] not in self._shown]
            for i, r in enumerate(new):  # each finished trial once, whatever its number (a retry's is higher)
                err.print(f"trial {len(done) - len(new) + i + 1}/{self.total}  #{r['number']} {r['stage']} "
                          f"{r['state']}  {self.monitor} {fmt(r.get(f'best_{self.monitor}'))}  {info}",
                          highlight=False)
            self._shown.update(r["number"] for r in new)
        self.done = len(done)

    @staticmethod
    def _finished(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["state"] in ("complete", "pruned", "diverged", "failed", "skipped")
                and not r["retried"]]

    def start_from(self, rows: list[dict]) -> None:
        """Trials already finished (a resumed search): counted, and said in one line rather than one each."""
        before = self.quiet
        self.quiet = True
        self.update(rows)
        self.quiet = before
        self._shown = {r["number"] for r in self._finished(rows)}
        if self.done and not self.quiet and self._bar is None:
            err.print(f"resuming: {self.done}/{self.total} trials finished before", highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def short_names(keys: list[str]) -> dict[str, str]:
    """Column headers for searched keys: the last part of each dotted key ('train.lr' -> 'lr') when unique."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: short if last.count(short) == 1 else k for k, short in zip(keys, last)}


def leaderboard(result: SearchResult, title: str, rows: int = 10):
    """The terminal leaderboard: the best `rows` trials by the monitored metric (complete ones first); the selected
    trial is marked with * (the best fine trial, which a coarse one can beat)."""
    from rich import box
    from rich.table import Table

    s, monitor = result.summary, result.summary["monitor"]
    names = short_names(list(s["space"]))
    counts = {k: n for k, n in s["trials"].items() if k != "retried"}
    table = Table(title=f"{title}: {sum(counts.values())} trials ("
                  + ", ".join(f"{n} {k}" for k, n in s["trials"].items() if n) + "), * selected",
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True)
    order = sorted((x for x in result.trials if not x["retried"]), key=lambda x: (
        x["state"] != "complete",
        -(x[f"best_{monitor}"] or 0) if monitor == "val_acc" else (x[f"best_{monitor}"] or float("inf"))))
    selected = s.get("selected_trial")
    shown = order[:rows]
    if selected is not None and all(x["number"] != selected for x in shown):  # always show the selected one
        shown = shown[:-1] + [x for x in order if x["number"] == selected]
    cells = [[f"{x['number']}{'*' if x['number'] == selected else ''}", x["stage"], *[fmt(x[k], 3) for k in names],
              fmt(x[f"best_{monitor}"]), fmt(x["epochs_run"]), x["state"]] for x in shown]  # seconds: trials.csv
    for i, col in enumerate(["#", "stage", *names.values(), monitor, "epochs", "state"]):
        header = col.replace("_", "\n")  # weight\ndecay, val\nloss: two short lines rather than a cut word
        width = max([len(row[i]) for row in cells] + [len(word) for word in header.split("\n")])
        table.add_column(header, justify="left" if col in ("stage", "state") else "right", min_width=width,
                         no_wrap=True)
    for row in cells:
        table.add_row(*row)
    return table


def trial_rows(trials: list, space: dict[str, Dist], task: str) -> list[dict]:
    """One flat row per Optuna trial: the columns of trials.csv."""
    from optuna.trial import TrialState

    retried = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    metrics = ["best_val_loss", "best_val_acc"] if task == "classification" else ["best_val_loss"]
    rows = []
    for t in trials:
        u = t.user_attrs
        default = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
                   TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[t.state]
        state = u.get("state", default) if t.state.is_finished() else default
        reason = u.get("reason", "")
        if t.number in retried:
            reason = (reason or "its worker stopped before it finished") + f" (retried as trial {retried[t.number]})"
        row = {"number": t.number, "stage": u.get("stage", ""), "slot": u.get("slot")}
        for key, d in space.items():
            row[key] = d.decode(t.params[key]) if key in t.params else None
        row.update({m: u.get(m) for m in metrics})
        row.update({"best_epoch": u.get("best_epoch"), "epochs_run": u.get("epochs_run"), "state": state,
                    "reason": reason, "seconds": u.get("seconds"), "retry_of": u.get("retry_of"),
                    "retried": t.number in retried})
        rows.append(row)
    return rows


def _write_trials_csv(run_dir: Path, rows: list[dict]) -> None:
    import pandas as pd

    table = pd.DataFrame(rows).drop(columns=["retried"], errors="ignore")
    replace_file(run_dir / "trials.csv", lambda tmp: table.to_csv(tmp, index=False))  # atomic, synced


def check_options(jobs: int, prune: str, seeds: int, ensemble: int) -> None:
    if jobs < 1:
        raise UserError(f"--jobs {jobs} is not allowed: at least 1 worker process")
    if prune not in PRUNERS:
        raise UserError(f"--prune {prune!r} is unknown{_suggest(prune, PRUNERS)} Allowed: {', '.join(PRUNERS)}")
    if seeds < 1:
        raise UserError(f"--seeds {seeds} is not allowed: at least 1 (1 = no reruns)")
    if ensemble < 1:
        raise UserError(f"--ensemble {ensemble} is not allowed: at least 1 (1 = no ensemble)")


def _queue_slots(storage, name: str, meta: dict, direction: str, *, resume: bool) -> None:
    """Create the study (or find it, on resume), store its settings and queue every missing slot."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=resume)
    except optuna.exceptions.DuplicatedStudyError:
        raise UserError(f"--study {name!r} already exists in this storage: choose another name, join it with "
                        f"--worker, or continue its run folder with --resume RUN") from None
    if "dlrecipe" not in study.user_attrs:
        study.set_user_attr("dlrecipe", meta)
    have = {(t.user_attrs.get("stage"), t.user_attrs.get("slot")) for t in study.get_trials(deepcopy=False)}
    for stage, n in (("coarse", meta["trials"]), ("fine", meta["fine_trials"])):
        for slot in range(n):
            if (stage, slot) not in have:
                study.enqueue_trial({}, user_attrs={"stage": stage, "slot": slot})
    study.set_user_attr("ready", True)


def search(recipe: Recipe, *, device: str = "auto", runs_dir: str | Path = "runs", jobs: int = 1,
           prune: str = "none", seeds: int = 1, ensemble: int = 1, storage: str | None = None,
           study: str | None = None, from_lr_find: str | Path | None = None, quiet: bool = True,
           folder: str | None = None, budget_s: float | None = None) -> SearchResult:
    """Run `dlrecipe search`: a new run folder and study, coarse then fine trials, the selected model tested once.

    folder: the run folder's exact name under runs_dir (default: <time>-<name>-search).
    budget_s: seconds the trials may take (`dlrecipe run --budget`), shared between the stages in proportion to
    their planned epochs; a slot that a typical trial of its stage could not finish in its stage's time is skipped.
    """
    from .data import load_data

    check_options(jobs, prune, seeds, ensemble)
    lr_find = read_lr_find(from_lr_find) if from_lr_find else None
    space = parse_space(recipe, lr_find)
    device = resolve_device(device)
    load_data(recipe, device)  # a bad data source fails here, before a run folder exists
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


def resume(run_dir: str | Path, *, recipe: Recipe | None = None, device: str = "auto", jobs: int = 1,
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


def _saved_storage(run_dir: Path, storage: str) -> str:
    """search.json's storage as this process can open it. A journal file is looked for in the run folder first
    (search.json may name it relative to the folder the search was started from, or the run folder may have been
    moved); a database URL is used as it is. A missing journal is an error, not a new empty study."""
    if "://" in storage:
        return storage
    here = run_dir / Path(storage).name
    if here.is_file():
        return str(here)
    if Path(storage).is_file():  # a journal kept outside the run folder (--storage FILE)
        return storage
    raise UserError(f"--resume {str(run_dir)!r}: the study journal {storage!r} is missing (not in the run folder "
                    f"either): nothing to resume from")


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
    w = Worker(st, study, r, _space_from(meta["space"]), run_dir, device, meta["prune"])
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


def _lead(run_dir: Path, recipe: Recipe, space: dict[str, Dist], storage, settings: dict, prune: str, device: str,
          jobs: int, quiet: bool) -> SearchResult:
    """Run the slots (here, or in `jobs` worker processes), wait for every slot, then select, test and report.

    Ctrl-C writes summary.json with status "interrupted" and the --resume command, then raises Interrupted."""
    import optuna

    t0 = time.perf_counter()
    name = settings["study"]
    w = Worker(storage, name, recipe, space, run_dir, device, prune)
    total = recipe["search.trials"] + recipe["search.fine_trials"]
    progress = SearchProgress(total, _monitor(recipe), quiet)
    kept = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    progress.start_from(trial_rows(kept, space, recipe.task))  # a resumed search: its finished trials, one line

    def record(trials: list) -> None:
        rows = trial_rows(trials, space, recipe.task)
        _write_trials_csv(run_dir, rows)
        progress.update(rows)

    try:
        return _run_and_finish(w, run_dir, storage, settings, device, jobs, record, progress, t0)
    except KeyboardInterrupt:
        from optuna.trial import TrialState

        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        study_id = storage.get_study_id_from_name(name)
        for t in trials:  # the trial cut short here is queued again now, so a resume (even in this process) reruns it
            if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == os.getpid() and \
                    t.user_attrs.get("host") == HOST:
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


def _run_and_finish(w: Worker, run_dir: Path, storage, settings: dict, device: str, jobs: int,
                    record: Callable[[list], None], progress: SearchProgress, t0: float) -> SearchResult:
    import multiprocessing

    import optuna

    name = settings["study"]
    try:
        if jobs > 1:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            ctx = multiprocessing.get_context("spawn")  # no fork after torch and the storage are loaded
            procs = [ctx.Process(target=_child, args=(settings["storage"], name, str(run_dir), device,
                                                      max(1, cores // jobs), os.getpid()), daemon=True)
                     for _ in range(jobs)]
            for p in procs:
                p.start()
            study = optuna.load_study(study_name=name, storage=storage)
            while any(p.is_alive() for p in procs):
                record(study.get_trials(deepcopy=False))
                time.sleep(1.0)
            for p in procs:
                p.join()
        work(w, on_trial=record)  # jobs = 1: everything; jobs > 1: whatever a crashed process left behind
        study = optuna.load_study(study_name=name, storage=storage)
        record(study.get_trials(deepcopy=False))
    finally:
        progress.close()
    return _finish(w, study, settings, t0)


# ---------------------------------------------------------------------------------------------------- the result

def _snapshot(w: Worker, frozen, data):
    """The trial's restored best model: its model.pt when it ran here, else retrained (same seed, same weights)."""
    import torch

    from .models import build_model
    from .train import train_in

    stage = frozen.user_attrs["stage"]
    recipe = w.stage_recipe(w.params_of(frozen), stage)
    folder = w.run_dir / "trials" / str(frozen.number)
    ran_here = frozen.user_attrs.get("host") == HOST and Path(frozen.user_attrs.get("run_dir", "")).resolve() \
        == w.run_dir.resolve()
    if not (ran_here and (folder / "model.pt").is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        train_in(folder, recipe, w.data_for(recipe), seed=recipe["seed"])
    model = build_model(recipe, data, seed=recipe["seed"]).to(w.device)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=w.device, weights_only=True))
    return model, recipe, folder


def _test(model, recipe: Recipe, data) -> dict[str, float]:
    from .loop import evaluate, loss_function

    if not len(data.x_test):
        return {}
    tr = recipe.section("train")
    return evaluate(model, data.x_test, data.y_test, recipe.task, loss_function(recipe.task, tr),
                    tr["eval_batch_size"])


def _ensemble_test(models: list, recipe: Recipe, data) -> dict[str, float]:
    """Average the members' predicted probabilities (regression: predictions), then score (lecture 003)."""
    import torch

    from .loop import loss_function, predict_proba

    if not len(data.x_test):
        return {}
    if recipe.task == "classification":
        p = torch.stack([predict_proba(m, data.x_test) for m in models]).mean(0)
        loss = torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), data.y_test)
        return {"loss": float(loss), "acc": float((p.argmax(1) == data.y_test).sum()) / len(data.y_test)}  # exact
    with torch.no_grad():
        out = torch.stack([m.eval()(data.x_test).squeeze(-1) for m in models]).mean(0)
    return {"loss": float(loss_function(recipe.task, recipe.section("train"))(out, data.y_test))}


def _finish(w: Worker, study, settings: dict, t0: float) -> SearchResult:
    """Select the best fine trial's snapshot, test it once (with --seeds and --ensemble), write the report."""
    import shutil
    import statistics

    from .data import load_data
    from .train import train_in

    recipe, space, run_dir = w.recipe, w.space, w.run_dir
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials, space, recipe.task)
    _write_trials_csv(run_dir, rows)
    for t in trials:  # trials/<n>/metrics.csv for trials that ran on another machine, from the study's record
        folder = run_dir / "trials" / str(t.number)
        if t.user_attrs.get("history") and not (folder / "metrics.csv").is_file():
            import pandas as pd

            folder.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(t.user_attrs["history"]).to_csv(folder / "metrics.csv", index=False)
    direction, monitor = _direction(recipe), _monitor(recipe)
    coarse, fine = ranked(trials, direction, "coarse"), ranked(trials, direction, "fine")
    notes = edge_warnings(space, w.params_of(coarse[0])) if coarse else []
    if recipe["search.fine_trials"] and not fine:
        notes.append("no fine trial completed: the selected model is the best coarse trial")
    if fine and coarse:
        c, f = coarse[0].value, fine[0].value
        if (c < f) if direction == "minimize" else (c > f):
            notes.append(f"coarse trial {coarse[0].number} reached a better {monitor} ({c:.4g}) than every fine "
                         f"trial (the selected {fine[0].number}: {f:.4g}); the fine stage is meant to improve on "
                         f"it: compare the curves in search_curves.png (too few fine_epochs, or a fine range "
                         f"narrowed away from it)")
    if settings.get("ensemble", 1) > len(coarse) + len(fine):
        notes.append(f"--ensemble {settings['ensemble']}: only {len(coarse) + len(fine)} trials completed, the "
                     f"ensemble uses them all")
    skipped = sum(r["state"] == "skipped" for r in rows)
    if skipped:
        notes.append(f"{skipped} slots skipped: the budget's time was up (the trials took longer than planned, "
                     f"e.g. on a busier machine); a larger --budget runs them")
    counts = {s: sum(r["state"] == s and not r["retried"] for r in rows)
              for s in ("complete", "pruned", "diverged", "failed", "skipped")}
    counts["retried"] = sum(bool(r["retried"]) for r in rows)  # failed, then queued again: not counted above
    summary: dict[str, Any] = {
        "name": recipe.name, "command": "search", "study": settings["study"],
        "storage": _redact(settings["storage"]), "monitor": monitor, "direction": direction,
        "space": {k: d.describe() for k, d in space.items()}, "trials": counts,
        "requested": {"coarse": recipe["search.trials"], "fine": recipe["search.fine_trials"]},
        "budget_s": settings.get("budget_s"),
    }
    if coarse and recipe["search.fine_trials"]:
        summary["fine_space"] = {k: d.describe() for k, d in w.fine_space(study).items()}
    best = (fine or coarse)[:1]
    if not best:
        summary.update(status="failed", reason="no trial completed (every one diverged, was pruned or failed): "
                       "see trials.csv; lower the LR range", warnings=notes, seconds=time.perf_counter() - t0,
                       finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(run_dir / "summary.json", summary)
        return SearchResult(run_dir, summary, rows, notes)

    data = load_data(recipe, w.device)  # now with the test split, used only below
    sel = best[0]
    model, sel_recipe, folder = _snapshot(w, sel, data)
    replace_file(run_dir / "model.pt", lambda tmp: shutil.copyfile(folder / "model.pt", tmp))  # atomic, synced
    test = _test(model, sel_recipe, data)
    params = w.params_of(sel)
    summary.update({
        "status": "completed", "reason": f"selected trial {sel.number} ({sel.user_attrs['stage']}), the best "
        f"{monitor} of {len(fine) if fine else len(coarse)} complete {'fine' if fine else 'coarse'} trials",
        "selected_trial": sel.number, "selected_stage": sel.user_attrs["stage"], "best_params": params,
        "best_epoch": sel.user_attrs.get("best_epoch"),
        **{k: sel.user_attrs.get(k) for k in ("best_val_loss", "best_val_acc") if k in sel.user_attrs},
        **{f"test_{k}": v for k, v in test.items()},
    })
    if settings.get("ensemble", 1) > 1:
        members = (fine + coarse)[:settings["ensemble"]]  # fine first: they trained longer
        models = [model] + [_snapshot(w, t, data)[0] for t in members[1:]]
        ens = _ensemble_test(models, sel_recipe, data)
        summary["ensemble"] = {"k": len(members), "trials": [t.number for t in members],
                               **{f"test_{k}": v for k, v in ens.items()}}
    if settings.get("seeds", 1) > 1:
        no_test = _without_test(data)
        runs = [{"seed": sel_recipe["seed"], f"best_{monitor}": sel.user_attrs.get(f"best_{monitor}"),
                 **{f"test_{k}": v for k, v in test.items()}}]
        for s in range(sel_recipe["seed"] + 1, sel_recipe["seed"] + settings["seeds"]):
            (run_dir / "seeds" / str(s)).mkdir(parents=True, exist_ok=True)
            res = train_in(run_dir / "seeds" / str(s), sel_recipe, no_test, seed=s)
            m, _, _ = _snapshot_from(res.run_dir, sel_recipe, data, w.device, s)
            runs.append({"seed": s, f"best_{monitor}": res.summary.get(f"best_{monitor}"),
                         **{f"test_{k}": v for k, v in _test(m, sel_recipe, data).items()}})
        spread = {}
        for key in runs[0]:
            vals = [r[key] for r in runs if key != "seed" and r.get(key) is not None]
            if len(vals) == len(runs):
                spread[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals)}
        summary["seeds"] = {"runs": runs, **spread}
    summary.update(warnings=notes, seconds=time.perf_counter() - t0, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_json(run_dir / "summary.json", summary)
    plot_params(run_dir / "search_params.png", rows, space, monitor)
    plot_curves(run_dir / "search_curves.png", run_dir, rows, monitor, sel.number)
    return SearchResult(run_dir, summary, rows, notes)


def _snapshot_from(folder: Path, recipe: Recipe, data, device: str, seed: int):
    import torch

    from .models import build_model

    model = build_model(recipe, data, seed=seed).to(device)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    return model, recipe, folder


# ---------------------------------------------------------------------------------------------------- plots

def plot_params(path: Path, rows: list[dict], space: dict[str, Dist], monitor: str) -> None:
    """The lectures' random-search picture: best validation metric against each parameter, log axes for log ranges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = f"best_{monitor}"
    keys = list(space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        d = space[key]
        for stage, marker, colour in (("coarse", "o", "tab:blue"), ("fine", "^", "tab:orange")):
            pts = [(r[key], r[col]) for r in rows if r["stage"] == stage and r["state"] in ("complete", "pruned")
                   and r.get(col) is not None and r[key] is not None]
            if d.kind == "choice":
                labels = [str(c) for c in d.choices]
                pts = [(labels.index(str(x)), y) for x, y in pts if str(x) in labels]
                ax.set_xticks(range(len(labels)), labels)
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=colour, label=stage, alpha=0.8)
        if d.log:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path: Path, run_dir: Path, rows: list[dict], monitor: str, selected: int) -> None:
    """Every trial's validation curve on one plot (lecture 003, step 6); the selected trial in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        csv = run_dir / "trials" / str(r["number"]) / "metrics.csv"
        if not csv.is_file():
            continue
        m = pd.read_csv(csv)
        if monitor not in m or m.empty:
            continue
        style = {"color": "black", "lw": 2.2, "zorder": 3} if r["number"] == selected else \
            {"color": "tab:orange" if r["stage"] == "fine" else "tab:blue", "lw": 0.9, "alpha": 0.5}
        ax.plot(m["epoch"], m[monitor], **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel(monitor)
    if monitor == "val_loss":
        ax.set_yscale("log")
    ax.set_title("validation curves: coarse (blue), fine (orange), selected (black)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
