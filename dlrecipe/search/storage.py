"""Where a study lives (a journal file or a database) and how workers share it: queued slots, heartbeats, retries.

A trial whose worker died (a dead process on this machine, or a silent heartbeat on a database) is failed and queued
again with the same parameters; a retried trial counts once in the results.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
import warnings
from pathlib import Path

from ..display import err
from ..errors import UserError
from ..recipe import Recipe, _suggest, validate


HEARTBEAT_S = 10         # database workers record a heartbeat this often ...
GRACE_S = 60             # ... and a trial silent this long is failed and queued again
JOIN_WAIT_S = 120        # a --worker waits this long for the study to be created
POLL_S = 0.5             # how often an idle worker looks at a database study (a query on the server) ...
LOCAL_POLL_S = 0.1       # ... and at a journal file (reads only the lines appended since)

HOST = socket.gethostname()

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


def set_user_attrs(storage, trial_id: int, attrs: dict) -> None:
    """Several user attributes of one trial. On a journal file: one locked, fsync'ed append for all of them (Optuna
    writes one per attribute: ~5 ms each, most of a small fused trial's time); elsewhere one call each."""
    import optuna

    journal = isinstance(storage, optuna.storages.JournalStorage) and all(
        hasattr(storage, a) for a in ("_backend", "_thread_lock", "_replay_result", "_sync_with_backend"))
    if not journal or not attrs:
        for k, v in attrs.items():
            storage.set_trial_user_attr(trial_id, k, v)
        return
    from optuna.storages.journal._storage import JournalOperation

    with storage._thread_lock:  # what JournalStorage.set_trial_user_attr writes, one log line per attribute
        worker = storage._replay_result.worker_id
        storage._backend.append_logs([{"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker,
                                       "trial_id": trial_id, "user_attr": {k: v}} for k, v in attrs.items()])
        storage._sync_with_backend()


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

