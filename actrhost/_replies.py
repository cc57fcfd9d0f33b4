"""Answers a ROUTER could not take at once, sent as room appears instead of dropped.

Callees (workers, and the gateway for answers from other nodes) answer through a ROUTER
with ``ROUTER_MANDATORY``, which refuses a message (``EAGAIN``) for a caller whose queue
is full: a caller with more calls outstanding than the high-water marks of its pipe hold,
whose answers come back in a burst faster than it reads them. Dropped, each such answer
cost its caller the rest of its deadline and a 504 (52 of 200 concurrent remote calls
with ``hwm_messages = 16``). Now such answers wait here, per caller and in order, and go
as soon as the caller's queue has room: at most :data:`REPLY_WAIT_S`, and at most
:data:`MAX_WAITING` of them in all (a caller that never reads must not grow memory
without bound). An answer for a caller that is gone (``EHOSTUNREACH``) is dropped at
once, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import zmq

from ._zmqloop import LoopSocket

log = logging.getLogger(__name__)

#: The longest an answer waits for room in its caller's queue (callers' deadlines are
#: mostly shorter: then it only keeps the caller from a late answer's counting).
REPLY_WAIT_S = 10.0
#: Answers waiting in all, at most; beyond, new ones are dropped (and counted).
MAX_WAITING = 65536
#: How often a waiting answer is tried again: ZeroMQ gives no event when a peer's pipe
#: has room, so the retry backs off from the first value to the second while none goes.
RETRY_MIN_S = 0.0005
RETRY_MAX_S = 0.01


class Replies:
    """Sends answers on ``router``; ``on_dropped(n)`` counts those that could not go.

    With ``addressed=False`` the socket is a DEALER with one peer (a worker's feed from
    the gateway, ``_directory.gateway_feed_endpoint``): answers go without routing id.
    """

    def __init__(
        self, router: LoopSocket, on_dropped: Callable[[int], None], *, addressed: bool = True
    ) -> None:
        self._router = router
        self._addressed = addressed
        self._on_dropped = on_dropped
        self._waiting: dict[bytes, deque[tuple[float, bytes]]] = {}  # by caller, in order
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def waiting(self) -> int:
        """Answers waiting for room now."""
        return self._count

    def send(self, routing_id: bytes, data: bytes) -> None:
        """Send ``data`` to ``routing_id`` now, or as soon as its queue has room."""
        waiting = self._waiting.get(routing_id)
        if waiting is None:  # nothing of this caller's waits: it may go at once
            try:
                self._send(routing_id, data)
                return
            except zmq.Again:
                pass
            except zmq.ZMQError as exc:  # EHOSTUNREACH: the caller is gone
                log.debug("%r: answer to a gone caller dropped: %s", self._router, exc)
                self._on_dropped(1)
                return
        if self._count >= MAX_WAITING:
            self._on_dropped(1)
            return
        if waiting is None:
            waiting = self._waiting[routing_id] = deque()
        waiting.append((self._loop.time() + REPLY_WAIT_S, data))
        self._count += 1
        if self._task is None:
            self._task = self._loop.create_task(self._send_waiting())

    def _send(self, routing_id: bytes, data: bytes) -> None:
        if self._addressed:
            self._router.send_multipart_nowait([routing_id, data])
        else:
            self._router.send_nowait(data)

    async def _send_waiting(self) -> None:
        pause = RETRY_MIN_S
        try:
            while self._waiting:
                await asyncio.sleep(pause)
                sent = self._try_all()
                pause = RETRY_MIN_S if sent else min(pause * 2, RETRY_MAX_S)
        finally:
            self._task = None

    def _try_all(self) -> int:
        """Send what the callers' queues take now, oldest first; return how many went."""
        now = self._loop.time()
        sent = dropped = 0
        for routing_id, waiting in list(self._waiting.items()):
            while waiting:
                give_up_at, data = waiting[0]
                if now >= give_up_at:
                    waiting.popleft()
                    dropped += 1
                    continue
                try:
                    self._send(routing_id, data)
                except zmq.Again:
                    break
                except zmq.ZMQError:  # the caller is gone
                    dropped += len(waiting)
                    waiting.clear()
                    break
                waiting.popleft()
                sent += 1
            if not waiting:
                del self._waiting[routing_id]
        self._count -= sent + dropped
        if dropped:
            self._on_dropped(dropped)
        return sent

    def close(self) -> None:
        """Give up what still waits (the socket is closing)."""
        if self._task is not None:
            self._task.cancel()
        if self._count:
            self._on_dropped(self._count)
        self._waiting.clear()
        self._count = 0
