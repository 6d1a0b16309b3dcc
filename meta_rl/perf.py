"""Process-level speed settings: glibc's allocator and torch's thread count.

Two knobs that are worth more than most code changes on a small CPU box:

* **Allocator.** The meta-update allocates and frees the same multi-megabyte temporaries a few
  hundred times per iteration. With glibc's defaults every block above the (dynamic) mmap
  threshold is an ``mmap``/``munmap`` pair and freed heap top is trimmed back to the kernel, so
  every reuse page-faults the memory in again (``benchmarks/RESULTS.md``: the page faults and
  the time they cost on a Navigation2D iteration). ``tune_malloc`` does that at run
  time through ``mallopt`` (the same effect as the ``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` environment variables, which only work
  when set before the process starts). The cost is resident memory that is kept instead of
  returned: at most about ``trim_threshold + top_pad`` of free heap.
* **Threads.** Sampler workers run tiny per-step batches: one torch thread each, otherwise the
  workers' thread pools fight for the same cores. The learner gets all cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

_MIB = 1 << 20


@dataclass(frozen=True)
class MallocSettings:
    """Values handed to glibc ``mallopt``; defaults measured on the 2D-navigation meta-update."""

    mmap_threshold: int = 256 * _MIB  # blocks below this come from the heap, not from mmap
    trim_threshold: int = 1024 * _MIB  # free heap top kept before trimming back to the kernel
    top_pad: int = 256 * _MIB  # extra heap grown per sbrk, so growth is rare


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def tune_malloc(settings: MallocSettings | None = None) -> bool:
    """Tell glibc malloc to keep large freed blocks; True when every ``mallopt`` succeeded.

    A no-op returning False off glibc (macOS, musl, Windows). Setting the mmap threshold by hand
    also turns off glibc's dynamic threshold, so behaviour no longer depends on allocation
    history. Safe to call more than once.
    """
    libc = _libc()
    if libc is None:
        return False
    s = settings or MallocSettings()
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = True
    for param, value in (
        (M_MMAP_THRESHOLD, s.mmap_threshold),
        (M_TRIM_THRESHOLD, s.trim_threshold),
        (M_TOP_PAD, s.top_pad),
    ):
        ok &= mallopt(param, value) == 1
    return ok


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_learner(num_threads: int | None = None, malloc: bool = True) -> int:
    """Learner process setup: all cores (or ``num_threads``) for torch, tuned malloc.

    Returns the thread count set. Inter-op threads are left alone: the meta-update is a chain
    of dependent ops with nothing to overlap.
    """
    import torch  # lazily: tune_malloc is useful (and tested) without torch

    threads = num_threads or cpu_count()
    torch.set_num_threads(threads)
    if malloc:
        tune_malloc()
    return threads


def configure_worker() -> None:
    """Sampler-worker setup: one torch thread (and one inter-op thread), tuned malloc."""
    import torch

    torch.set_num_threads(1)
    # raises when inter-op work already started (e.g. inherited by fork): then keep it
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    tune_malloc()
