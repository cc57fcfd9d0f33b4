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

**Workers do without the ticks** (since 2026-12-06): a node's workers are many and mostly
idle, and ticking woke each one's loop ten times a second, besides the thread (an idle
worker took ~0.3 % of a CPU, 24 wake-ups a second; 20 idle actors 7 %). A worker's loop
runs on a :class:`BusySelector` (:func:`watched_event_loop`), which notes when the loop
wakes from ``select`` and when it goes back to it: the thread reads that, so the idle
loop is never woken, and a block is measured exactly, from when the loop woke to when it
waited again. That lets the thread look four times per threshold instead of ten: a
block that ends before it looks is still counted (the selector keeps each stretch of a
threshold or more), only without a stack.

**The gateway's loop ticks only when busy** (since 2026-12-07). It runs on uvloop, whose
selector is not ours. The thread reads where the loop's thread sleeps in the kernel
(``/proc/self/task/<tid>/wchan``): waiting in ``epoll`` is an idle loop, which counts
as a tick, and the thread asks the loop for a tick (``call_soon_threadsafe``) only when
it finds it elsewhere. An idle gateway's loop was woken ten times a second by its ticks.
Where the kernel does not say (``wchan`` reads ``0``), every look asks for a tick, which
is what the ticks cost before. A callback that itself waits in ``epoll`` (a blocking
``selectors`` call) would pass for an idle loop: nothing in the gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from typing import Any

from ._rpc_receiving import worth_logging

log = logging.getLogger(__name__)

#: Innermost frames of the blocked loop's stack that the warning shows.
STACK_FRAMES = 6


class BusySelector(selectors.DefaultSelector):
    """The selector of a watched loop (:func:`watched_event_loop`): notes since when the
    loop has been running callbacks, and keeps each stretch of ``threshold_s`` or more
    for the watch (a monotonic clock read and a comparison per loop turn)."""

    def __init__(self) -> None:
        super().__init__()
        #: Since when the loop has been busy (None: it waits in ``select``).
        self.busy_since: float | None = time.monotonic()
        #: Stretches worth a look: (busy since, until), appended here, taken by the watch.
        self.long_stretches: deque[tuple[float, float]] = deque(maxlen=1024)
        #: What makes a stretch long (set by the watch; never, until one watches).
        self.threshold_s = float("inf")

    def select(self, timeout: float | None = None) -> Any:
        """Wait for I/O as the loop asks, noting when it stops and starts being busy."""
        now = time.monotonic()
        since = self.busy_since
        if since is not None and now - since >= self.threshold_s:
            self.long_stretches.append((since, now))
        self.busy_since = None
        try:
            return super().select(timeout)
        finally:
            self.busy_since = time.monotonic()


#: The selector of each loop made by watched_event_loop.
_SELECTORS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BusySelector] = (
    weakref.WeakKeyDictionary()
)


