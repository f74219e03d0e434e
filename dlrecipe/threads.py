"""CPU threads for training: one policy, applied where every command starts (cli._load) and in search workers.

torch's default is one intra-op thread per core. Its OpenMP threads wait for each other at every operator, so for
a small model (a few million multiply-adds per step) a second thread costs about as much as it gains on an idle
machine, and when another process takes a core every operator waits for the descheduled thread: 3-4x slower
(bench/threads.py, README "Threads"). The policy:

- a small model (under SMALL_MACS multiply-adds per training step): 1 thread, so that --jobs N runs N trials on N
  cores instead of N processes fighting over threads;
- a larger model (a CNN like recipes/mnist1d_cnn.toml gains 1.6x from a second core): cores / jobs threads;
- a busy machine (1-minute load average above the cores this process may use): 1 thread whatever the model, and
  a warning, because a multi-threaded small-operator workload slows down severalfold there.

OMP_NUM_THREADS, when set, is the user's choice and is kept. `configure` also sets glibc's malloc thresholds
(dlrecipe.allocator), the other CPU setting a training process needs.
"""
from __future__ import annotations

import os

SMALL_MACS = 2e7  # multiply-adds per training step (forward) under which one thread is as fast as two (2 cores)


def cores() -> int:
    """CPU cores this process may use (its affinity mask, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(n_cores: int | None = None, load: float | None = None) -> str | None:
    """A warning when other processes keep the cores busy (load average above the cores), else None."""
    n_cores = n_cores or cores()
    load = load_average() if load is None else load
    if load is None or load <= n_cores:
        return None
    return (f"the machine is busy (load average {load:.1f} on {n_cores} cores): training runs with 1 torch thread "
            f"per process, and timings (search --budget, benchmarks) will be slower and noisier than on an idle "
            f"machine")


def macs_per_step(recipe, input_shape: tuple[int, ...]) -> float:
    """Multiply-adds of one forward pass over a training batch of the recipe's model (Linear and conv layers,
    wherever they sit in the module: a python factory's model is built and counted the same way; one that cannot
    be built or run on this input shape raises, and configure then leaves torch's threads alone)."""
    import torch

    from .models import MODEL_KINDS

    cfg = {**recipe.section("model"), "_recipe_path": recipe.path}  # a factory is looked for beside the recipe
    torch.manual_seed(0)
    model = MODEL_KINDS[cfg["kind"]].build(input_shape, 10, cfg)
    total = [0.0]

    def count(m, inputs, out):
        if isinstance(m, torch.nn.Linear):
            total[0] += m.in_features * m.out_features
        elif isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            total[0] += m.weight[0].numel() * out[0].numel()  # per output element: in/groups * kernel
    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return total[0] * recipe["data.batch_size"]


def threads_for(macs: float, *, jobs: int = 1, n_cores: int | None = None, busy: bool = False) -> int:
    """The policy above: torch threads for one training process."""
    n_cores = n_cores or cores()
    if busy or macs < SMALL_MACS:
        return 1
    return max(1, n_cores // max(jobs, 1))


def configure(recipe, input_shape: tuple[int, ...] | None = None, *, jobs: int = 1, say=None) -> int | None:
    """Set torch's threads for training `recipe` in this process (None: OMP_NUM_THREADS is set, left alone).

    input_shape: the data's example shape when known (else the recipe's data.shape, else a small guess, which
    only errs towards one thread). say(message): where the busy-machine warning goes."""
    import torch

    from .allocator import configure as configure_allocator

    configure_allocator()  # glibc's malloc keeps a step's tensors for reuse (dlrecipe.allocator)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    warning = busy_warning()
    if warning and say is not None:
        say(warning)
    shape = tuple(input_shape or recipe["data.shape"] or ((1, 64) if recipe["model.kind"] == "cnn" else (64,)))
    try:
        macs = macs_per_step(recipe, shape)
    except Exception:  # noqa: BLE001 - a model that cannot be built here fails later with its own message
        return None
    n = threads_for(macs, jobs=jobs, busy=warning is not None)
    torch.set_num_threads(n)
    return n
