"""meta_rl.perf: mallopt really changes where glibc puts large blocks; thread settings stick."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from meta_rl import perf

# Counts glibc's mmapped chunks (mallinfo2().hblks) around a 64 MiB malloc/free, before and after
# tune_malloc, in a fresh interpreter so the test process's allocator is left alone.
_PROBE = textwrap.dedent(
    """
    import ctypes
    from meta_rl.perf import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def probe():
        before = libc.mallinfo2()
        block = libc.malloc(64 << 20)
        during = libc.mallinfo2()
        libc.free(block)
        after = libc.mallinfo2()
        return during.hblks - before.hblks, (after.arena - during.arena) >> 20

    default = probe()
    ok = tune_malloc()
    print(default[0], default[1], int(ok), *probe())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_malloc_keeps_large_blocks_on_the_heap():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    mmapped_default, _, ok, mmapped_tuned, arena_change_on_free = map(int, out)
    assert mmapped_default == 1  # glibc default: a 64 MiB block is its own mmap
    assert ok == 1
    assert mmapped_tuned == 0  # tuned: it comes from the heap...
    assert arena_change_on_free == 0  # ...and freeing it does not trim the heap


def test_tune_malloc_off_glibc_is_a_noop(monkeypatch):
    monkeypatch.setattr(perf, "_libc", lambda: None)
    assert perf.tune_malloc() is False


def test_configure_learner_and_worker_set_thread_counts(monkeypatch):
    monkeypatch.setattr(perf, "tune_malloc", lambda settings=None: True)
    before = torch.get_num_threads()
    try:
        assert perf.configure_learner(3) == 3
        assert torch.get_num_threads() == 3
        assert perf.configure_learner() == perf.cpu_count() == torch.get_num_threads()
        perf.configure_worker()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
