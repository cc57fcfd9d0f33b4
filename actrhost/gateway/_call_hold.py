"""Calls and tells for a node whose link is full, kept in order until it has room.

Workers send every call and tell for other nodes to one gateway socket. When a link's
RPC lanes were full (more than ``Tuning.queue_high_bytes`` queued: a slow path, a peer
that stopped reading), the gateway stopped reading that socket, and every call and tell
of this node to *any* node stopped with it: ZeroMQ pauses a socket, not a peer. Now the
gateway keeps reading and keeps that one node's calls and tells here, in order, and tells
each sender to wait, on the connection its frames came on (a worker's or a Shell's; module
``actrhost._held_targets``): its next calls and tells to that target wait before they
are sent, as for a busy local actor, so what waits here is what was already on its way.
Calls and tells to other nodes go on.

Past ``max_bytes`` kept here (all nodes together), plus what the senders told to wait may
still have on their way (``SenderWaits.room_bytes``), the socket is paused after all;
that bounds the memory. Once no connection to the node is full, its frames go on, oldest
first, until one is full again; then the senders told to wait are told there is room. A
full connection that ends releases its frames too, into the next connection (module
``_outbound``, where a node that is reconnecting takes ``Tuning.reconnect_queue_bytes``
and refuses the rest).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .._ids import ActrId
from ._sender_waits import SenderWaits
from ._stream_hold import no_longer_full

#: Kept frames sent on per loop turn, the rest in the next ones (as ``_stream_hold``).
RELEASED_PER_TURN = 1000


class Held(NamedTuple):
    """A call or tell kept for its node: its lane, its bytes, its request id ("" for a
    tell), its source actor (none for a Shell's) and target, and the routing id of the
    connection it came on (told to wait, and that there is room)."""

    lane: int
    frame: bytes
    request_id: str
    source: ActrId | None
    target: ActrId | None
    sender: bytes


class CallHold:
    """Per remote node: whether its RPC lanes are full, and the calls and tells kept."""

    def __init__(
        self,
        send: Callable[[str, Held], None],
        pause_socket: Callable[[bool], None],
        tell_sender: Callable[[bytes, ActrId, bool], None],
        max_bytes: int,
    ) -> None:
        #: Sends a kept frame on to its node (the gateway's ``_to_node``, past this hold).
        self._send = send
        #: Stops (True) or resumes (False) the reading of the workers' calls socket.
        self._pause_socket = pause_socket
        #: The senders told to wait for a node's targets (by a connection's routing id).
        self._waits = SenderWaits(tell_sender)
        self._max_bytes = max_bytes
        self._loop = asyncio.get_running_loop()
        #: Per node, its connections whose RPC lanes are full.
        self._full: dict[str, set[object]] = {}
        self._held: dict[str, deque[Held]] = {}
        self.held_bytes = 0
        self._paused = False
        self._release_due: set[str] = set()

    @property
    def frames(self) -> int:
        """Frames kept now, all nodes together."""
        return sum(len(held) for held in self._held.values())

    def holds(self, node_id: str) -> bool:
        """Whether a call or tell for ``node_id`` must be kept: its link is full, or
        older ones wait here (nothing overtakes them)."""
        return node_id in self._full or node_id in self._held

    def hold(self, node_id: str, item: Held) -> None:
        """Keep ``item`` until ``node_id`` has room; tell its sender to wait."""
        self._held.setdefault(node_id, deque()).append(item)
        self.held_bytes += len(item.frame)
        self._waits.wait(node_id, item.sender, item.target)
        if self.held_bytes > self._max_bytes + self._waits.room_bytes() and not self._paused:
            self._paused = True
            self._pause_socket(True)

    def link_full(self, node_id: str, connection: object, full: bool) -> None:
        """A connection to ``node_id`` says its RPC lanes are full, or no longer (it has
        room again, or it ended)."""
        if no_longer_full(self._full, node_id, connection, full):
            self._release_soon(node_id)

    def forget(self, node_id: str) -> None:
        """``node_id`` was given up: its frames go on as for a node not known."""
        self._full.pop(node_id, None)
        self._release_soon(node_id)

    def _release_soon(self, node_id: str) -> None:
        """Send on the frames kept for ``node_id`` from the next loop turn on (not from
        inside a connection's own sender, which is taking a frame off its lane)."""
        if node_id not in self._release_due:
            self._release_due.add(node_id)
            self._loop.call_soon(self._release, node_id)

    def _release(self, node_id: str) -> None:
        self._release_due.discard(node_id)
        held = self._held.get(node_id)
        budget = RELEASED_PER_TURN
        while held and node_id not in self._full:
            if not budget:
                self._release_soon(node_id)
                return
            budget -= 1
            item = held.popleft()
            self.held_bytes -= len(item.frame)
            self._send(node_id, item)
        if held is not None and not held and self._held.get(node_id) is held:
            del self._held[node_id]
        if not self.holds(node_id):
            self._waits.end(node_id)
        if self._paused and self.held_bytes <= self._max_bytes // 2:
            self._paused = False
            self._pause_socket(False)
