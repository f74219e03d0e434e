"""--jobs: the leader trains slots itself and starts extra worker processes only when the work left pays for them.

A worker process is spawned (no fork after torch and the storage are loaded), so it imports torch and optuna and
loads the data before it claims anything: 2.5-4 s on 2 cores, longer than a fused coarse stage of small models
takes. So the leader, which has all of that already, is worker 1; after each population (or trial) it runs, it
estimates the work left from its own seconds per slot, and starts one more process only when that process is
expected to save at least GAIN_MARGIN start-ups (`child_pays`), and only when other programs leave it a core
(`spare_cores`, from /proc/stat: on cores that others keep busy a new process only slows everything). A process
that comes up claims what is still waiting; one still starting when the slots are done is stopped, not waited for.

--jobs N: at most N processes (the leader and N - 1 started this way); --jobs 1: the leader alone, as before.
--jobs auto (the default): at most one process per core (cores // OMP_NUM_THREADS when that is set), by the same
rule (a busy machine is the spare-core check's); 1 on a GPU (one device: a population fills it) and for models or
data passed as Python objects (they exist in this process only).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import UserError

STARTUP_GUESS_S = 3.0  # a process's start-up on an idle machine (import torch, optuna, the data: 2.5-4 s, 2 cores)
GAIN_MARGIN = 0.5      # start a process only when it should save at least this many start-ups of wall time
MIN_SPARE_CORES = 0.5  # ... and only when other programs leave at least half a core idle for it
THREAD_EFFICIENCY = 0.8  # a larger model's speed-up per thread (recipes/mnist1d_cnn.toml: 1.6x on 2 threads)


def parse_jobs(value) -> int | None:
    """--jobs / jobs=: "auto" (or None) -> None; a whole number >= 1 -> itself; else a one-line error."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        n = int(value)
        if isinstance(value, float) and n != value:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"--jobs {value!r} is not allowed: a number of worker processes (at least 1) or auto")
    if n < 1:
        raise UserError(f"--jobs {n} is not allowed: at least 1 worker process (or auto)")
    return n


