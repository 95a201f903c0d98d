"""Clearing the cache once the device has stayed idle, instead of after a lone job.

On a CPU the cache is the C heap's free pages (service/memory/heap.py). Handing them back after
every job made the next job fault the same pages in again: a lone client's 2048 px ddcolor-tiny
job took about 10 % longer through the service than in a script (docs/performance.md, "One
client"). So after a job that leaves nothing waiting, the pages stay for `delay_s`; the next job
that comes in time reuses them, and the cache is cleared when the delay passes with no
reservation held. Anything that needs the room sooner gets it at once: admission clears the cache
before it refuses or waits (MemoryManager.reserve), as does the GC threshold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class IdleClear:
    """Calls `clear` once `delay_s` has passed since the last `arm` while `busy` is false."""

    def __init__(self, clear: Callable[[], object], busy: Callable[[], bool], delay_s: float):
        self.clear = clear
        self.busy = busy
        self.delay_s = delay_s
        self._cond = threading.Condition()
        self._due: float | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> bool:
        """Whether a clear is due (the cache may hold pages the idle process does not need)."""
        with self._cond:
            return self._due is not None

    def arm(self) -> None:
        """Clear `delay_s` from now, unless armed again or cancelled before then."""
        with self._cond:
            if self._closed:
                return
            self._due = time.monotonic() + self.delay_s
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="colorize-idle-clear", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def cancel(self) -> None:
        """The cache was cleared some other way: nothing is due."""
        with self._cond:
            self._due = None
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._due = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._due is None or time.monotonic() < self._due):
                    wait = None if self._due is None else self._due - time.monotonic()
                    self._cond.wait(wait)
                if self._closed:
                    return
                self._due = None
                if self.busy():  # work came in: its own end arms again
                    continue
            self.clear()
