"""Received datagrams handled in the socket callback that got them (gateway process only).

aiortc's DTLS transport reads its datagrams in a task of its own: aioice's
``Connection.data_received`` puts each one in an ``asyncio.Queue`` and the task's
``_recv_next`` picks it up on the *next* event-loop turn, after a future, a wake-up and a
task step. On a small machine a remote call's latency is mostly CPU, and each call
crosses that hand-over twice (the request at the callee's gateway, the answer at the
caller's). Here, once a connection is up, a datagram that finds that task idle is
handled at once: ``_recv_next`` runs in the socket callback, reading the datagram we give
it instead of the queue, the way the task would have (decryption, SCTP, the data
channel's message event). The task stays parked on the empty queue.

Order is kept: a datagram is handled eagerly only when the queue is empty and the task
waits on it; while an eager one is still being handled (it may suspend, e.g. over a TURN
relay), the next ones wait behind it in our own backlog. An error ends the connection's
reading the way aiortc's task ends it: the task is woken with aioice's "connection lost".

:func:`install` patches aioice's ``Connection.data_received``; :func:`take_over` turns the
fast path on for one peer connection (the gateway calls it when all channels are open).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ._aiortc_parts import require
from ._sctp import run_eagerly

log = logging.getLogger(__name__)

_installed = False
_ATTRIBUTE = "_actrhost_eager_dtls"


class _EagerReader:
    """The fast path of one aioice connection: its DTLS transport and our backlog."""

    __slots__ = ("backlog", "busy", "connection", "dtls", "given")

    def __init__(self, connection: Any, dtls: Any) -> None:
        self.connection = connection
        self.dtls = dtls
        #: The datagram ``_recv_next`` is about to read (see :meth:`_recv`).
        self.given: bytes | None = None
        #: True while an eager ``_recv_next`` runs (or was suspended and goes on).
        self.busy = False
        #: Datagrams that came while ``busy``: handled next, in order.
        self.backlog: deque[bytes] = deque()

    def can_take(self) -> bool:
        """True when aiortc's own task waits on an empty queue (nothing ahead of us)."""
        queue = self.connection._queue
        return queue.empty() and bool(queue._getters)

    async def _recv(self) -> bytes:
        # Replaces RTCIceTransport._recv: an eager run reads its datagram here without
        # suspending; aiortc's task (given None) waits on aioice's queue as before.
        given, self.given = self.given, None
        if given is not None:
            return given
        data: bytes = await self.connection.recv()
        return data

    async def handle(self, data: bytes) -> None:
        """Run ``_recv_next`` for ``data``, then for whatever queued behind it."""
        try:
            while True:
                self.given = data
                await self.dtls._recv_next()
                if not self.backlog:
                    return
                data = self.backlog.popleft()
        except Exception as exc:
            # aiortc's task would have ended here: make it end the same way.
            if not isinstance(exc, ConnectionError):
                log.warning("DTLS receive failed: %r", exc)
            self.backlog.clear()
            self.connection._queue.put_nowait(None)
            setattr(self.connection, _ATTRIBUTE, None)
        finally:
            self.given = None
            self.busy = False


def install() -> None:
    """Patch aioice's ``Connection.data_received`` in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from aioice import ice
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    require(
        "aiortc, aioice or asyncio changed",
        (ice.Connection, ("data_received", "recv")),
        (RTCDtlsTransport, ("_recv_next",)),
        (asyncio.Queue(), ("_getters",)),
    )
    original = ice.Connection.data_received

    def data_received(self: Any, data: bytes, component: int) -> None:
        reader: _EagerReader | None = self.__dict__.get(_ATTRIBUTE)
        if reader is None:
            original(self, data, component)
        elif reader.busy:
            reader.backlog.append(data)
        elif reader.can_take():
            reader.busy = True
            run_eagerly(reader.handle(data))
        else:
            original(self, data, component)

    ice.Connection.data_received = data_received  # type: ignore[method-assign]
    _installed = True


def take_over(pc: Any) -> bool:
    """Handle ``pc``'s data-channel datagrams eagerly from now on; False when not
    installed or the transports are not as expected (then aiortc's way goes on)."""
    if not _installed:
        return False
    dtls, ice_transport, connection = _transports(pc)
    # aiortc reads with a timeout until the handshake is done (DTLS retransmissions).
    handshake_done = getattr(dtls, "_RTCDtlsTransport__handshake_done", False)
    if connection is None or not handshake_done or _ATTRIBUTE in connection.__dict__:
        log.debug("received datagrams stay with aiortc's task (%r)", connection)
        return False
    reader = _EagerReader(connection, dtls)
    ice_transport._recv = reader._recv
    setattr(connection, _ATTRIBUTE, reader)
    return True


def reader_of(pc: Any) -> _EagerReader | None:
    """The fast path of ``pc``'s data channels, or None (for tests)."""
    connection = _transports(pc)[2]
    return None if connection is None else connection.__dict__.get(_ATTRIBUTE)


def _transports(pc: Any) -> tuple[Any, Any, Any]:
    """The DTLS transport, ICE transport and aioice connection under ``pc``'s data
    channels (None for what is not there)."""
    dtls = getattr(getattr(pc, "sctp", None), "transport", None)
    ice_transport = getattr(dtls, "transport", None)
    return dtls, ice_transport, getattr(ice_transport, "_connection", None)
