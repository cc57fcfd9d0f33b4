"""Who a frame from another node may say it comes from.

One connection carries every actor pair of two nodes, so the source id on a frame is
only the sending node's word. The signaling server is the authority: it authenticates
every relay with the sending actor's credential. A node therefore speaks for an actor
once a relay from that actor named the node (``Nodes._learn``): the actor has been
*introduced*. A frame from another source waits while we ask its node, over the link, to
introduce it (a relay from it); what is still not introduced after the wait is refused,
403. A frame without a source comes from a caller without an actor id (a Shell attached
to that node): only ACL rules without ``types`` admit it. docs/gateway.md, Trust.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from .._config import ActorConfig
from .._directory import ActorEntry, Directory
from .._envelope import Envelope, StreamFrame
from .._errors import ActrError, BadRequest, PermissionDenied
from .._ids import ActrId
from .._payload_type import PayloadType
from ..signaling import RoleNegotiation
from ._counters import GatewayCounters
from ._peer import PeerConnection
from ._remote import RemoteNode, session_id

log = logging.getLogger(__name__)

#: How long frames from an actor that its node has not introduced to us wait for the
#: introduction, which we ask that node for over the link (docs/gateway.md, Trust).
INTRODUCE_WAIT_S = 2.0
#: Introductions asked for and remembered (so as not to ask again within the wait).
MAX_INTRODUCTIONS_ASKED = 1024


def window_bounded(item: Envelope | StreamFrame) -> bool:
    """A reliable stream chunk: how many of those wait is bounded by their sender's
    end-to-end window (``Tuning.stream_window_bytes``), and refusing one would lose it
    from a stream that promises to lose nothing. Other frames wait up to ``hwm_messages``
    (per source or target), as a worker's socket would queue them."""
    return isinstance(item, StreamFrame) and item.payload_type == PayloadType.STREAM_RELIABLE


class Parked:
    """A frame from another node waiting: for its local target to finish starting
    (Inbound), or for its source to be introduced."""

    __slots__ = ("again", "through_restart", "timer")

    def __init__(self, again: Callable[[], None], through_restart: bool = False) -> None:
        self.again = again  # handles the frame again, without waiting: delivers or refuses
        self.timer: asyncio.TimerHandle | None = None
        #: Waits through a restart of its target too, not only through its start.
        self.through_restart = through_restart


def unpark_one(table: dict[Any, deque[Parked]], key: Any, parked: Parked) -> None:
    """Its wait is over: handle a parked frame again (it goes on or is refused)."""
    waiting = table.get(key)
    if waiting is None or parked not in waiting:
        return
    waiting.remove(parked)
    if not waiting:
        del table[key]
    parked.again()


