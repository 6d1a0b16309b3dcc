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
    """Load a checkpoint dict with `weights_only=True`; anything else is a CheckpointError."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = f" (contains {culprit.group(1)})" if culprit else ""
        raise CheckpointError(f"{path}: refused: not a weights-only checkpoint{why}") from exc
    except (RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(state).__name__}")
    return state


class CheckpointManager:
    """Writes `run_dir/checkpoints/latest.pt` every call and `iter_{i:06d}.pt` every `every`."""

    def __init__(self, run_dir: str | Path, every: int) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        self.every = every

    def save(self, iteration: int, state: dict[str, Any]) -> Path:
        """Write latest.pt (and a numbered copy when due); returns the latest.pt path."""
        buffer = io.BytesIO()
        torch.save(state, buffer)  # serialise once, write up to twice
        if self.every and iteration % self.every == 0:
            _atomic_write(self.directory / f"iter_{iteration:06d}.pt", buffer.getbuffer())
        latest = self.directory / LATEST
        _atomic_write(latest, buffer.getbuffer())
        return latest


def find_latest(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: latest.pt, else the highest iter_*.pt, else None.

    Only those exact names count, so temp files left by a killed writer are never picked.
    """
    directory = Path(run_dir) / CHECKPOINT_DIR
    latest = directory / LATEST
    if latest.is_file():
        return latest
    numbered = [
        (int(m.group(1)), p)
        for p in directory.glob("iter_*.pt")
        if (m := _ITER_RE.fullmatch(p.name)) and p.is_file()
    ]
    return max(numbered)[1] if numbered else None
