"""glibc's malloc for training: a step's large tensors reuse the heap instead of fresh pages from the kernel.

PyTorch's CPU tensors come from malloc. glibc serves a request above its mmap threshold (128 KiB at start, then
the largest block freed so far, up to 32 MiB) with fresh pages from the kernel, and hands the top of its heap back
once more than its trim threshold (twice the mmap threshold) of it is free. A training step allocates and frees the
same few megabytes of activations and gradients every step, so with glibc's defaults many steps pay again for the
page faults that zero-fill them: a fused CNN population (recipes/mnist1d_cnn.toml, 8 members, 1 thread) took 46-56
ms per step, and 36-41 ms with a fixed mmap threshold of MMAP_THRESHOLD and a trim threshold of TRIM_THRESHOLD
(the same step alone, batch tensors 8x smaller, did not change). PyTorch's CPU tuning guide gets there by another
allocator (jemalloc or tcmalloc through LD_PRELOAD); `configure` does it inside glibc, with mallopt(3).

The cost: the process keeps up to TRIM_THRESHOLD of freed memory per malloc arena (more where the heap is
fragmented) for reuse instead of returning it; the settings are process-wide, so a notebook that trains keeps them.
Left alone: another C library (not glibc), DLRECIPE_MALLOC=system, and settings the user chose (GLIBC_TUNABLES
naming glibc.malloc, one of GLIBC_VARIABLES, or an allocator library in LD_PRELOAD).
"""
from __future__ import annotations

import os

MMAP_THRESHOLD = 32 << 20   # bytes: requests up to this come from the heap (glibc's own ceiling on 64-bit)
TRIM_THRESHOLD = 64 << 20   # bytes of free heap top kept before it is returned (glibc's ratio: 2x the mmap one)
# glibc's environment variables for what configure sets (its arena and debugging ones do not conflict)
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc", "snmalloc", "hoard")  # libraries that replace malloc itself
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_DONE: list[bool] = []  # configure's result, once per process


def user_choice() -> str | None:
    """What says the user has chosen the allocator (None: nothing does)."""
    if os.environ.get("DLRECIPE_MALLOC", "").strip().lower() == "system":
        return "DLRECIPE_MALLOC=system"
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    named = [k for k in GLIBC_VARIABLES if k in os.environ]
    if named:
        return named[0]
    if any(name in os.environ.get("LD_PRELOAD", "").lower() for name in ALLOCATORS):
        return "LD_PRELOAD"
    return None


def configure() -> bool:
    """Set glibc's thresholds once per process (module docstring); True when they are set now or were before."""
    if _DONE:
        return _DONE[0]
    ok = False
    if user_choice() is None:
        import platform

        if platform.libc_ver()[0] == "glibc":
            import ctypes

            try:  # the mmap threshold first: a fixed trim threshold alone would make every large request mmap
                libc = ctypes.CDLL(None)
                ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                    bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):
                ok = False
    _DONE.append(ok)
    return ok
