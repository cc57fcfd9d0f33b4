"""The live progress line of ``actrhost load``, on stderr only.

On a terminal one line is redrawn in place (``\\r`` + erase-line) a few times a second;
elsewhere (a log, CI) a plain line is printed every :data:`PLAIN_EVERY_S` so the log shows
the run advancing without being flooded. Plain ANSI, no dependency: the line is short and
the terminal handling is two escape codes.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

from .._histogram import Histogram
from ._units import format_count, format_ms, format_rate

#: Redraw period on a terminal, and print period elsewhere.
REDRAW_EVERY_S = 0.25
PLAIN_EVERY_S = 5.0
#: The "current rate" is taken over this trailing window.
RATE_WINDOW_S = 1.0


class Progress:
    """Shows elapsed time, requests done, current rate, errors, and p50/p99 so far.

    ``mode`` is ``auto`` (redraw on a terminal, else a line every few seconds),
    ``always`` (redraw even when not a terminal) or ``never``. Never raises on a closed
    or broken stderr: progress is not worth failing a run for.
    """

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = mode != "never"
        self.redraw = mode == "always" or (mode == "auto" and tty)
        self._last_draw = 0.0
        self._drawn = False
        self._samples: deque[tuple[float, int]] = deque()

    def _rate(self, now: float, done: int) -> float:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        then, done_then = samples[0]
        return (done - done_then) / (now - then) if now > then else 0.0

    def update(
        self,
        *,
        elapsed_s: float,
        planned_s: float | None,
        warming_up: bool,
        done: int,
        errors: int,
        latency: Histogram,
    ) -> None:
        """Record the run's state; redraws when due. ``done`` counts measured requests."""
        now = time.monotonic()
        if warming_up:
            self._samples.clear()  # the rate starts with the measured window
        rate = self._rate(now, done)
        if not self.enabled or now - self._last_draw < (
            REDRAW_EVERY_S if self.redraw else PLAIN_EVERY_S
        ):
            return
        self._last_draw = now
        if warming_up:
            line = "warming up ..."
        else:
            p50, p99 = latency.values_at_percentiles([50, 99])
            of = f"/{planned_s:.0f}s" if planned_s else "s"
            line = (
                f"{elapsed_s:5.1f}{of}  done {format_count(done)}  rate {format_rate(rate)}/s  "
                f"errors {format_count(errors)}  p50 {format_ms(p50 / 1e6)} ms  "
                f"p99 {format_ms(p99 / 1e6)} ms"
            )
        self._write(f"\r\x1b[K{line}" if self.redraw else f"{line}\n")
        self._drawn = True

    def close(self) -> None:
        """Erase the redrawn line so the report starts on a clean screen."""
        if self.enabled and self.redraw and self._drawn:
            self._write("\r\x1b[K")
        self._drawn = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False
