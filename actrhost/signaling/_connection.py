"""The server's side of one client's WebSocket: its bounded send queue, the actors
registered on it, and the connections it relayed with."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from websockets.asyncio.server import ServerConnection

__all__ = ["Connection"]

log = logging.getLogger("actrhost.signaling._server")  # one logger for the server's lines


#: The counters :meth:`SignalingServer.stats` always has (docs/signaling.md, "Counters").
COUNTERS = (
    "connections_total",
    "registrations",
    "reregistrations_kept_id",
    "unregistrations",
    "pings",
    "credential_renewals",
    "discoveries",
    "relays",
    "presence_expired",
    "actors_left_notices",
    "malformed",
    "unauthorized",
    "forbidden",
    "oversized_frames",
    "slow_consumers_disconnected",
    "envelopes",
)


class Connection:
    """Server side of one WebSocket: its send queue, the actors registered on it, and
    the connections it exchanged relays with."""

    __slots__ = (
        "actors",
        "closed",
        "conn_id",
        "counters",
        "peer",
        "queue",
        "refusals",
        "relayed_with",
        "ws",
    )

    def __init__(
        self, ws: ServerConnection, conn_id: int, queue_slots: int, counters: Counter[str]
    ) -> None:
        self.ws = ws
        self.counters = counters
        self.conn_id = conn_id
        self.peer = "{}:{}".format(*ws.remote_address[:2]) if ws.remote_address else "?"
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_slots)
        self.actors: set[int] = set()
        #: Connections this one exchanged relays with: told when it closes (ActorsLeft).
        self.relayed_with: set[Connection] = set()
        self.closed = False
        self.refusals = 0

    def __repr__(self) -> str:
        return f"SignalingConnection({self.conn_id} {self.peer})"

    def send(self, frame: bytes) -> bool:
        """Queue a frame; on a full queue disconnect the peer and return False."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("%r: send queue full (peer not reading): disconnecting", self)
            self.counters["slow_consumers_disconnected"] += 1
            self.abort()
            return False
        return True

    def abort(self) -> None:
        """Drop the TCP connection at once (a close handshake would wait on the peer)."""
        self.closed = True
        self.ws.transport.abort()
