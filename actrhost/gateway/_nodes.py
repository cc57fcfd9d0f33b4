"""The table of remote nodes and what signaling relays about them (a mixin of the
gateway): one :class:`~._remote.RemoteNode` per node we talk to, the node of each remote
actor we learned, the relays that negotiate a connection to a node (through any pair of
our actor and one of its actors that the server lets through), and the relays other
nodes send us: locates, offers and answers, each offer or answer proved by the sending
node's certificate.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from aiortc import RTCCertificate

from .._config import Config
from .._errors import ActrError, NotFound, PermissionDenied, Unavailable
from .._ids import ActrId
from .._rpc_receiving import worth_logging
from ..signaling import RelayMessage, RoleAssignment, RoleNegotiation, SdpAnswer, SdpOffer
from . import _sctp_packets
from ._call_hold import CallHold
from ._carry import Carried, frames_of
from ._counters import GatewayCounters
from ._identity import sdp_proves_node
from ._inbound import _InCall
from ._locates import _Locate
from ._outbound import _OutCall
from ._peer import Callbacks, PeerConnection, close_in_background
from ._remote import RemoteNode, parse_session, session_id
from ._stream_hold import StreamHold
from ._types import TERMINAL, LinkState, Tuning

log = logging.getLogger(__name__)

#: Other actor pairs a negotiation tries when every known pair is refused (an ACL edit).
EXTRA_PAIRS_TRIED = 8
#: Calls from other nodes whose link failed before our actor answered, kept to count
#: their answers as undeliverable: the newest this many.
CALLERS_LOST_KEPT = 4096
#: Nodes given up on (unreachable through the reconnect window), the newest this many,
#: remembered until they connect again.
GIVEN_UP_KEPT = 1024


class Nodes:
    """Mixin of :class:`~._gateway.Gateway`: remote nodes and signaling relays."""

    # Set up by Gateway.__init__.
    config: Config
    node_id: str
    tuning: Tuning
    certificate: RTCCertificate
    counters: GatewayCounters
    _callbacks: Callbacks
    _regs: dict[ActrId, Any]
    _nodes: dict[str, RemoteNode]
    _node_of: dict[ActrId, str]
    _to_signaling: dict[ActrId, ActrId]  # Gateway._refresh_aliases
    _locating: dict[ActrId, _Locate]
    _pending_out: dict[str, _OutCall]
    _pending_in: dict[str, _InCall]
    _callers_lost: OrderedDict[str, None]
    _given_up: dict[str, str]  # node id -> why
    _spawn: Callable[[Any], None]
    _fail_out: Callable[[str, ActrError], None]
    _introduced: Callable[[str, ActrId], None]
    _failed_call_reports: int  # connections that failed with calls pending
    _stream_hold: StreamHold
    _call_hold: CallHold
    _refusing_link_up: Callable[[PeerConnection], None]  # Gateway
    _tell_senders_of_dropped: Callable[[Iterable[bytes], ActrError], None]  # _notices

    def _remote(self, node_id: str) -> RemoteNode:
        node = self._nodes.get(node_id)
        if node is None:
            node = RemoteNode(
                self.node_id,
                node_id,
                webrtc=self.config.webrtc,
                tuning=self.tuning,
                certificate=self.certificate,
                callbacks=self._callbacks,
                relay=self._relay_to_node,
                on_state=self._on_node_state,
                on_given_up=self._forget_node,
            )
            self._nodes[node_id] = node
        return node

    def _forget_node(self, node: RemoteNode, dropped: list[Carried]) -> None:
        """Drop a node that stayed unreachable (or stopped): its entry, its actors'
        routes, its counters; tell the senders of the tells and stream chunks that
        waited for it (``dropped``). Traffic for one of its actors later locates it
        afresh."""
        if self._nodes.get(node.node_id) is not node:
            return
        del self._nodes[node.node_id]
        if node.gave_up_because:  # (until it connects again: _to_nodes._down_because)
            self._given_up[node.node_id] = node.gave_up_because
            while len(self._given_up) > GIVEN_UP_KEPT:
                del self._given_up[next(iter(self._given_up))]
        for actor in [a for a, n in self._node_of.items() if n == node.node_id]:
            del self._node_of[actor]
        self._stream_hold.forget(node.node_id)
        self._call_hold.forget(node.node_id)
        close_in_background(node.close())  # RemoteNode logged why
        if dropped:
            # (Before, their senders went on as if they had been delivered.)
            error = Unavailable(
                f"node {node.name or node.node_id} stayed unreachable for "
                f"{self.tuning.reconnect_for_s:g} s: what waited for it was dropped"
            )
            self._tell_senders_of_dropped(
                (frame for item in dropped for frame in frames_of(item)), error
            )

    def _learn(
        self, remote_actor: ActrId, node_id: str, local_actor: ActrId | None = None
    ) -> RemoteNode:
        node = self._remote(node_id)
        self._node_of[remote_actor] = node_id
        node.actors.add(remote_actor)
        self._introduced(node_id, remote_actor)
        if local_actor is not None and local_actor in self._regs:
            node.add_pair(local_actor, remote_actor)
        return node

    async def _relay_to_node(
        self, node: RemoteNode, payload: Any, session: str
    ) -> RoleAssignment | None:
        # The other node answers (role, SDP answer) with a relay back to our actor of the
        # pair: only pairs whose local actor's ACL admits the remote one can carry it.
        regs = self._regs
        pairs = [
            (local, remote)
            for local, remote in node.pairs
            if local in regs and regs[local].admits(remote)
        ]
        if not pairs:
            for remote in list(node.actors)[:4]:
                local = next((i for i, r in self._regs.items() if r.admits(remote)), None)
                if local is not None:
                    pairs.append((local, remote))
        error: ActrError = Unavailable(f"no actor known on node {node.node_id} to relay through")
        for local, remote in pairs:
            reg = self._regs.get(local)
            if reg is None:
                continue
            try:
                return await reg.relay(remote, payload, session_id=session)
            except (NotFound, PermissionDenied) as exc:
                # Maybe not registered right now (its node restarting): try the next pair,
                # but keep this one; a restarted actor comes back with the same id.
                error = exc
        if isinstance(error, NotFound):
            # The pair tried is any actor of that node, not necessarily the one a call
            # is for: say that none of them answers, not that one of them is missing.
            raise NotFound(
                f"no actor of node {node.node_id} is registered with signaling now "
                f"({len(pairs)} tried; {error.message})"
            )
        if isinstance(error, PermissionDenied):
            # Every known pair is refused now (an ACL edit): another pair of actors may
            # pass, and a link through it serves every pair (each side still checks).
            others = [
                (local, remote)
                for remote in list(node.actors)[:EXTRA_PAIRS_TRIED]
                for local in list(self._regs)[:EXTRA_PAIRS_TRIED]
                if (local, remote) not in pairs and self._regs[local].admits(remote)
            ]
            for local, remote in others[:EXTRA_PAIRS_TRIED]:
                try:
                    result = await self._regs[local].relay(remote, payload, session_id=session)
                except (NotFound, PermissionDenied, KeyError):
                    continue
                node.add_pair(local, remote)
                return result
        raise error

    def _on_actors_left(self, actors: list[ActrId]) -> None:
        """Signaling saw the connection that held these actors close: their node's
        gateway may have died. Its link is probed, so pending calls fail within
        ``probe_timeout_s`` rather than at the keepalive timeout."""
        for node_id in {self._node_of[a] for a in actors if a in self._node_of}:
            node = self._nodes.get(node_id)
            if node is not None and node.pc is not None:
                node.pc.probe(f"node {node_id} left signaling")

    def _say_hello(self, pc: PeerConnection) -> None:
        """Tell the other node our name (node ids are random; the config's name is what
        `actrhost status` shows), which of our actors signaling now knows by a new id
        (a restarted server gave them new ones, ``Gateway._refresh_aliases``: the other
        node knew them by both, and counted each twice, QA), and that it may send us
        batches of stream frames (module _sending)."""
        aliases = [[str(worker), str(known)] for worker, known in self._to_signaling.items()]
        pc.send_control(
            {
                "op": "hello",
                "node_name": self.config.node.name,
                "aliases": aliases,
                "stream_batches": True,  # we unpack batches on the stream channel (_peer)
                # Whether we read SCTP packets larger than aiortc's (_sctp_packets).
                "sctp_packet_bytes": (
                    _sctp_packets.LARGE_PACKET_BYTES if _sctp_packets.installed() else None
                ),
            }
        )

    def _say_hello_to_all(self) -> None:
        for node in self._nodes.values():
            if node.pc is not None and node.pc.state is LinkState.CONNECTED:
                self._say_hello(node.pc)

    def _on_node_state(
        self, node: RemoteNode, pc: PeerConnection, state: LinkState, reason: str
    ) -> None:
        if state is LinkState.CONNECTED:
            self._given_up.pop(node.node_id, None)
            self._say_hello(pc)
            self._stream_hold.link_up(node.node_id)
            self._refusing_link_up(pc)
        if state not in TERMINAL:
            return
        self._stream_hold.link_ended(pc)
        # Every call waiting on this node fails now, not at its deadline: with 403 when
        # the other node's ACLs refused the link (an ACL tightened while we were linked:
        # a 503 said "retry" for the 60 s of reconnect attempts, QA), else 503.
        if pc.denied:
            error: ActrError = PermissionDenied(f"no link to node {node.node_id}: {reason}")
        else:
            error = Unavailable(f"connection to node {node.node_id} lost: {reason}")
        failed = [rid for rid, call in self._pending_out.items() if call.node == node.node_id]
        for request_id in failed:
            self._fail_out(request_id, error)
        for local_id in [lid for lid, call in self._pending_in.items() if call.pc is pc]:
            self._pending_in.pop(local_id).timer.cancel()
            # Its answer, when it comes, has no caller: counted so, not as late (QA).
            self._callers_lost[local_id] = None
            if len(self._callers_lost) > CALLERS_LOST_KEPT:
                self._callers_lost.popitem(last=False)
        if failed:
            self._failed_call_reports += 1
            # Each reconnect attempt with calls waiting fails them: budgeted (QA: a line
            # every 0.2 s while the other node's actors were not registered).
            if worth_logging(self._failed_call_reports):
                log.info(
                    "%r: failed %d pending calls to node %s: %s (#%d)",
                    self,
                    len(failed),
                    node.node_id,
                    reason,
                    self._failed_call_reports,
                )

    async def _on_relay(self, message: RelayMessage) -> None:
        parsed = parse_session(message.session_id)
        if parsed is None or message.target not in self._regs:
            self.counters.bad_relays += 1
            return
        kind, first, second = parsed
        payload = message.payload
        if kind == "neg" and isinstance(payload, RoleAssignment) and first != self.node_id:
            node = self._learn(message.source, first, message.target)
            node.ensure(payload.is_offerer)
            locate = self._locating.get(message.source)
            if locate is not None and not locate.found.done():
                locate.found.set_result(first)
            if not second:
                # A locate: tell the asking node where the target lives.
                reply = session_id("neg", self.node_id, first)
                reg = self._regs[message.target]
                self._spawn(self._relay_quietly(reg, message.source, RoleNegotiation(), reply))
        elif kind == "pc" and isinstance(payload, SdpOffer) and second == self.node_id:
            if self._proves(payload.sdp, first, message.source):
                node = self._learn(message.source, first, message.target)
                self._spawn(node.on_offer(payload.sdp, message.session_id))
        elif kind == "pc" and isinstance(payload, SdpAnswer) and first == self.node_id:
            if self._proves(payload.sdp, second, message.source):
                node = self._learn(message.source, second, message.target)
                self._spawn(node.on_answer(payload.sdp, message.session_id))
        else:
            self.counters.bad_relays += 1

    def _proves(self, sdp: str, node_id: str, source: ActrId) -> bool:
        """Whether an offer or answer in the name of ``node_id`` carries that node's
        certificate (``_identity.py``); if not, it is refused before it can touch the
        connection to the real node."""
        if sdp_proves_node(sdp, node_id):
            return True
        self.counters.unproven_sdp += 1
        if self.counters.unproven_sdp <= 5 or self.counters.unproven_sdp % 100 == 0:
            log.warning(
                "%r: refused an SDP from %s in the name of node %s: its certificate is "
                "not that node's (%d so far)",
                self,
                source,
                node_id,
                self.counters.unproven_sdp,
            )
        return False

    async def _relay_quietly(self, reg: Any, target: ActrId, payload: Any, session: str) -> None:
        try:
            await reg.relay(target, payload, session_id=session)
        except ActrError as exc:
            log.info("%r: relay to %s failed: %s", self, target, exc)