def watched_event_loop() -> asyncio.AbstractEventLoop:
    """A new asyncio loop (set as the thread's current one) whose :class:`LoopWatch`
    needs no ticks: for ``asyncio.Runner(loop_factory=watched_event_loop)``."""
    selector = BusySelector()
    loop = asyncio.SelectorEventLoop(selector)
    _SELECTORS[loop] = selector
    asyncio.set_event_loop(loop)
    return loop


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
        #: How often the thread looks (and asks a busy loop to tick): a tenth of the threshold, so
        #: a block is measured and told within 10 % (QA: with a quarter, blocks up to
        #: 1.5 x the threshold went uncounted, as the gap minus a period was compared).
        #: On a watched loop (no ticks, exact times) the thread looks every quarter.
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
        self._selector: BusySelector | None = None
        self._tick_asked = False  # a tick is in the loop's queue
        self._thread: threading.Thread | None = None
        self._main_ident = threading.get_ident()
        self._wchan = ""  # where the loop's thread sleeps in the kernel (/proc)

    def start(self) -> None:
        """Begin watching (in a daemon thread); call it in the loop's thread."""
        self._loop = asyncio.get_running_loop()
        self._main_ident = threading.get_ident()
        self._selector = _SELECTORS.get(self._loop)
        if self._selector is not None:
            self._selector.threshold_s = self.threshold_s
            self.period_s = min(0.25, max(0.005, self.threshold_s / 4))
            watch = self._watch_busy
        else:
            self._last_tick = time.monotonic()
            self._wchan = f"/proc/self/task/{threading.get_native_id()}/wchan"
            watch = self._watch
        self._thread = threading.Thread(target=watch, name="actrhost-loop-watch", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, float]:
        """The counters for ``actrhost status`` and the metrics page."""
        return {"loop_blocks": self.blocks, "loop_blocked_seconds": round(self.blocked_s, 3)}

    def stop(self) -> None:
        """Stop watching (the thread ends within one period)."""
        self._stopped.set()
        if self._selector is not None:
            self._selector.threshold_s = float("inf")

    # -- a ticking loop ------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            late_s = now - self._last_tick - self.period_s / 2  # the block, give or take
            warned, self._warned = self._warned, False
            self._last_tick = now
            self._tick_asked = False
        if warned:
            self._ended(late_s)

    def _watch(self) -> None:
        watched_at, cpu_at = time.monotonic(), time.process_time()
        while not self._stopped.wait(self.period_s):
            now, cpu = time.monotonic(), time.process_time()
            if self._stood_still(now - watched_at, cpu - cpu_at):
                with self._lock:
                    if not self._warned:  # (a block under way before the pause still counts)
                        self._last_tick = max(self._last_tick, now - self.period_s)
            watched_at, cpu_at = now, cpu
            waiting = self._loop_waits()
            with self._lock:
                if waiting and not self._warned:
                    self._last_tick = now  # idle in epoll: as good as a tick
                    continue
                ask, self._tick_asked = not self._tick_asked, True
                blocked_s = now - self._last_tick
                warn = not self._warned and blocked_s >= self.threshold_s
                self._warned = self._warned or warn
            if ask and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self._tick)
            if warn:
                self._blocked(blocked_s)

    def _loop_waits(self) -> bool:
        """Whether the loop's thread sleeps in ``epoll`` (waits for events) right now."""
        try:
            with open(self._wchan) as wchan:
                where = wchan.read()
        except OSError:
            return False
        return "epoll" in where or where == "ep_poll"  # (the name varies with the kernel)

    # -- a watched loop ------------------------------------------------------------------

    def _watch_busy(self) -> None:
        selector = self._selector
        assert selector is not None
        watched_at, cpu_at = time.monotonic(), time.process_time()
        warned_since: float | None = None  # the stretch told of, while it lasts
        excused_from = 0.0  # busy time before this was a pause's, not the loop's
        while not self._stopped.wait(self.period_s):
            now, cpu = time.monotonic(), time.process_time()
            if self._stood_still(now - watched_at, cpu - cpu_at) and warned_since is None:
                excused_from = now - self.period_s
            watched_at, cpu_at = now, cpu
            while selector.long_stretches:
                since, until = selector.long_stretches.popleft()
                blocked_s = until - max(since, excused_from)
                if since == warned_since:
                    warned_since = None
                    self._ended(blocked_s)
                elif blocked_s >= self.threshold_s:  # over before we looked
                    self._blocked_before(blocked_s)
            busy_since = selector.busy_since  # (read after ``now``: busy until then)
            if busy_since is None or busy_since == warned_since:
                continue
            blocked_s = now - max(busy_since, excused_from)
            if blocked_s >= self.threshold_s:
                warned_since = busy_since
                self._blocked(blocked_s)

    # -- both ----------------------------------------------------------------------------

    def _blocked(self, blocked_s: float) -> None:
        """Count a block under way, and say where the loop is."""
        self.blocks += 1
        if worth_logging(self.blocks):
            log.warning(
                "the event loop has been blocked for %.2f s (nothing else in this %s runs "
                "meanwhile: %s); it is at:\n%s",
                blocked_s,
                self.process,
                self.waiting,
                self._main_stack(),
            )

    def _blocked_before(self, blocked_s: float) -> None:
        """Count a block that was over before this thread looked: its time is known, not
        where it was (the next one as long will likely show it)."""
        self.blocks += 1
        self.blocked_s += blocked_s
        if worth_logging(self.blocks):
            log.warning(
                "the event loop was blocked for %.2f s (nothing else in this %s ran "
                "meanwhile), over before it could be seen where",
                blocked_s,
                self.process,
            )

    def _ended(self, blocked_s: float) -> None:
        """The block counted last is over after ``blocked_s``."""
        self.blocked_s += blocked_s
        if worth_logging(self.blocks):
            log.warning("the event loop was blocked for %.2f s", blocked_s)

    def _stood_still(self, gap_s: float, cpu_s: float) -> bool:
        """Whether the process stood still while this thread slept ``gap_s`` and the
        process used ``cpu_s``: counted and said, not a block of its loop."""
        # This thread did not run either, and the process hardly used CPU (a handler
        # that computes uses it, even holding the GIL): it stood still.
        if gap_s < self.threshold_s or cpu_s >= gap_s / 10:
            return False
        self.pauses += 1
        if worth_logging(self.pauses):
            log.warning(
                "this %s did not run for %.2f s (the process was stopped, or got no "
                "CPU): not a blocked event loop",
                self.process,
                gap_s,
            )
        return True

    def _main_stack(self) -> str:
        frame = sys._current_frames().get(self._main_ident)
        if frame is None:
            return "  (no stack)"
        return "".join(traceback.format_stack(frame, limit=STACK_FRAMES)).rstrip()
