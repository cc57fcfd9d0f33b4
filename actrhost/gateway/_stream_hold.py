"""Reliable stream frames for a node whose link is full, kept in order until it has room.

Workers send every stream frame for other nodes to one gateway socket. When a link's
stream lane was full (a slow receiver on that node, or a slow path), the gateway stopped
reading that socket, and every stream of this node to *any* node stopped with it: ZeroMQ
has no per-peer pause. Now the gateway keeps reading, and keeps the reliable frames for
that one node here, in order (docs/gateway.md, Backpressure):

* a frame whose payload is in a shared-memory ring (at or above ``[shm] threshold_bytes``)
  is kept as its descriptor, unread. Its record stays in the sender's ring for that
  target; the ring fills, and the sender waits for room there, as it would for a slow
  local receiver. Only the streams to that target wait.
* a frame sent inline is kept as it came. Past ``inline_max_bytes`` of those (all nodes
  together) the socket is paused after all: that bounds the memory. Workers send reliable
  chunks for other nodes through a ring whatever their size (``_stream_sender.py``), so
  inline ones come only from a process that does not know the gateway's pid yet.

Once no connection to the node is full, its frames go on, oldest first, until one is
full again. A full connection that fails keeps the node's frames held until the next one
to that node connects: released into each reconnect attempt's queue, they went on into
memory with every failed attempt while the senders were told they went (QA: 5 MB/s for
the 60 s reconnect window after the other node was killed).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .._envelope import StreamFrame


class StreamHold:
    """Per remote node: whether its link is full, and the frames kept for it meanwhile."""

    def __init__(
        self,
        send: Callable[[StreamFrame, bytes], None],
        pause_socket: Callable[[bool], None],
        inline_max_bytes: int,
    ) -> None:
        #: Sends a kept frame on (the gateway's ``_stream_out``, past this hold).
        self._send = send
        #: Stops (True) or resumes (False) the reading of the workers' streams socket.
        self._pause_socket = pause_socket
        self._inline_max_bytes = inline_max_bytes
        self._loop = asyncio.get_running_loop()
        #: Per node, its connections whose stream lane is full (an old one may report
        #: "room again" after its successor reported "full").
        self._full: dict[str, set[object]] = {}
        #: Nodes whose full connection failed: held until one connects (link_up).
        self._down: set[str] = set()
        #: Per node, the frames kept for it (the frame, and its bytes as they came).
        self._held: dict[str, deque[tuple[StreamFrame, bytes]]] = {}
        self.inline_bytes = 0
        self._paused = False

    @property
    def frames(self) -> int:
        """Frames kept now, all nodes together."""
        return sum(len(held) for held in self._held.values())

    def holds(self, node_id: str) -> bool:
        """Whether a reliable stream frame for ``node_id`` must be kept here: its link is
        full, or older frames for it wait here (nothing overtakes them)."""
        return node_id in self._full or node_id in self._down or node_id in self._held

    def hold(self, node_id: str, frame: StreamFrame, data: bytes) -> None:
        """Keep ``frame`` (``data``: its bytes as they came) until ``node_id`` has room."""
        self._held.setdefault(node_id, deque()).append((frame, data))
        if not frame.shm:
            self.inline_bytes += len(data)
            if self.inline_bytes > self._inline_max_bytes and not self._paused:
                self._paused = True
                self._pause_socket(True)

    def link_full(self, node_id: str, connection: object, full: bool, connected: bool) -> None:
        """A connection to ``node_id`` says its stream lane is full, or no longer: it has
        room again (``connected``), or it ended."""
        if full:
            self._full.setdefault(node_id, set()).add(connection)
            return
        connections = self._full.get(node_id)
        if connections is None or connection not in connections:
            return
        connections.discard(connection)
        if connections:
            return
        del self._full[node_id]
        if connected:
            # Not from inside the connection's own sender: a frame sent at once there could
            # overtake the one it is taking off its lane.
            self._loop.call_soon(self._release, node_id)
        else:
            self._down.add(node_id)

    def link_up(self, node_id: str) -> None:
        """A connection to ``node_id`` connected: what waited for it goes on."""
        if node_id in self._down:
            self._down.discard(node_id)
            self._loop.call_soon(self._release, node_id)

    def forget(self, node_id: str) -> None:
        """``node_id`` was given up: its frames go on as for a node not known (located
        afresh, or dropped and counted)."""
        self._full.pop(node_id, None)
        self._down.discard(node_id)
        self._loop.call_soon(self._release, node_id)

    def _release(self, node_id: str) -> None:
        held = self._held.get(node_id)
        while held and node_id not in self._full and node_id not in self._down:
            frame, data = held.popleft()
            if not frame.shm:
                self.inline_bytes -= len(data)
            self._send(frame, data)
        if held is not None and not held and self._held.get(node_id) is held:
            del self._held[node_id]
        if self._paused and self.inline_bytes <= self._inline_max_bytes // 2:
            self._paused = False
            self._pause_socket(False)
