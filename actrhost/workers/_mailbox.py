"""An actor's mailbox: two bounded lanes and a cap on handlers running at once.

RPC_SIGNAL work is always taken before queued RPC_RELIABLE work (DESIGN §3). Handlers run
as separate tasks, at most ``max_concurrency`` at a time, so a handler that calls another
actor which calls back (A -> B -> A) finds a free slot instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Item = Any  # what the owner queues; ``run(item)`` turns it into the handler's coroutine

#: A runner yields to the event loop after this many back-to-back items.
RUNNER_YIELD_EVERY = 32
#: Every this long while handlers run back to back, a runner asks the owner to read its
#: sockets now (``poll``): a signal-lane message still unread there is then taken next.
#: Yielding alone does not do it: the loop runs every runner that yielded before it reads
#: again (64 runners of 32 handlers each that never await: behind 3,000 calls of 1 ms, a
#: signal call waited 3.9 s, QA). Not much less: polled every 2 ms, a flood of tells
#: was handled ≈ 8 % slower (bench_local (d)); every 10 ms, within the noise.
POLL_AFTER_S = 0.01


class Mailbox:
    """Queues jobs per lane and runs them under a concurrency cap.

    ``capacity`` bounds the queued (not yet running) jobs; :meth:`put` reports when it is
    reached so the owner stops reading its socket, and ``on_space`` is called once the
    backlog is down to half, so reading resumes.
    """

    def __init__(
        self,
        run: Callable[[Item], Coroutine[Any, Any, None]],
        *,
        capacity: int,
        max_concurrency: int,
        on_full: Callable[[], None],
        on_space: Callable[[], None],
        poll: Callable[[], None] = lambda: None,
    ) -> None:
        if capacity < 1 or max_concurrency < 1:
            raise ValueError("mailbox capacity and max_concurrency must be >= 1")
        self._run = run
        self._loop = asyncio.get_running_loop()
        self.capacity = capacity
        self.max_concurrency = max_concurrency
        self._signal: deque[Item] = deque()
        self._reliable: deque[Item] = deque()
        self._running: set[asyncio.Task[None]] = set()
        # Runners made but not yet started: each takes its first item when it starts.
        self._unstarted: set[asyncio.Task[None]] = set()
        self._on_full = on_full
        self._on_space = on_space
        self._poll = poll
        self._poll_at = self._loop.time() + POLL_AFTER_S
        self._full = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.peak_depth = 0

    @property
    def depth(self) -> int:
        """Jobs queued and not yet started."""
        return len(self._signal) + len(self._reliable)

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self._running)

    def put(self, item: Item, *, signal: bool) -> None:
        """Queue an item on its lane and start what the concurrency cap allows."""
        (self._signal if signal else self._reliable).append(item)
        depth = self.depth
        if depth > self.peak_depth:
            self.peak_depth = depth
        self._idle.clear()
        self._pump()
        if not self._full and self.depth >= self.capacity:
            self._full = True
            self._on_full()

    def _next_item(self) -> Item | None:
        if self._signal:
            return self._signal.popleft()
        if self._reliable:
            return self._reliable.popleft()
        return None

    def _pump(self) -> None:
        """Start runners for queued items, up to the concurrency cap.

        A runner takes its first item when it starts, not when it is made: a runner made
        earlier may finish its item and take the next before a later one starts, and
        items must start in queue order (one sender's tell, then its call, must find the
        tell handled; until 2026-12-02 the 65th item of a burst started before the 2nd).
        """
        if not self._running and self.depth:
            # Work after a pause: items read just now. (Not per item: a clock read costs.)
            self._poll_at = self._loop.time() + POLL_AFTER_S
        while len(self._running) < self.max_concurrency and self.depth > len(self._unstarted):
            holder: list[asyncio.Task[None]] = []
            task = self._loop.create_task(self._runner(holder))
            holder.append(task)
            self._running.add(task)
            self._unstarted.add(task)
        self._after_change()

    def _after_change(self) -> None:
        if self._full and self.depth <= self.capacity // 2:
            self._full = False
            self._on_space()
        if not self._running and not self.depth:
            self._idle.set()

    async def _runner(self, holder: list[asyncio.Task[None]]) -> None:
        """Take queued items one by one and run them until none is left.

        Reusing the task under a backlog saves creating one per message (measured: most
        of a tell's cost on the receiver); the concurrency cap is the number of runners.
        ``holder`` holds the task itself (current_task() costs more than this list).
        """
        self._unstarted.discard(holder[0])
        try:
            handled = 0
            while (item := self._next_item()) is not None:
                self._after_change()
                try:
                    await self._run(item)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("mailbox job failed")
                handled += 1
                if self._loop.time() >= self._poll_at:
                    self._poll_at = self._loop.time() + POLL_AFTER_S
                    self._poll()
                if handled % RUNNER_YIELD_EVERY == 0:
                    # Handlers that never suspend would otherwise keep the loop from
                    # reading sockets for as long as the backlog lasts.
                    await asyncio.sleep(0)
        finally:
            self._running.discard(holder[0])
            self._pump()

    def drop_queued(self, which: Callable[[Item], bool] | None = None) -> list[Item]:
        """Remove and return the queued items ``which`` selects (all by default), signal
        lane first (used when stopping)."""
        taken: list[Item] = []
        for lane in (self._signal, self._reliable):
            kept = [item for item in lane if which is not None and not which(item)]
            taken += [item for item in lane if which is None or which(item)]
            lane.clear()
            lane.extend(kept)
        self._pump()
        return taken

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or running; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    def cancel_running(self) -> None:
        """Cancel every running job (their callers get an answer from the job's cleanup)."""
        for task in list(self._running):
            task.cancel()
        # A runner cancelled before it started never runs its body (nor its `finally`).
        self._running -= self._unstarted
        self._unstarted.clear()
        self._after_change()
