"""Progress for long loops: a tqdm bar on a terminal, plain lines anywhere else.

A bar redraws itself with carriage returns, which a log file or a CI console stores as one
endless line; when the stream is not a terminal, ``Progress`` writes one ordinary line every
``every`` units instead (about 20 lines per loop by default, plus the last).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm


class Progress:
    """``update(n, **postfix)`` as tqdm's; ``close()`` at the end (or use it as a context)."""

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        unit: str = "it",
        desc: str = "",
        every: int | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.done, self.unit, self.desc = total, initial, unit, desc
        self._stream = stream if stream is not None else sys.stderr
        self._every = every or max(1, round(max(total - initial, 1) / 20))
        self._next = initial + self._every
        self._start = time.monotonic()
        isatty = getattr(self._stream, "isatty", None)
        self._bar = (
            tqdm(total=total, initial=initial, unit=unit, desc=desc or None, file=self._stream)
            if isatty is not None and isatty()
            else None
        )

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return
        if self.done >= self._next or self.done >= self.total:
            self._next = self.done + self._every
            extra = "".join(f", {key} {value}" for key, value in postfix.items())
            elapsed = time.monotonic() - self._start
            label = f"{self.desc}: " if self.desc else ""
            line = f"{label}{self.done:,}/{self.total:,} {self.unit}{extra} ({elapsed:.0f} s)"
            print(line, file=self._stream, flush=True)

    def write(self, line: str) -> None:
        """A message between updates (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
