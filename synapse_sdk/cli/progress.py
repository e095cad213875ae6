"""Progress for ``synapse-upload upload``: bars on a terminal, plain lines elsewhere.

On a terminal: one bar per file in flight and one for the whole batch
(bytes, rate, ETA), redrawn in place at most ten times a second. Elsewhere
(a log, a pipe, CI): one line every few seconds. Both write to stderr, so
stdout carries only results.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from synapse_sdk.clients.backend.batch import BatchProgress

__all__ = ["ProgressDisplay", "human_bytes"]


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _bar(fraction: float, width: int = 24) -> str:
    filled = round(fraction * width)
    return "#" * filled + "-" * (width - filled)


def _eta(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class ProgressDisplay:
    """A ``BatchProgress`` callback that draws what it is told."""

    def __init__(self, stream: TextIO, *, tty: bool, interval: float | None = None) -> None:
        self.stream = stream
        self.tty = tty
        self.interval = interval if interval is not None else (0.1 if tty else 5.0)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._lines_drawn = 0
        self._latest: BatchProgress | None = None

    def __call__(self, progress: BatchProgress) -> None:
        with self._lock:
            self._latest = progress
            now = time.monotonic()
            if now - self._last_draw >= self.interval:
                self._last_draw = now
                self._draw(progress, now)

    def note(self, line: str) -> None:
        """Print ``line`` above the bars (on a terminal, the bars are drawn again below it)."""
        with self._lock:
            if self.tty and self._lines_drawn:
                self.stream.write(f"\x1b[{self._lines_drawn}F\x1b[J")
                self._lines_drawn = 0
            self.stream.write(line + "\n")
            if self.tty and self._latest is not None:
                self._draw(self._latest, time.monotonic())
            self.stream.flush()

    def close(self) -> None:
        """Draw the final state (on a terminal, leave it on screen)."""
        with self._lock:
            if self._latest is not None:
                self._draw(self._latest, time.monotonic())

    def _overall(self, p: BatchProgress, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = p.bytes_done / elapsed
        remaining = (p.bytes_total - p.bytes_done) / rate if rate > 0 else float("inf")
        fraction = p.bytes_done / p.bytes_total if p.bytes_total else 1.0
        failed = f", {p.files_failed} failed" if p.files_failed else ""
        return (
            f"{human_bytes(p.bytes_done)} of {human_bytes(p.bytes_total)} ({fraction:.0%}), "
            f"{p.files_done}/{p.files_total} files{failed}, {human_bytes(rate)}/s, ETA {_eta(remaining)}"
        )

    def _draw(self, p: BatchProgress, now: float) -> None:
        if not self.tty:
            self.stream.write(f"progress: {self._overall(p, now)}\n")
            self.stream.flush()
            return
        lines = []
        for path, done, size in p.active:
            fraction = done / size if size else 1.0
            lines.append(f"  {_bar(fraction)} {fraction:4.0%} {path.name[:48]}")
        fraction = p.bytes_done / p.bytes_total if p.bytes_total else 1.0
        lines.append(f"{_bar(fraction)} {self._overall(p, now)}")
        # Move up over the previous frame and clear to the end of the screen.
        up = f"\x1b[{self._lines_drawn}F" if self._lines_drawn else ""
        self.stream.write(up + "\x1b[J" + "\n".join(lines) + "\n")
        self.stream.flush()
        self._lines_drawn = len(lines)
