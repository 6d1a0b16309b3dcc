"""Crash-safe checkpoints: atomic writes, and loads that never unpickle arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (numpy Generator
`bit_generator.state` dicts included: their 128-bit Python ints load fine with
`weights_only=True`). Writing goes to a hidden temp file in the same directory, is fsynced and
then renamed over the target, so a crash at any point leaves either the old or the new file,
never a torn one.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
_ITER_RE = re.compile(r"iter_(\d+)\.pt")
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that is not a weights-only dict."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write `state` to `path` (temp file in the same dir, fsync, os.replace)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write(Path(path), buffer.getbuffer())


def _atomic_write(path: Path, payload: bytes | memoryview) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc  # the target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint dict with `weights_only=True`; anything else is a CheckpointError.

    The error is one line naming the file and why: it cannot be read (OS error), it is
    truncated or corrupt, or it carries pickled code (a class or function to call), which is
    refused and never executed.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except pickle.UnpicklingError as exc:
        code = _GLOBAL_RE.search(str(exc))
        if code is None:
            raise CheckpointError(f"{path}: {_corrupt(path, exc)}") from None
        raise CheckpointError(
            f"{path}: refused: the file carries code ({code.group(1)}) and was not loaded"
        ) from None
    except Exception as exc:  # torch raises many types on a torn archive
        raise CheckpointError(f"{path}: {_corrupt(path, exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(state).__name__}")
    return state


# torch names the callable a pickle wanted to load: "GLOBAL posix.system" / "GLOBAL __main__.X"
_GLOBAL_RE = re.compile(r"GLOBAL (\S+?)[.:,]?(?:\s|$)")


def _corrupt(path: Path, exc: BaseException) -> str:
    """'truncated or corrupt (...)': the size, and torch's first sentence when it has one."""
    size = path.stat().st_size if path.is_file() else 0
    if not zipfile.is_zipfile(path):
        return f"truncated or corrupt ({size:,} bytes, not a torch checkpoint archive)"
    reason = str(exc).split(". ")[0].strip().rstrip(".") or type(exc).__name__
    return f"truncated or corrupt ({size:,} bytes: {reason})"


class CheckpointManager:
    """Writes `run_dir/checkpoints/latest.pt` every call and `iter_{i:06d}.pt` every `every`."""

    def __init__(self, run_dir: str | Path, every: int) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        self.every = every

    def save(self, iteration: int, state: dict[str, Any]) -> Path:
        """Write the numbered copy when due, then latest.pt; returns the latest.pt path.

        latest.pt is the commit point: if writing it fails, the numbered copy just written is
        removed again, so the newest files never disagree about how far the run got.
        """
        buffer = io.BytesIO()
        torch.save(state, buffer)  # serialise once, write up to twice
        numbered = None
        if self.every and iteration % self.every == 0:
            numbered = self.directory / f"iter_{iteration:06d}.pt"
            _atomic_write(numbered, buffer.getbuffer())
        latest = self.directory / LATEST
        try:
            _atomic_write(latest, buffer.getbuffer())
        except BaseException:
            if numbered is not None:
                numbered.unlink(missing_ok=True)
            raise
        return latest


def numbered_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every `iter_NNNNNN.pt` of the run, newest first.

    Only that exact name counts, so temp files left by a killed writer are never picked.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    found = [
        (int(m.group(1)), p)
        for p in directory.glob("iter_*.pt")
        if (m := _ITER_RE.fullmatch(p.name)) and p.is_file()
    ]
    return sorted(found, reverse=True)


def find_latest(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: latest.pt, else the highest iter_*.pt, else None."""
    latest = Path(run_dir) / CHECKPOINT_DIR / LATEST
    if latest.is_file():
        return latest
    numbered = numbered_checkpoints(run_dir)
    return numbered[0][1] if numbered else None


def newest_loadable(run_dir: str | Path, skip: Path | None = None) -> Path | None:
    """The newest numbered checkpoint other than `skip` that loads, or None (a fallback)."""
    for _, path in numbered_checkpoints(run_dir):
        if skip is not None and path.resolve() == skip.resolve():
            continue
        try:
            load_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None
