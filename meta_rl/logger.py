"""One metric sink for the trainer: TensorBoard plus `progress.csv`, SB3-style record/dump.

Two x-axes. Every scalar goes to the run directory's TensorBoard file under its own tag
(`return/pre_adapt`) with step = iteration, and to a second writer in `run_dir/env_steps/` under
`env_steps/<tag>` with step = environment steps. A second writer, rather than a tag prefix in
the same file, is what keeps resume clean: each writer purges its own stale events with its
own `purge_step`, and those steps live on different scales.
"""

from __future__ import annotations

import csv
import io
import numbers
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from torch.utils.tensorboard import SummaryWriter

CSV_NAME = "progress.csv"
ENV_STEPS_DIR = "env_steps"
BASE_COLUMNS = ("iteration", "env_steps", "time_s")
REQUIRED_METRICS = ("return/pre_adapt", "return/post_adapt")
"""Always CSV columns (empty when not recorded), so every run's CSV can be compared."""


def csv_column(key: str) -> str:
    return key.replace("/", "_")


class MetricLogger:
    """Collects scalars with `record` and writes them all at `dump(iteration, env_steps)`.

    To resume, pass the `state_dict()` stored in the checkpoint as `resume_state`: the CSV keeps
    its header and rows up to that iteration (later rows, written after the checkpoint, are
    dropped because those iterations run again), TensorBoard purges the same events, and
    `time_s` continues from the stored elapsed time.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config_dict: dict[str, Any],
        resume_state: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._values: dict[str, float] = {}
        self._declared: list[str] = []
        self._start = time.monotonic()
        self._time_offset = 0.0
        self._last_iteration = -1
        self._last_env_steps = 0
        purge_iter = purge_steps = None
        self._columns: list[str] | None = None
        csv_path = self.run_dir / CSV_NAME
        if resume_state is not None:
            self._time_offset = float(resume_state["time_s"])
            self._last_iteration = int(resume_state["iteration"])
            self._last_env_steps = int(resume_state["env_steps"])
            purge_iter, purge_steps = self._last_iteration + 1, self._last_env_steps + 1
            self._columns = _truncate_csv(csv_path, self._last_iteration)
        elif csv_path.exists():
            csv_path.unlink()  # a fresh run in an old directory must not mix rows
        # Unbuffered: a row is on disk when dump returns, and a failed write leaves nothing
        # queued that a later flush could append after `rollback` removed the row.
        self._csv_file = csv_path.open("ab", buffering=0)
        self._row_start: int | None = None
        self._writer = SummaryWriter(str(self.run_dir), purge_step=purge_iter)
        self._steps_writer = SummaryWriter(
            str(self.run_dir / ENV_STEPS_DIR), purge_step=purge_steps
        )
        if resume_state is None:
            self._log_config(config_dict)

    def _log_config(self, config_dict: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        text = yaml.safe_dump(config_dict, sort_keys=False)
        # Indent by 4 spaces: TensorBoard renders text as Markdown, this keeps it a code block.
        self._writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))
        flat = {k: _hparam_value(v) for k, v in _flatten(config_dict).items()}
        metrics = dict.fromkeys(REQUIRED_METRICS, 0.0)  # only the names are used
        for summary in hparams(flat, metrics):
            self._writer.file_writer.add_summary(summary)
        self._writer.flush()

    def record(self, key: str, value: Any) -> None:
        """Set scalar `key` (namespaced: "return/pre_adapt") for the next dump; last value wins."""
        if hasattr(value, "item"):  # 0-d tensors and numpy scalars
            try:
                value = value.item()
            except (RuntimeError, ValueError):
                raise TypeError(
                    f"metric {key!r}: expected a scalar, got shape {tuple(value.shape)}"
                ) from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"metric {key!r}: expected a real number, got {type(value).__name__}")
        self._values[key] = float(value)

    @property
    def pending(self) -> Mapping[str, float]:
        """The scalars recorded since the last dump (read-only)."""
        return MappingProxyType(self._values)

    def declare(self, keys: Iterable[str]) -> None:
        """Give keys that are recorded only on some iterations CSV columns from the first row.

        Without it a key first recorded after the first dump goes to TensorBoard only (the CSV
        header is written once). Call before the first dump; on resume the header is kept.
        """
        self._declared += [k for k in keys if k not in self._declared]

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, across resumes."""
        return self._time_offset + time.monotonic() - self._start

    def dump(self, iteration: int, env_steps: int, time_s: float | None = None) -> None:
        """Write every recorded scalar to TensorBoard and one CSV row, then clear the record."""
        time_s = self.elapsed() if time_s is None else float(time_s)
        for key, value in self._values.items():
            self._writer.add_scalar(key, value, iteration)
            self._steps_writer.add_scalar(f"{ENV_STEPS_DIR}/{key}", value, env_steps)
        self._writer.add_scalar("time/elapsed_s", time_s, iteration)
        self._writer.flush()
        self._steps_writer.flush()

        if self._columns is None:
            recorded = {csv_column(k) for k in (*self._values, *self._declared)}
            extra = sorted(recorded - set(map(csv_column, REQUIRED_METRICS)))
            self._columns = [*BASE_COLUMNS, *map(csv_column, REQUIRED_METRICS), *extra]
        row: dict[str, Any] = {"iteration": iteration, "env_steps": env_steps, "time_s": time_s}
        for key, value in self._values.items():
            if csv_column(key) in self._columns:  # later new keys: TensorBoard only
                row[csv_column(key)] = value
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self._columns)
        if self._csv_file.tell() == 0:
            writer.writeheader()
        writer.writerow(row)
        self._append(text.getvalue().encode("utf-8"))

        self._values.clear()
        self._last_iteration, self._last_env_steps = iteration, env_steps

    def _append(self, data: bytes) -> None:
        """Append ``data`` to the CSV completely, or not at all (a failed write is cut off)."""
        start = self._csv_file.seek(0, io.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[self._csv_file.write(view) :]
        except OSError as exc:
            self._csv_file.truncate(start)
            raise OSError(exc.errno, exc.strerror or str(exc), self._csv_file.name) from exc
        except BaseException:
            self._csv_file.truncate(start)
            raise
        self._row_start = start

    def rollback(self) -> None:
        """Remove the last dumped CSV row: its iteration failed to record (TensorBoard events
        cannot be taken back; a resume purges them)."""
        if self._row_start is not None:
            self._csv_file.truncate(self._row_start)
            self._csv_file.seek(0, io.SEEK_END)
            self._row_start = None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores so a resumed logger continues the same CSV, curves and clock."""
        return {
            "iteration": self._last_iteration,
            "env_steps": self._last_env_steps,
            "time_s": self.elapsed(),
        }

    def close(self) -> None:
        self._writer.close()
        self._steps_writer.close()
        self._csv_file.close()

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_csv(path: Path, last_iteration: int) -> list[str] | None:
    """Keep the header and the rows up to `last_iteration`; returns the header (None if none)."""
    if not path.exists():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("iteration") and int(r["iteration"]) <= last_iteration]
    if not columns:
        return None
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return columns


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _hparam_value(value: Any) -> bool | int | float | str:
    """TensorBoard hparams take only bool/number/str; lists and None become their text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