class Trust:
    """Mixin of :class:`~._gateway.Gateway` (through Inbound): introductions and the
    checks on remote callers."""

    # Set up by Gateway.__init__.
    node_id: str
    counters: GatewayCounters
    _loop: asyncio.AbstractEventLoop
    _hwm: int
    _actor_configs: dict[str, ActorConfig]
    directory: Directory
    _regs: dict[ActrId, Any]
    _node_of: dict[ActrId, str]
    _nodes: dict[str, RemoteNode]
    _unintroduced: dict[tuple[str, ActrId], deque[Parked]]
    _introductions_asked: dict[tuple[str, ActrId], float]
    _introducing: set[tuple[ActrId, ActrId]]
    _spawn: Callable[[Any], None]

    def _check_remote_caller(
        self, entry: ActorEntry, source: ActrId | None, from_node: str
    ) -> None:
        """Raise PermissionDenied unless this caller on node ``from_node`` may reach ``entry``.

        A node speaks only for the actors it introduced through signaling: a relay from
        the actor, which the server authenticated with its credential, naming that node
        (``Nodes._learn``). Any other source id on its frames is forged or stale. No
        source id at all is a caller without an actor identity (a Shell attached to that
        node): only ACL rules without ``types`` admit it (docs/gateway.md, Trust).
        """
        actor = self._actor_configs.get(entry.name)
        own_realm = entry.actr_id.realm
        if source is None:
            if actor is not None and not actor.acl_allows(None, own_realm.realm_id):
                raise PermissionDenied(
                    f"{entry.actr_id} does not accept callers without an actor id "
                    f"(from node {self._node_text(from_node)})"
                )
            return
        # What the claimed id may not do, no introduction would allow: say that first.
        if source.realm != own_realm:
            raise PermissionDenied(f"realm {source.realm} may not reach {entry.actr_id}")
        if actor is not None and not actor.acl_allows(source.type, source.realm.realm_id):
            raise PermissionDenied(f"{source.type} may not call {entry.actr_id}")
        if self._node_of.get(source) != from_node:
            self.counters.unintroduced_sources += 1
            raise PermissionDenied(
                f"node {self._node_text(from_node)} did not introduce {source} through signaling"
            )

    def _refused_anyway(self, target: ActrId, source: ActrId) -> bool:
        """Whether ``target``'s realm or ACL refuses ``source``, genuine or not: then its
        frames need not wait for an introduction."""
        entry = self.directory.get(target)
        if entry is None:
            return False
        actor = self._actor_configs.get(entry.name)
        return source.realm != entry.actr_id.realm or (
            actor is not None and not actor.acl_allows(source.type, source.realm.realm_id)
        )

    def _node_text(self, node_id: str) -> str:
        node = self._nodes.get(node_id)
        return f"{node.name} ({node_id})" if node is not None and node.name else node_id

    def _wait_for_introduction(
        self, pc: PeerConnection, item: Envelope | StreamFrame, again: Callable[[], None]
    ) -> bool:
        """Keep a frame whose source ``pc``'s node has not introduced to us, and ask that
        node to; ``again`` runs once it did (``_introduced``) or after the wait. False:
        too many wait already; handle it now (it is refused)."""
        source, target = item.source, item.target
        if source is None or target is None:
            return False
        key = (pc.remote_node, source)
        waiting = self._unintroduced.get(key)
        if waiting is None:
            waiting = self._unintroduced[key] = deque()
        elif len(waiting) >= self._hwm and not window_bounded(item):
            return False
        self._ask_introduction(pc, source, target)
        wait_s = INTRODUCE_WAIT_S
        if isinstance(item, Envelope) and item.timeout_ms:
            wait_s = min(wait_s, item.timeout_ms / 1000)
        parked = Parked(again)
        table = self._unintroduced
        parked.timer = self._loop.call_later(wait_s, unpark_one, table, key, parked)
        waiting.append(parked)
        return True

    def _ask_introduction(self, pc: PeerConnection, source: ActrId, target: ActrId) -> None:
        """Ask ``pc``'s node to relay from ``source`` to ``target`` through signaling: the
        server authenticates the relay, so it proves that node hosts ``source``. Once per
        source and wait."""
        key = (pc.remote_node, source)
        now = self._loop.time()
        if now - self._introductions_asked.get(key, -INTRODUCE_WAIT_S) < INTRODUCE_WAIT_S:
            return
        if len(self._introductions_asked) >= MAX_INTRODUCTIONS_ASKED:
            for old_key, asked_at in list(self._introductions_asked.items()):
                if now - asked_at >= INTRODUCE_WAIT_S:
                    del self._introductions_asked[old_key]
        self._introductions_asked[key] = now
        pc.send_control({"op": "introduce", "source": str(source), "target": str(target)})

    def _introduced(self, node_id: str, actor: ActrId) -> None:
        """A relay from ``actor`` naming node ``node_id`` arrived (Nodes._learn): its
        frames that waited go on."""
        self._introductions_asked.pop((node_id, actor), None)
        for parked in self._unintroduced.pop((node_id, actor), ()):
            if parked.timer is not None:
                parked.timer.cancel()
            parked.again()

    def _introduce(self, pc: PeerConnection, message: dict[str, Any]) -> None:
        """The other node asks: introduce one of our actors to it (it has forgotten, or
        never heard of, who we host): a relay from that actor to one of its actors."""
        try:
            source = ActrId.parse(str(message.get("source")))
            target = ActrId.parse(str(message.get("target")))
        except BadRequest:
            pc.counters.malformed += 1
            return
        reg = self._regs.get(source)
        if reg is None or (source, target) in self._introducing:
            return  # not ours (the frame was refused rightly), or under way
        if self._node_of.get(target) != pc.remote_node:
            # Our frames went to that node only if it hosts the target: anything else
            # would have us relay (and maybe connect) wherever the asking node says.
            pc.counters.malformed += 1
            return
        self._introducing.add((source, target))
        self._spawn(self._relay_introduction(reg, source, target, pc.remote_node))

    async def _relay_introduction(
        self, reg: Any, source: ActrId, target: ActrId, node_id: str
    ) -> None:
        try:
            # Naming the target's node: a locate ("-") would be answered with a relay
            # back to ``source``, refused (and logged, twice) when its ACL does not admit
            # the target, and of no use here, where both nodes know each other.
            session = session_id("neg", self.node_id, node_id)
            await reg.relay(target, RoleNegotiation(), session_id=session)
        except ActrError as exc:
            log.info("%r: could not introduce %s to %s: %s", self, source, target, exc)
        finally:
            self._introducing.discard((source, target))