def auto_workers(*, cores: int, omp_threads: int | None, device: str, local_objects: bool) -> int:
    """--jobs auto's most worker processes (the rule in the module docstring)."""
    if str(device).startswith("cuda") or local_objects:
        return 1
    return max(1, cores // max(omp_threads or 1, 1))


def startup_guess(load: float | None = None, n_cores: int | None = None) -> float:
    """A process's start-up before one is measured: STARTUP_GUESS_S, longer in proportion on a machine whose load
    average is above its cores (measured: 5.5 s at load 5 on 2 cores)."""
    from ..threads import cores, load_average

    load = load_average() if load is None else load
    return STARTUP_GUESS_S * max(1.0, (load or 0.0) / (n_cores or cores()))


def spare_cores(n_cores: int, busy_s: float, ours_s: float, interval_s: float, workers: int) -> float:
    """Cores left for one more process: the cores, less what other programs kept busy over the interval (all
    cores' busy seconds, less this search's processes' CPU seconds, over the interval) and one per process of ours
    (each trains on 1 thread once another runs)."""
    others = max(busy_s - ours_s, 0.0) / max(interval_s, 1e-9)
    return n_cores - others - workers


def _cpu_busy_s() -> float | None:
    """Seconds all cores have been busy since boot (/proc/stat; steal counts: a vCPU the host took is not ours)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float:
    """A live process's CPU seconds (/proc/<pid>/stat utime + stime; 0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def child_pays(remaining_s: float | None, workers: int, startup_s: float, speedup: float = 1.0) -> bool:
    """Whether one more process pays: `workers` processes finish the work left (remaining_s of one process's time)
    in R / w; one more, up after a start-up S, in S + (R - w S) / (w + 1): it saves (R - w S) / (w (w + 1)), which
    must be at least GAIN_MARGIN * S (covers the estimate's error and the start-up's CPU). None: nothing measured.

    speedup: how much faster the leader alone runs on its threads now than on the fewer it drops to once a second
    process starts (a larger model on 2 threads: 1.6x). Then the leader does S / s of work during the start-up and
    the two s-times-slower processes the rest: R s / 2 + S / 2 in all, a saving of R (1 - s / 2) - S / 2."""
    if remaining_s is None or workers < 1:
        return False
    if workers == 1 and speedup > 1.0:
        saved = remaining_s * (1 - speedup / 2) - startup_s / 2
    else:
        saved = (remaining_s - workers * startup_s) / (workers * (workers + 1))
    return saved >= GAIN_MARGIN * startup_s


def remaining_seconds(waiting: dict[str, int], per_slot: dict[str, float]) -> float | None:
    """One process's seconds for the waiting slots (stage -> count) of the stages it has measured (stage -> seconds
    per slot); None: none measured yet. A stage not measured yet counts nothing: fused coarse trials say little
    about fine ones trained alone (either way, by 10x), so the first fine trial is measured before it counts."""
    if not any(st in per_slot for st in waiting):
        return None
    return sum(n * per_slot[st] for st, n in waiting.items() if st in per_slot)


class Crew:
    """The leader's extra worker processes: started by `tick` when they pay, counted while they work, stopped by
    `close`. states[i] (shared): 0 starting (no storage touched yet), > 0 working since that wall time, -1 gone."""

    def __init__(self, settings: dict, run_dir: Path, device: str, most: int, recipe, input_shape: tuple[int, ...]):
        import multiprocessing

        from ..threads import macs_per_step

        self.ctx = multiprocessing.get_context("spawn")
        self.settings, self.run_dir, self.device, self.most, self.recipe = settings, run_dir, device, most, recipe
        self.states = self.ctx.Array("d", max(most - 1, 1))
        self.stop = self.ctx.Event()
        self.procs: list = []  # (process, started at: wall time)
        self.per_slot: dict[str, float] = {}
        self.startup_s = startup_guess()  # until the first process has come up: then measured
        try:
            self.macs = macs_per_step(recipe, input_shape)  # for the leader's threads once others are up
        except Exception:  # noqa: BLE001 - a model the policy cannot build: counted as large
            self.macs = float("inf")
        self._threads = None  # the leader's torch threads before any process came up (restored when alone again)
        busy = _cpu_busy_s()
        self._mark = None if busy is None else (busy, self._ours_s(), time.time())  # for _spare
        self._fitted_for = 1

    def here(self) -> int:
        """Worker processes claiming slots on this machine now: the leader and those that are up."""
        return 1 + sum(v > 0 for v in self.states[:len(self.procs)])

    def ran(self, stage: str, slots: int, seconds: float) -> None:
        """The leader ran `slots` slots of `stage` as one claim in `seconds`."""
        self.per_slot[stage] = seconds / max(slots, 1)

    def tick(self, trials: list) -> None:
        """Between the leader's claims: notice processes that came up or died, fit the leader's threads, and start
        one more process when it pays."""
        from optuna.trial import TrialState

        for i, (p, started) in enumerate(self.procs):
            v = self.states[i]
            if v > 0 and started:
                self.startup_s = max(v - started, 0.0)  # measured: later estimates use it
                self.procs[i] = (p, 0.0)
            if v >= 0 and not p.is_alive():  # is_alive reaps it: a dead pid is then seen as dead
                self.states[i] = -1
        self._fit_threads()
        starting = sum(self.states[i] == 0 for i in range(len(self.procs)))
        if len(self.procs) + 1 >= self.most or starting:
            return  # one start-up at a time: the next decision uses the work left once this one is up
        waiting: dict[str, int] = {}
        for t in trials:
            if t.state == TrialState.WAITING:
                waiting[t.user_attrs.get("stage")] = waiting.get(t.user_attrs.get("stage"), 0) + 1
        if child_pays(remaining_seconds(waiting, self.per_slot), self.here(), self.startup_s, self._speedup()) \
                and self._spare() >= MIN_SPARE_CORES:
            self._start()
            self._fit_threads()

    def _ours_s(self) -> float:
        t = os.times()
        return t.user + t.system + sum(_process_cpu_s(p.pid) for p, _ in self.procs if p.is_alive())

    def _spare(self) -> float:
        """spare_cores over the time since the last look (at least 2 s, else since the one before); without
        /proc/stat: from the load average."""
        from ..threads import cores, load_average

        busy, now = _cpu_busy_s(), time.time()
        if busy is None or self._mark is None:
            return cores() - max((load_average() or 0.0) - self.here(), 0.0) - self.here()
        busy0, ours0, t0 = self._mark
        ours = self._ours_s()
        spare = spare_cores(cores(), busy - busy0, ours - ours0, now - t0, self.here())
        if now - t0 >= 2.0:
            self._mark = (busy, ours, now)
        return spare

    def _start(self) -> None:
        from .workers import _child

        i = len(self.procs)
        p = self.ctx.Process(target=_child, args=(self.settings["storage"], self.settings["study"],
                                                  str(self.run_dir), self.device, os.getpid(), self.most,
                                                  self.states, i, self.stop), daemon=True)
        started = time.time()
        p.start()
        self.procs.append((p, started))

    def _speedup(self) -> float:
        """The leader's speed on its threads now over the threads it would drop to with one more process (a small
        model: 1, its threads gain nothing; else threads scale at THREAD_EFFICIENCY, 1.6x from a second core)."""
        import torch

        from ..threads import SMALL_MACS, threads_for

        if os.environ.get("OMP_NUM_THREADS") or self.macs < SMALL_MACS:
            return 1.0
        now, then = torch.get_num_threads(), threads_for(self.macs, jobs=self.here() + 1)
        return 1.0 if then >= now else THREAD_EFFICIENCY * now / then

    def _fit_threads(self) -> None:
        """The leader's torch threads by dlrecipe.threads' policy for the processes running now, those starting
        included: a process importing torch takes a core, and a 2-thread leader would wait at every operator for
        its descheduled thread (OMP_NUM_THREADS set: the user's, kept)."""
        n = 1 + sum(v >= 0 for v in self.states[:len(self.procs)])
        if n == self._fitted_for or os.environ.get("OMP_NUM_THREADS"):
            return
        import torch

        from ..threads import threads_for

        if self._threads is None:
            self._threads = torch.get_num_threads()
        torch.set_num_threads(self._threads if n == 1 else min(self._threads, threads_for(self.macs, jobs=n)))
        self._fitted_for = n

    def started(self) -> int:
        return len(self.procs)

    def release(self) -> None:
        """Nothing is left to claim (or the leader was interrupted): tell every process to stop, terminate those
        still starting (they have touched nothing), and give the leader back its threads. Those up stop at their
        next look; `close` reaps them later, so the leader does not wait for a process with nothing to do."""
        self.stop.set()
        for i, (p, _) in enumerate(self.procs):
            with self.states.get_lock():  # a process comes up under this lock only if stop is not set yet
                starting = self.states[i] == 0
            if starting:
                p.terminate()
        if self._threads is not None:
            import torch

            torch.set_num_threads(self._threads)

    def close(self, wait_s: float = 30.0) -> None:
        """release, then reap every process: one still in a claim (after Ctrl-C) gets until wait_s, then is
        terminated."""
        self.release()
        deadline = time.time() + wait_s
        for p, _ in self.procs:
            p.join(max(deadline - time.time(), 0.1))
            if p.is_alive():
                p.terminate()
                p.join(5)
