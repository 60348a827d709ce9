"""Background threads that live exactly as long as a ``with`` block."""

from __future__ import annotations

import threading


class Beside(threading.Thread):
    """A daemon thread started on entering a ``with`` block and stopped (``_done`` set) and joined on leaving it."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name, daemon=True)
        self._done = threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join()
