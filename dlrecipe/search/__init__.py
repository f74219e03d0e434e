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

A worker claims up to `search.population` slots at once and trains those that share an architecture and a batch
size as one fused model (population.py, on fused.py's layers and optimizer); the others one at a time.

The parts, one module each: space.py (the space and its narrowing), storage.py (journal or database, slots,
heartbeats, retries), workers.py (claiming and running slots), population.py and fused.py (many trials as one
model), select.py (trials.csv, the selected model tested once, summary.json), plots.py (the figures), terminal.py
(progress and leaderboard), jobs.py (--jobs: more worker processes when the work left pays for their start-up) and
leader.py (the search, resume and join commands; the leader is a worker too).
"""
from __future__ import annotations

from .leader import PRUNERS, check_options, join, resume, search
from .plots import plot_curves, plot_params
from .select import SearchResult, trial_rows
from .space import (DATA_KEYS, DEFAULT_WEIGHT_DECAYS, KINDS, NOT_SEARCHABLE, Dist, edge_warnings, narrow,
                    parse_dist, parse_space, read_lr_find)
from .storage import open_storage
from .terminal import SearchProgress, leaderboard, short_names
from .workers import Worker, _cannot_finish_in_time, ranked, work  # noqa: F401 - tests use _cannot_finish_in_time

__all__ = ["DATA_KEYS", "DEFAULT_WEIGHT_DECAYS", "KINDS", "NOT_SEARCHABLE", "PRUNERS", "Dist", "SearchProgress",
           "SearchResult", "Worker", "check_options", "edge_warnings", "join", "leaderboard", "narrow", "open_storage",
           "parse_dist", "parse_space", "plot_curves", "plot_params", "ranked", "read_lr_find", "resume", "search",
           "short_names", "trial_rows", "work"]
