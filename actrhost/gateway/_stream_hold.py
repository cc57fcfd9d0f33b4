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

The other node's gateway may also say that one of its actors takes frames too slowly
(``full``, then ``room``; docs/gateway.md, Backpressure): then that target's frames are
kept, in a queue of their own, while the node's other actors get theirs. Before, a slow
actor filled the link's window and every stream to its node waited with it.

Once no connection to the node is full, its frames go on, oldest first, until one is
full again. A full connection that fails keeps the node's frames held until the next one
to that node connects: released into each reconnect attempt's queue, they went on into
memory with every failed attempt while the senders were told they went (QA: 5 MB/s for
the 60 s reconnect window after the other node was killed).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from .._envelope import StreamFrame
from .._ids import ActrId

_Queue = deque[tuple[StreamFrame, bytes]]

#: Kept frames sent on per loop turn, the rest in the next ones: each costs its read from
#: a ring and its encoding (tens of µs), and tens of thousands of small chunks released
#: at once blocked the gateway's loop for seconds, past the link's keepalive (QA).
RELEASED_PER_TURN = 1000


def no_longer_full(
    full: dict[str, set[object]], node_id: str, connection: object, now_full: bool
) -> bool:
    """Note in ``full`` (per node, its connections whose lane is full) that ``connection``
    to ``node_id`` is full (``now_full``) or no longer; True when that leaves the node
    with no full connection (an old one may report room after its successor said full)."""
    if now_full:
        full.setdefault(node_id, set()).add(connection)
        return False
    connections = full.get(node_id)
    if connections is None or connection not in connections:
        return False
    connections.discard(connection)
    if connections:
        return False
    del full[node_id]
    return True


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
        self._held: dict[str, _Queue] = {}
        #: Per target, its node and the connections whose other side said it is slow.
        self._target_full: dict[ActrId, tuple[str, set[object]]] = {}
        #: Per target, its node and the frames kept for it alone (newer than any frame for
        #: it in its node's queue: a target's frames never overtake each other).
        self._target_held: dict[ActrId, tuple[str, _Queue]] = {}
        self.inline_bytes = 0
        self._paused = False
        #: Nodes (their ids) and targets whose frames go on at the next loop turn.
        self._release_due: set[str | ActrId] = set()

    @property
    def frames(self) -> int:
        """Frames kept now, all nodes together."""
        nodes = sum(len(held) for held in self._held.values())
        return nodes + sum(len(held) for _, held in self._target_held.values())

    def holds(self, node_id: str, target: ActrId | None = None) -> bool:
        """Whether a reliable stream frame for ``target`` on ``node_id`` must be kept here:
        the link or the target is full, or older frames wait here (nothing overtakes them)."""
        return (
            target in self._target_full or target in self._target_held or self._node_holds(node_id)
        )

    def _node_holds(self, node_id: str) -> bool:
        return node_id in self._full or node_id in self._down or node_id in self._held

    def hold(self, node_id: str, frame: StreamFrame, data: bytes) -> None:
        """Keep ``frame`` (``data``: its bytes as they came) until its target and
        ``node_id`` have room."""
        target = frame.target
        if target is not None and (target in self._target_full or target in self._target_held):
            self._target_held.setdefault(target, (node_id, deque()))[1].append((frame, data))
        else:
            self._held.setdefault(node_id, deque()).append((frame, data))
        if not frame.shm:
            self.inline_bytes += len(data)
            if self.inline_bytes > self._inline_max_bytes and not self._paused:
                self._paused = True
                self._pause_socket(True)

    def take(self, node_id: str, frames: Iterable[tuple[StreamFrame, bytes]]) -> None:
        """Frames kept while ``node_id`` was being located (their rings kept): they go on
        behind any kept for it already, as its link takes them."""
        for frame, data in frames:
            self.hold(node_id, frame, data)
        self._release_soon(node_id)

    def link_full(self, node_id: str, connection: object, full: bool, connected: bool) -> None:
        """A connection to ``node_id`` says its stream lane is full, or no longer: it has
        room again (``connected``), or it ended."""
        if not no_longer_full(self._full, node_id, connection, full):
            return
        if connected:
            self._release_soon(node_id)
        else:
            self._down.add(node_id)

    def target_full(self, node_id: str, target: ActrId, connection: object) -> None:
        """The other side of ``connection`` says ``target`` (on ``node_id``) takes its
        frames too slowly: keep them until it says there is room."""
        self._target_full.setdefault(target, (node_id, set()))[1].add(connection)

    def target_room(self, target: ActrId, connection: object) -> None:
        """The other side of ``connection`` says ``target`` keeps up again."""
        entry = self._target_full.get(target)
        if entry is None or connection not in entry[1]:
            return
        entry[1].discard(connection)
        if not entry[1]:
            del self._target_full[target]
            self._release_soon(target)

    def link_ended(self, connection: object) -> None:
        """``connection`` closed or failed: what its other side said of its actors is
        void (the next connection's side says it again if still true)."""
        for target in [t for t, (_, conns) in self._target_full.items() if connection in conns]:
            self.target_room(target, connection)

    def link_up(self, node_id: str) -> None:
        """A connection to ``node_id`` connected: what waited for it goes on."""
        if node_id in self._down:
            self._down.discard(node_id)
            self._release_soon(node_id)

    def forget(self, node_id: str) -> None:
        """``node_id`` was given up: its frames go on as for a node not known (located
        afresh, or dropped and counted)."""
        self._full.pop(node_id, None)
        self._down.discard(node_id)
        for target in [t for t, (node, _) in self._target_full.items() if node == node_id]:
            del self._target_full[target]
        for target in [t for t, (node, _) in self._target_held.items() if node == node_id]:
            self._release_soon(target)
        self._release_soon(node_id)

    def _release_soon(self, key: str | ActrId) -> None:
        """Send on the frames kept for a node (its id) or a target, from the next loop
        turn on (not from inside a connection's own sender: a frame sent at once there
        could overtake the one it is taking off its lane)."""
        if key not in self._release_due:
            self._release_due.add(key)
            self._loop.call_soon(self._release_due_now, key)

    def _release_due_now(self, key: str | ActrId) -> None:
        self._release_due.discard(key)
        if isinstance(key, ActrId):
            self._release_target(key)
        else:
            self._release(key)

    def _release(self, node_id: str) -> None:
        held = self._held.get(node_id)
        budget = RELEASED_PER_TURN
        while held and node_id not in self._full and node_id not in self._down:
            if not budget:
                self._release_soon(node_id)
                return
            budget -= 1
            self._send_on(*held.popleft())
        if held is not None and not held and self._held.get(node_id) is held:
            del self._held[node_id]
        self._resume_socket()

    def _release_target(self, target: ActrId) -> None:
        entry = self._target_held.get(target)
        if entry is None:
            return
        node_id, held = entry
        budget = RELEASED_PER_TURN
        while held and target not in self._target_full:
            if not budget:
                self._release_soon(target)
                return
            budget -= 1
            frame, data = held.popleft()
            if self._node_holds(node_id):  # behind the node's own (then older) frames
                self._held.setdefault(node_id, deque()).append((frame, data))
            else:
                self._send_on(frame, data)
        if not held and self._target_held.get(target) is entry:
            del self._target_held[target]
        self._resume_socket()

    def _send_on(self, frame: StreamFrame, data: bytes) -> None:
        if not frame.shm:
            self.inline_bytes -= len(data)
        self._send(frame, data)

    def _resume_socket(self) -> None:
        if self._paused and self.inline_bytes <= self._inline_max_bytes // 2:
            self._paused = False
            self._pause_socket(False)
