"""Hold SIGINT and SIGTERM while an iteration is being written, deliver them right after.

Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread is; in the middle of recording an
iteration that could leave its CSV row written and its checkpoint not. Inside ``deferred()``
the signals are only noted; when the block ends the old handlers come back and each noted
signal is raised again through them, so the iteration is either fully recorded or, when the
signal arrived earlier, abandoned before its first write.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred(signums: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Run the block without interruption by ``signums``; re-raise them after it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda s, _: caught.append(s)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
