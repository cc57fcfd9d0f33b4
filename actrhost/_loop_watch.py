"""Says when a process's event loop is blocked, and where (``[node] blocked_loop_warning_s``).

Workers and the gateway watch their loops this way. An actor runs on one asyncio loop:
a handler that calls ``time.sleep``, reads a file or computes for seconds without
awaiting stops *everything* in its worker meanwhile (other handlers, answers to its own
calls, stream callbacks, the supervisor's questions). From outside that only looks like
a slow actor. The loop ticks a timestamp a few times a second; a small thread checks it,
and once the loop has not ticked for the threshold it logs a warning with the loop's
current stack (the line that blocks), and when the loop ticks again, how long it was
blocked. The counts go to ``actrhost status`` and the metrics page (``loop_blocks``,
``loop_blocked_seconds``). The gateway carries every remote call, tell and stream of its
node on its one loop: a block there (our bug, or aiortc's) stalls all of them, so it is
watched the same way (since 2026-12-06).

A process that did not run at all is not blocked: when the watching thread itself did
not run for the threshold either and the process used (almost) no CPU meanwhile, the
process was stopped (SIGSTOP, a debugger) or got no CPU (a starved VM), and the warning
says that instead, without a stack or a count: the loop's stack then only showed it
waiting in ``select``, and users looked for a bug in their handler (chaos_remote.py,
a SIGSTOPped worker). A handler that sleeps or waits on I/O lets the thread run; one
that computes uses CPU: both still count as blocks.

The thread only reads a timestamp and, rarely, the main thread's stack: it costs a
wake-up per tick and nothing on the message path.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from ._rpc import worth_logging

log = logging.getLogger(__name__)

#: Innermost frames of the blocked loop's stack that the warning shows.
STACK_FRAMES = 6


class LoopWatch:
    """Watches the running loop from a thread; :meth:`start` in the loop, :meth:`stop`
    when the process ends.

    ``process`` names the process in the warnings ("worker", "gateway") and ``waiting``
    says what waits while its loop is blocked.
    """

    def __init__(
        self,
        threshold_s: float,
        process: str = "worker",
        waiting: str = "its calls, tells, answers and streams wait",
    ) -> None:
        self.threshold_s = threshold_s
        self.process = process
        self.waiting = waiting
        #: How often the loop ticks and the thread looks: a tenth of the threshold, so
        #: a block is measured and told within 10 % (QA: with a quarter, blocks up to
        #: 1.5 x the threshold went uncounted, as the gap minus a period was compared).
        self.period_s = min(0.1, max(0.005, threshold_s / 10))
        #: Blocks of at least the threshold, and the seconds they lasted in all.
        self.blocks = 0
        self.blocked_s = 0.0
        #: Times the whole process stood still for the threshold (not counted as blocks).
        self.pauses = 0
        self._lock = threading.Lock()
        self._last_tick = time.monotonic()
        self._warned = False  # the current block was reported (the loop has not ticked)
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._main_ident = threading.get_ident()

    def start(self) -> None:
        """Begin ticking (in the loop's thread) and watching (in a daemon thread)."""
        self._loop = asyncio.get_running_loop()
        self._main_ident = threading.get_ident()
        self._last_tick = time.monotonic()
        self._timer = self._loop.call_later(self.period_s, self._tick)
        self._thread = threading.Thread(target=self._watch, name="actrhost-loop-watch", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, float]:
        """The counters for ``actrhost status`` and the metrics page."""
        return {"loop_blocks": self.blocks, "loop_blocked_seconds": round(self.blocked_s, 3)}

    def stop(self) -> None:
        """Stop ticking and watching (the thread ends within one period)."""
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            late_s = now - self._last_tick - self.period_s / 2  # the block, give or take
            warned, self._warned = self._warned, False
            self._last_tick = now
        if warned:
            self.blocked_s += late_s
            if worth_logging(self.blocks):
                log.warning("the event loop was blocked for %.2f s", late_s)
        if not self._stopped.is_set() and self._loop is not None:
            self._timer = self._loop.call_later(self.period_s, self._tick)

    def _watch(self) -> None:
        watched_at, cpu_at = time.monotonic(), time.process_time()
        while not self._stopped.wait(self.period_s):
            now, cpu = time.monotonic(), time.process_time()
            if now - watched_at >= self.threshold_s and cpu - cpu_at < (now - watched_at) / 10:
                # This thread did not run either, and the process hardly used CPU (a
                # handler that computes uses it, even holding the GIL): it stood still.
                self._paused(now - watched_at, now)
            watched_at, cpu_at = now, cpu
            with self._lock:
                blocked_s = now - self._last_tick
                if self._warned or blocked_s < self.threshold_s:
                    continue
                self._warned = True
                self.blocks += 1
                count = self.blocks
            if worth_logging(count):
                log.warning(
                    "the event loop has been blocked for %.2f s (nothing else in this "
                    "%s runs meanwhile: %s); it is at:\n%s",
                    blocked_s,
                    self.process,
                    self.waiting,
                    self._main_stack(),
                )

    def _paused(self, paused_s: float, now: float) -> None:
        """The whole process did not run for ``paused_s``: not a block of its loop."""
        with self._lock:
            if not self._warned:  # (a block under way before the pause still counts)
                self._last_tick = max(self._last_tick, now - self.period_s)
        self.pauses += 1
        if worth_logging(self.pauses):
            log.warning(
                "this %s did not run for %.2f s (the process was stopped, or got no "
                "CPU): not a blocked event loop",
                self.process,
                paused_s,
            )

    def _main_stack(self) -> str:
        frame = sys._current_frames().get(self._main_ident)
        if frame is None:
            return "  (no stack)"
        return "".join(traceback.format_stack(frame, limit=STACK_FRAMES)).rstrip()
