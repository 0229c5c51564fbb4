"""Progress on stderr: one refreshing line on a terminal, one line per phase otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_REFRESH_S = 0.2  # a terminal line redrawn per request would cost the load generator CPU


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.label = ""
        self._last = 0.0
        self._width = 0
        self._started = time.monotonic()

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def _clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def phase(self, label: str) -> None:
        """A new phase starts; off a terminal it is logged once."""
        if not self.enabled:
            return
        self.label = label
        if self.tty:
            self._draw(label)
        else:
            print(f"[{time.monotonic() - self._started:6.1f}s] {label}", file=self.stream, flush=True)

    def count(self, done: int, total: int) -> None:
        """Requests done in the current phase (redrawn at most every _REFRESH_S on a terminal)."""
        if not (self.enabled and self.tty):
            return
        now = time.monotonic()
        if done == total or now - self._last >= _REFRESH_S:
            self._last = now
            self._draw(f"{self.label}: {done}/{total} requests")

    def note(self, text: str) -> None:
        """A message that stays on screen."""
        if not self.enabled:
            return
        self._clear()
        print(text, file=self.stream, flush=True)
        if self.tty and self.label:
            self._draw(self.label)

    def close(self) -> None:
        self._clear()
