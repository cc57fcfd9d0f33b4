"""A minimal bridge between plain ``zmq.Socket``s and an asyncio loop.

Why not ``zmq.asyncio``: it allocates a Future and an event record per ``recv`` and re-reads
socket options on every call; our measurements (STYLE §2) put its burst receive rate at
0.06-0.08x of a blocking socket. Here each socket gets one ``add_reader`` on its FD and a
callback that drains up to :data:`DRAIN_BATCH` messages with ``NOBLOCK`` and hands each to
the owner synchronously — nothing is awaited between taking a message off the socket and
handing it on, so cancellation can never drop a message.

The ZeroMQ FD is edge-triggered: it signals a *change* of ``EVENTS``, not "data is
waiting". So after a batch, and after every send on a socket that also receives, we
re-read ``EVENTS`` and reschedule the drain ourselves if input is still pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

log = logging.getLogger(__name__)

#: Messages handled per wake-up before yielding to the loop, so one busy socket cannot
#: starve the others or the handlers.
DRAIN_BATCH = 256

# Plain ints: IntFlag arithmetic costs more than the socket call it guards.
_EVENTS = int(zmq.EVENTS)
_POLLOUT = int(zmq.POLLOUT)
_POLLIN = int(zmq.POLLIN)
_RCVMORE = int(zmq.RCVMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


class LoopSocket:
    """One ZeroMQ socket driven by the running asyncio loop.

    ``on_message(parts)`` is called synchronously for every received multipart message
    (a list of ``bytes``). Sends never block: :meth:`send_nowait` raises ``zmq.Again``
    when the socket cannot take the message now.
    """

    __slots__ = (
        "_batch",
        "_closed",
        "_loop",
        "_on_drained",
        "_on_message",
        "_paused",
        "_scheduled",
        "_sent_since_drain",
        "handler_failures",
        "name",
        "sock",
    )

    def __init__(
        self,
        sock: zmq.Socket,
        on_message: Callable[[list[bytes]], None] | None,
        name: str,
        on_drained: Callable[[], None] | None = None,
        batch: int = DRAIN_BATCH,
    ) -> None:
        self.sock = sock
        self.name = name
        self._batch = batch  # messages per wake-up before yielding to the loop
        self._on_message = on_message
        # Called after each drain, once its messages were all handed to on_message (maybe
        # none): the owner can then send what they produced, as one batch.
        self._on_drained = on_drained
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._sent_since_drain = False
        self._closed = False
        self._paused = False
        #: Messages whose handler raised (a bug, or input it did not expect).
        self.handler_failures = 0
        if on_message is not None:
            self._loop.add_reader(sock.FD, self._drain)
            # Messages may already be queued: the edge that announced them is gone.
            self._schedule_drain()

    def __repr__(self) -> str:
        return f"LoopSocket({self.name})"

    # -- receiving ---------------------------------------------------------------------

    def _schedule_drain(self) -> None:
        if not self._scheduled and not self._closed and not self._paused:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        self._sent_since_drain = False
        if self._closed or self._paused or self._on_message is None:
            return
        if self._on_drained is None:
            self._take_messages(self._on_message)
            return
        try:
            self._take_messages(self._on_message)
        finally:
            self._on_drained()

    def _take_messages(self, handle: Callable[[list[bytes]], None]) -> None:
        sock = self.sock
        recv = sock.recv
        get = sock.get
        for taken in range(self._batch):
            if self._paused:  # the handler just asked for backpressure
                return
            try:
                # A wake-up mostly finds one message or none: for the first two, read
                # EVENTS (~1.5 µs) rather than fail a recv (the zmq.Again exception costs
                # ~3.5 µs). Past two it is a burst: recv until Again, one exception per
                # burst instead of an EVENTS read per message (bench_local (c) and (d)).
                if taken < 2 and not int(get(_EVENTS)) & _POLLIN:
                    return
                # recv_multipart() by hand: pyzmq's converts RCVMORE to an enum per part,
                # which cost ~15% of a small message's handling (py-spy, bench_local (d)).
                parts = [recv(_NOBLOCK)]
                while get(_RCVMORE):
                    parts.append(recv(_NOBLOCK))
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if self._closed:
                    return
                log.warning("%r: receive failed: %s", self, exc)
                return
            try:
                handle(parts)
            except Exception:
                # A bug in a handler must not kill the receive loop of the process. The
                # first five, then every 100th (as worth_logging): one input that trips
                # it, sent in a loop, wrote 9 MB of tracebacks in 2 s (QA).
                self.handler_failures += 1
                count = self.handler_failures
                if count <= 5 or count % 100 == 0:
                    log.exception("%r: message handler failed (#%d)", self, count)
        # Batch limit reached with input left: continue on the next loop iteration.
        self._schedule_drain()

    def read_now(self) -> None:
        """Take a batch of waiting messages now, not when the loop next polls (unless
        paused or closed)."""
        self._drain()

    def read_waiting(self) -> None:
        """Hand on every message waiting in the socket now, not only a batch: for an
        owner about to give up on an answer that may be among them."""
        batch, self._batch = self._batch, 1 << 30
        try:
            self._drain()
        finally:
            self._batch = batch

    def pause_reading(self) -> None:
        """Stop taking messages off the socket (ZeroMQ's queues then push back)."""
        if self._on_message is not None and not self._closed and not self._paused:
            self._paused = True
            self._loop.remove_reader(self.sock.FD)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading` and drain what queued meanwhile."""
        if self._on_message is not None and not self._closed and self._paused:
            self._paused = False
            self._loop.add_reader(self.sock.FD, self._drain)
            self._schedule_drain()

    # -- sending -----------------------------------------------------------------------

    def send_nowait(self, data: bytes) -> None:
        """Send one single-part message or raise ``zmq.Again``."""
        self.sock.send(data, _NOBLOCK)
        self._after_send()

    def send_multipart_nowait(self, parts: list[bytes]) -> None:
        """Send one multipart message or raise ``zmq.Again``.

        ZeroMQ queues multipart messages atomically: once the first part is taken, the
        rest is taken too, so a partial message can never be left behind.
        """
        send = self.sock.send
        for part in parts[:-1]:
            send(part, _SNDMORE_NOBLOCK)
        send(parts[-1], _NOBLOCK)
        self._after_send()

    def _after_send(self) -> None:
        # A send may consume the FD's edge for input that arrived meanwhile; without a
        # re-check a reply could sit in the socket until the next unrelated wake-up. The
        # first send since the last drain re-checks at once (one EVENTS read, ~2 µs): a
        # drain scheduled instead costs a loop iteration of its own, for each lone call
        # (≈ 18 µs of CPU in a gateway, measured). Further sends before the next drain
        # schedule one drain attempt: a burst of sends pays for it once.
        if self._on_message is None or self._scheduled or self._closed or self._paused:
            return
        if self._sent_since_drain:
            self._schedule_drain()
            return
        self._sent_since_drain = True
        if int(self.sock.get(_EVENTS)) & _POLLIN:
            self._schedule_drain()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def writable(self) -> bool:
        """True when a send would not raise ``zmq.Again`` right now."""
        events = int(self.sock.get(_EVENTS))
        if events & _POLLIN and self._on_message is not None:
            # Reading EVENTS may take the FD's edge for input that arrived meanwhile: a
            # sender polling for room (wait_writable) left its answers unread (QA: 9,074
            # of 10,000 calls out at once to another node, 504 after their deadline).
            self._schedule_drain()
        return bool(events & _POLLOUT)

    async def wait_writable(self, deadline: float, poll_s: float = 0.002) -> bool:
        """Wait until the socket can send, or until ``deadline`` (loop time); bounded poll.

        Only the rare path (a peer still connecting or restarting) waits here; the FD gives
        no reliable writability edge, so a short bounded poll is the honest tool.
        """
        while not self._closed:
            if self.writable():
                return True
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return False

    def close(self, linger_ms: int = 0) -> None:
        """Unregister from the loop and close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._on_message is not None and not self._paused:
            try:
                self._loop.remove_reader(self.sock.FD)
            except (ValueError, OSError, zmq.ZMQError):
                pass
        self.sock.close(linger=linger_ms)
