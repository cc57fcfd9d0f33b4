"""Calls, tells and stream frames for a node this gateway knows: onto its link, or into
the hold for a node whose link is full (``_call_hold``), or refused for a node that is
reconnecting and has ``Tuning.reconnect_queue_bytes`` waiting already (docs/gateway.md,
Backpressure). A mixin of :class:`~._gateway.Gateway`, beside ``_outbound``, which
decides where a worker's frame goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .._errors import ActrError, Unavailable
from .._ids import ActrId
from ._call_hold import CallHold, Held
from ._outbound import _OutCall
from ._peer import PeerConnection
from ._remote import RemoteNode
from ._types import CALLS, RPC_LANES, LinkState, Tuning


class ToNodes:
    """Mixin of :class:`~._gateway.Gateway`: frames for a known node onto its link."""

    # Set up by Gateway.__init__.
    tuning: Tuning
    _loop: asyncio.AbstractEventLoop
    _nodes: dict[str, RemoteNode]
    _given_up: dict[str, str]  # (_nodes)
    _pending_out: dict[str, _OutCall]
    _refusing: set[PeerConnection]  # Gateway._on_link_pressure
    _call_hold: CallHold
    _send_link: Callable[[PeerConnection, int, bytes], None]
    _fail_out: Callable[[str, ActrError], None]  # _outbound
    _notify_sender: Callable[[ActrId | None, ActrId, ActrError, bytes], None]  # _notices
    _to_actor: Callable[[ActrId, int, bytes, str, ActrId | None, bytes], None]  # _outbound

    def _to_node(
        self,
        node_id: str,
        lane: int,
        frame: bytes,
        request_id: str,
        source: ActrId | None = None,
        target: ActrId | None = None,
        sender: bytes = b"",
    ) -> None:
        """A frame for ``node_id`` (``sender``: the routing id of the connection it came
        on, told to wait if it is kept)."""
        call = self._pending_out.get(request_id) if request_id else None
        if call is not None:
            call.node = node_id  # failed with its node's link, even while kept
        if lane in RPC_LANES and self._call_hold.holds(node_id):
            held = Held(lane, frame, request_id, source, target, sender)
            self._call_hold.hold(node_id, held)
            return
        self._to_link(self._nodes[node_id], lane, frame, request_id, source, target, sender)

    def _send_held_call(self, node_id: str, item: Held) -> None:
        """A call or tell the hold kept goes on: to its node, or located afresh if the
        node was given up meanwhile. A call already answered (its link failed, or it
        expired) stays here: it must not run after its caller was told it failed."""
        if item.request_id and item.request_id not in self._pending_out:
            return
        lane, frame, request_id, source, target, sender = item
        node = self._nodes.get(node_id)
        if node is not None:
            self._to_link(node, lane, frame, request_id, source, target, sender)
        elif target is not None:
            self._to_actor(target, lane, frame, request_id, source, sender)

    def _to_link(
        self,
        node: RemoteNode,
        lane: int,
        frame: bytes,
        request_id: str,
        source: ActrId | None,
        target: ActrId | None,
        sender: bytes = b"",
    ) -> None:
        pc = node.connection()
        if lane in RPC_LANES and self._refuses(pc):
            self._refuse_for_down_node(node, lane, request_id, source, target, sender)
            return
        if request_id and request_id in self._pending_out and self._down_because(node):
            # It waits in the next attempt, for a while only: on a link that stays down an
            # attempt takes connect_timeout_s (10 s) to fail.
            self._loop.call_later(
                self.tuning.reconnect_call_wait_s,
                self._stop_waiting,
                request_id,
                node,
                lane,
                frame,
            )
        self._send_link(pc, lane, frame)

    def _refuses(self, pc: PeerConnection | None) -> bool:
        """Whether calls and tells for ``pc``'s node are refused: its link failed, and
        ``pc``, the next attempt, holds ``Tuning.reconnect_queue_bytes`` of them."""
        return (
            pc in self._refusing
            and pc is not None
            and pc.queued_bytes_from(CALLS) >= self.tuning.reconnect_queue_bytes
        )

    def _refuse_for_down_node(
        self,
        node: RemoteNode,
        lane: int,
        request_id: str,
        source: ActrId | None,
        target: ActrId | None,
        sender: bytes,
    ) -> None:
        """A call or tell for ``node``, whose link failed and whose next connection's RPC
        lanes hold ``Tuning.reconnect_queue_bytes``: a call fails with 503 now (counted
        ``failed_calls``), a tell is dropped, counted in its lane's ``dropped``, and its
        sender told (its next tells to ``target`` raise it for a while, as for a target
        that is gone; module ``actrhost._undeliverable``)."""
        error = Unavailable(
            f"node {node.node_id} is reconnecting after its link failed "
            f"({node.reconnecting_because()}) and "
            f"{self.tuning.reconnect_queue_bytes // 1024:,} KiB wait for it already"
        )
        if request_id:
            self._fail_out(request_id, error)
            return
        node.counters.by_lane[lane].dropped += 1
        if target is not None:
            self._notify_sender(source, target, error, sender)

    def _down_because(self, node: RemoteNode) -> str:
        """Why ``node``'s link is down while a connection is being tried: it failed and is
        reconnecting, or it was given up on and found again since (QA: a call then
        waited for the whole attempt, 10 s, on a link still down); "" otherwise."""
        why = node.reconnecting_because()
        if not why and node.state is not LinkState.CONNECTED:
            why = self._given_up.get(node.node_id, "")
        return why

    def _stop_waiting(self, request_id: str, node: RemoteNode, lane: int, frame: bytes) -> None:
        """A call that waited ``reconnect_call_wait_s`` for a link still down fails with
        503, as a call to a local instance that is restarting does, if its frame can be
        taken back unsent: a call must not run after its caller was told it failed. (Moved
        into a batch by a connection that replaced the attempt, it waits for that one.)"""
        down = self._down_because(node)
        if not down or request_id not in self._pending_out:
            return
        if node.pc is None or not node.pc.withdraw(lane, frame):
            return
        waited = self.tuning.reconnect_call_wait_s
        state = "is reconnecting after its link failed" if node.reconnecting_because() else "was"
        error = Unavailable(
            f"node {node.node_id} {state} ({down}): no connection within {waited:g} s"
        )
        self._fail_out(request_id, error)
