"""Run directories: where a run may be written, and whether a run may be resumed.

Every check here runs before anything is written, so a refused command leaves the disk as it
was: a new run never lands in a directory that holds another run (unless ``overwrite``, which
empties it first), and a resumed run must have the config its checkpoint was trained with,
apart from the keys that change how long or how fast it runs (``RESUMABLE_KEYS``); and not
even its length where a setting left null follows it (Reptile's eps schedule).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta_rl.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    find_latest,
    load_checkpoint,
    newest_loadable,
)
from meta_rl.config import Config, ConfigError, config_to_dict, save_config

CONFIG_NAME = "config.yaml"
RESUMABLE_KEYS = (
    "train.iterations",
    "train.device",
    "train.num_threads",
    "train.sampler",  # the backends give the same episodes for the same seed (tested)
    "train.num_workers",
    "train.checkpoint_every",
)
"""Config keys a resume may change: run length, device and speed settings, never the maths."""
CHECKPOINT_KEYS = ("iteration", "env_steps", "trainer", "logger")
_RUN_FILES = (CONFIG_NAME, "progress.csv", CHECKPOINT_DIR)


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked; `str(err)` is one line."""


class RecordError(OSError):
    """An iteration whose files could not be written (a full disk); nothing of it was kept."""

    def __init__(self, iteration: int, cause: OSError) -> None:
        target = f"{cause.filename}: " if cause.filename else ""
        super().__init__(
            cause.errno,
            f"iteration {iteration} was not recorded: cannot write {target}"
            f"{cause.strerror or cause}",
        )
        self.iteration = iteration

    def __str__(self) -> str:
        return str(self.strerror)


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds (part of) a run: its config, CSV, checkpoints or TensorBoard."""
    if not path.is_dir():
        return False
    if any((path / name).exists() for name in _RUN_FILES):
        return True
    return any(path.glob("events.out.tfevents.*"))


def check_task_family(env_id: str) -> None:
    """A ``ConfigError`` unless ``env_id`` names a task family (a ``TaskEnv`` subclass).

    Loads the entry point (imports its module) but builds nothing. An entry point that is a
    function rather than a class cannot be judged here; the trainer checks what it built.
    """
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    from meta_rl.envs import TaskEnv

    spec = gymnasium.spec(env_id.rpartition(":")[2])
    creator = spec.entry_point
    if isinstance(creator, str):
        try:
            creator = load_env_creator(creator)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"env.id: cannot load {spec.entry_point}: {exc}") from None
    if isinstance(creator, type) and not issubclass(creator, TaskEnv):
        raise ConfigError(
            f"env.id: '{env_id}' is not a task family: {creator.__name__} does not subclass "
            "meta_rl.envs.TaskEnv (`meta-rl envs` lists the families)"
        )


@dataclass
class RunPlan:
    """What a train command will do, decided before anything is written."""

    run_dir: Path
    total: int  # train.iterations: the run's total, resumed or not
    overwrite: bool = False
    checkpoint: Path | None = None  # resume: the checkpoint file
    state: dict[str, Any] | None = None  # resume: its contents

    @property
    def done(self) -> int:
        """Iterations already recorded (0 for a new run)."""
        return 0 if self.state is None else int(self.state["iteration"]) + 1

    @property
    def nothing_to_do(self) -> bool:
        return self.state is not None and self.done >= self.total

    def create(self, config: Config) -> None:
        """Empty the directory if overwriting, create it, write the resolved config.yaml."""
        if self.overwrite and self.run_dir.is_dir():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / CONFIG_NAME)


def plan_run(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint: Path | None = None,
    map_location: Any = "cpu",
) -> RunPlan:
    """Check that ``run_dir`` can take this run; raises RunDirError, CheckpointError or
    ConfigError (one line each) and writes nothing."""
    check_task_family(config.env.id)
    total = config.train.iterations
    if not resume:
        _check_new_run_dir(run_dir, overwrite)
        return RunPlan(run_dir, total, overwrite=overwrite)
    path, state = load_resume_checkpoint(run_dir, checkpoint, map_location)
    stored = state.get("config")
    if stored is None:  # a checkpoint from before checkpoints carried their config
        from meta_rl.config import load_config

        stored = config_to_dict(load_config(run_dir / CONFIG_NAME))
    changed = [
        f"{key} {old!r} -> {new!r}"
        for key, old, new in _differences(stored, config_to_dict(config))
        if key not in RESUMABLE_KEYS
    ]
    if changed:
        raise RunDirError(
            f"{run_dir}: cannot resume with a different config: {'; '.join(changed)} "
            f"(a resume may change only {', '.join(RESUMABLE_KEYS)})"
        )
    follower = config.algo.follows_run_length()
    started_with = stored["train"]["iterations"]
    if follower is not None and started_with != total:
        raise RunDirError(
            f"{run_dir}: cannot resume with train.iterations {started_with} -> {total}: "
            f"algo.{follower} is null, so it is train.iterations, and the iterations already "
            f"run followed a schedule of {started_with} (start a new run, or set "
            f"algo.{follower} when starting one)"
        )
    return RunPlan(run_dir, total, checkpoint=path, state=state)


def _check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    if holds_run(run_dir):
        if not overwrite:
            raise RunDirError(
                f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                "or start over with --overwrite (deletes everything in it)"
            )
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir} is not empty and holds no run: choose another --run-dir")


def load_resume_checkpoint(
    run_dir: Path, checkpoint: Path | None = None, map_location: Any = "cpu"
) -> tuple[Path, dict[str, Any]]:
    """(path, state) of the checkpoint to resume from: ``checkpoint`` or the run's latest.

    When latest.pt cannot be used, the error names the newest numbered checkpoint that loads
    (the explicit fallback is ``--from-checkpoint``); nothing is picked silently.
    """
    path = _checkpoint_path(run_dir, checkpoint) if checkpoint else find_latest(run_dir)
    if path is None:
        raise RunDirError(f"{run_dir}: no checkpoint to resume from")
    try:
        state = load_checkpoint(path, map_location=map_location)
        missing = [key for key in CHECKPOINT_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"{path}: not a meta-rl training checkpoint (no {missing[0]!r})")
    except CheckpointError as exc:
        if checkpoint is not None:
            raise
        fallback = newest_loadable(run_dir, skip=path)
        offer = (
            f"; {fallback} loads: resume from it with --from-checkpoint {fallback.name}"
            if fallback is not None
            else "; no other checkpoint of the run loads"
        )
        raise CheckpointError(f"{exc}{offer}") from None
    return path, state


def _checkpoint_path(run_dir: Path, checkpoint: Path) -> Path:
    """A path as given, or a bare name inside the run's checkpoints/ folder."""
    if checkpoint.is_file() or checkpoint.parent != Path("."):
        path = checkpoint
    else:
        path = run_dir / CHECKPOINT_DIR / checkpoint
    if not path.is_file():
        raise RunDirError(f"{path}: no such checkpoint")
    return path


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs between two config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in [*old, *(k for k in new if k not in old)]:
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]
