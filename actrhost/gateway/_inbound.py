"""The gateway's inbound half: frames from other nodes to local workers, and answers.

A request from another node gets a fresh local deadline from its ``timeout_ms`` and a
request id of ours (two nodes may use the same ids), and goes to the worker through a
DEALER, like any caller's; the answer comes back on that DEALER and goes back over the
data channel it came from. Streams are handed over as they are; reliable ones are
acknowledged to the sender only once ZeroMQ took them (the end-to-end window).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any

from .. import _envelope as wire
from .._config import ActorConfig
from .._directory import ActorEntry, ActorState, Directory, gone_error
from .._envelope import MEDIA, REQUEST, RESPONSE, TELL, Envelope, StreamFrame
from .._errors import ActrError, BadRequest, HandlerError, NotFound, Unavailable
from .._ids import ActrId
from .._payload_type import PayloadType
from .._rpc import GRACEFUL_ANSWER_WAIT_S
from .._rpc_receiving import FEED_SYNC_ROUTE, worth_logging
from .._tell_origin import without_appended_origin
from . import _framing as framing
from ._carry import Receipt
from ._confirming import WindowShare
from ._counters import GatewayCounters
from ._expiry import Expiring, ExpiryWheel
from ._notices import Notices
from ._outbound import MAX_TIMEOUT_MS, NO_DEADLINE_S, _OutCall
from ._peer import PeerConnection
from ._remote import RemoteNode
from ._stream_hold import StreamHold
from ._to_workers import ToWorkers
from ._trust import Parked, Trust, unpark_one
from ._types import Tuning

log = logging.getLogger(__name__)

#: How long a tell from another node may wait for a local worker whose queue is full: as
#: long as a local sender's tell would (5 s). A call waits until its deadline, as a local
#: caller's does. (Both waited 1 s until 2026-12-03; then the tell was dropped, QA.)
TELL_WAIT_S = 5.0
#: How long a call, tell or reliable stream chunk from another node waits for a local
#: actor that is still starting (a request at most until its deadline). The gateway
#: registers the node's actors with signaling before their workers run, so other nodes
#: can discover them, and call, that early.
STARTING_WAIT_S = 10.0
#: Bytes of reliable stream chunks kept, in all, for local actors that restart,
#: acknowledged to their senders at once: held against the link's window they would stop
#: every stream to this node, and behind those the sending node's calls to any node (its
#: gateway stops reading its workers' socket). Some 4 s of a fast link. Chunks beyond it
#: are held against the window after all: nothing is lost, and the sending node waits.
RESTART_HELD_BYTES = 64 * 1024 * 1024


class _InCall:
    """A remote caller waiting for a local answer."""

    __slots__ = ("lane", "pc", "request_id", "target", "timer")

    def __init__(
        self,
        pc: PeerConnection,
        request_id: str,
        lane: int,
        timer: Expiring,
        target: ActrId | None,
    ) -> None:
        self.pc = pc
        self.request_id = request_id
        self.lane = lane
        self.timer = timer
        self.target = target


class Inbound(Trust, ToWorkers, Notices):
    """Mixin of :class:`~._gateway.Gateway`: remote node -> local worker."""

    # Set up by Gateway.__init__.
    node_id: str
    counters: GatewayCounters
    directory: Directory
    _loop: asyncio.AbstractEventLoop
    _hwm: int
    _actor_configs: dict[str, ActorConfig]
    _pending_in: dict[str, _InCall]
    _callers_lost: OrderedDict[str, None]  # (_nodes: their links failed)
    _in_expiry: ExpiryWheel
    _nodes: dict[str, RemoteNode]
    _node_of: dict[ActrId, str]
    _stream_hold: StreamHold
    _parked: dict[ActrId, deque[Parked]]
    _held_for_restart: dict[ActrId, int]  # bytes of acknowledged chunks parked, by target
    _regs: dict[ActrId, Any]
    _to_worker: dict[ActrId, ActrId]
    _pending_out: dict[str, _OutCall]
    _in_ids: itertools.count[int]
    _spawn: Callable[[Any], None]
    _send_router: Callable[[bytes, bytes], None]
    tuning: Tuning
    _send_link: Callable[[PeerConnection, int, bytes], None]
    _flush_links: Callable[[], None]
    _in_drain: bool

    def _on_link_control(self, pc: PeerConnection, message: dict[str, Any]) -> None:
        # The control messages the connection does not handle itself: "hello",
        # "introduce", "gone" (module _notices), and "full" and "room" (_to_workers).
        if message["op"] == "introduce":
            self._introduce(pc, message)
            return
        if message["op"] == "gone":
            self._on_gone(pc, message)
            return
        if message["op"] in ("full", "room"):
            self._target_pressure(pc, message)
            return
        name = message.get("node_name")
        node = self._nodes.get(pc.remote_node)
        aliases = _parse_aliases(message.get("aliases", []))
        if (
            message["op"] != "hello"
            or not isinstance(name, str)
            or not 0 < len(name) <= 64
            or not name.isprintable()  # shown by `actrhost status`: a newline forges a line
            or aliases is None
        ):
            pc.counters.malformed += 1
        else:
            pc.stream_batches = message.get("stream_batches") is True
            pc.peer_reads_packets(message.get("sctp_packet_bytes"))
            if node is not None:
                node.name = name
                node.aliases = aliases

    def _target_pressure(self, pc: PeerConnection, message: dict[str, Any]) -> None:
        """The other node's gateway says one of its actors takes our stream chunks too
        slowly ("full"), or keeps up again ("room"): only that actor's chunks wait."""
        text = message.get("t")
        try:
            target = ActrId.parse(text) if isinstance(text, str) else None
        except BadRequest:
            target = None
        if target is None or self._node_of.get(target) != pc.remote_node:
            pc.counters.malformed += 1  # (a node speaks for its own actors only)
        elif message["op"] == "full":
            self._stream_hold.target_full(pc.remote_node, target, pc)
        else:
            self._stream_hold.target_room(target, pc)

    def _on_link_frame(self, pc: PeerConnection, lane: int, data: bytes) -> None:
        try:
            item = wire.decode(data)
        except BadRequest as exc:
            pc.counters.malformed += 1
            if worth_logging(pc.counters.malformed):
                log.warning(
                    "%r: dropped a malformed frame from node %s (#%d): %s",
                    self,
                    pc.remote_node,
                    pc.counters.malformed,
                    exc.message,
                )
            return
        # By the channel it came on, as the other side counts what it sends: an answer to
        # a signal-lane call comes on that channel, but says reliable (QA: the two
        # nodes' `actrhost status` did not add up). Media bytes (not on a track) come on
        # the latency-first channel, and are counted as media_rtp, as their sender does.
        media = isinstance(item, StreamFrame) and item.kind == MEDIA
        counters = pc.counters.by_lane[PayloadType.MEDIA_RTP if media else lane]
        counters.frames_in += 1
        counters.bytes_in += len(data)
        if isinstance(item, Envelope) and item.direction == RESPONSE:
            call = self._pending_out.get(item.request_id)
            if call is None or call.node != pc.remote_node:
                # Late, or not from the node we asked (our ids are easy to guess).
                self.counters.late_responses += 1
                return
            del self._pending_out[item.request_id]
            call.timer.cancel()
            item.request_id = call.request_id
            self._send_router(call.routing_id, wire.reencode(item))
        else:
            # A tell or a reliable chunk is confirmed to its sender once its worker read it.
            receipt = window = None
            if isinstance(item, Envelope):
                if item.direction == TELL:
                    receipt = pc.receipt(wire.tell_origin(item), self._instance_of(item.target))
            elif lane == PayloadType.STREAM_RELIABLE:
                window = WindowShare(pc, len(data))  # as it came (WindowShare)
                receipt = pc.receipt(item.origin, self._instance_of(item.target))
                if item.origin is not None:  # the receipt says where it came from
                    data = without_appended_origin(data)
            self._from_node(pc, lane, item, data, receipt=receipt, window=window)

    def _instance_of(self, target: ActrId | None) -> Hashable:
        """The local actor instance ``target`` names, (name, index), whichever of its ids
        the sender used; the id itself if it names none here."""
        entry = self.directory.get(target) if target is not None else None
        return (entry.name, entry.index) if entry is not None else target

    def _from_node(
        self,
        pc: PeerConnection,
        lane: int,
        item: Envelope | StreamFrame,
        data: bytes,
        may_wait: bool = True,
        receipt: Receipt | None = None,
        window: WindowShare | None = None,
    ) -> None:
        """A request, tell or stream frame from another node: first make sure that node
        introduced its source (else wait for it), then hand it on. A tell's ``receipt``
        goes wherever the tell waits: its message is confirmed to the sender once the
        last reference goes (``_carry.HeldTells``); a reliable chunk's ``window`` is
        given back to its sender once the chunk is handed on or given up."""
        source, target = item.source, item.target
        if (
            may_wait
            and source is not None
            and target is not None  # else refused as addressed to nobody
            and self._node_of.get(source) != pc.remote_node
            and not self._refused_anyway(target, source)
        ):
            started = self._loop.time()

            def again() -> None:
                if isinstance(item, Envelope) and item.timeout_ms:
                    waited_ms = int((self._loop.time() - started) * 1000)
                    item.timeout_ms = max(1, item.timeout_ms - waited_ms)
                self._from_node(pc, lane, item, data, False, receipt, window)

            if self._wait_for_introduction(pc, item, again):
                return
        if isinstance(item, StreamFrame):
            self._stream_in(pc, item, data, receipt=receipt, window=window)
        else:
            self._call_in(pc, item, lane, receipt=receipt)

    def _local_endpoint(self, target: ActrId | None, source: ActrId | None, from_node: str) -> str:
        """Endpoint of a running local actor for a frame from node ``from_node``, or raise
        the error its caller gets."""
        entry = self.directory.get(target) if target is not None else None
        if entry is None:
            raise NotFound(f"no actor {target} on node {self.node_id}")
        # The worker checks its ACL too, but it cannot tell a remote caller's claims from
        # a local one's; refusing here also keeps denied traffic off it.
        self._check_remote_caller(entry, source, from_node)
        if entry.state is not ActorState.RUNNING:
            raise Unavailable(f"actor {entry.actr_id} ({entry.name}) is {entry.state.value}")
        return entry.endpoint

    # -- targets still starting ----------------------------------------------------------

    def _park_if_starting(
        self,
        target: ActrId | None,
        wait_s: float,
        again: Callable[[], None],
        *,
        unbounded: bool = False,
        through_restart: bool = False,
    ) -> bool:
        """Keep a frame for a local actor that is still starting (the same rule as between
        local actors, docs/node.md), or with ``through_restart`` also for one that is
        restarting (a tell or a reliable stream chunk: its sender cannot be told, see
        docs/gateway.md); ``again`` runs once it no longer is, or after ``wait_s``.
        False: not starting (or waiting is pointless); handle it now."""
        if target is None or wait_s <= 0 or not self._waits(target, through_restart):
            return False
        waiting = self._parked.setdefault(target, deque())
        if len(waiting) >= self._hwm and not unbounded:
            return False  # as many as a worker's socket would queue: refuse the rest
        parked = Parked(again, through_restart)
        parked.timer = self._loop.call_later(wait_s, unpark_one, self._parked, target, parked)
        waiting.append(parked)
        return True

    def _waits(self, target: ActrId, through_restart: bool) -> bool:
        """Whether a frame for ``target`` waits for it: it is starting (or, with
        ``through_restart``, restarting)."""
        entry = self.directory.get(target)
        if entry is None:
            # Registered with signaling (others can find it) before the supervisor's
            # directory lists its worker: it is about to start.
            return target in self._regs
        return entry.comes_back if through_restart else entry.state is ActorState.STARTING

    def _unpark_started(self) -> None:
        """After a directory update: frames whose targets they wait for run (or are gone)
        go on, in order."""
        for target in list(self._parked):
            waiting = self._parked[target]
            done = [p for p in waiting if not self._waits(target, p.through_restart)]
            for parked in done:
                waiting.remove(parked)
            if not waiting:
                del self._parked[target]
            for parked in done:
                if parked.timer is not None:
                    parked.timer.cancel()
                parked.again()

    # -- calls and tells -----------------------------------------------------------------

    def _call_in(
        self,
        pc: PeerConnection,
        env: Envelope,
        lane: int,
        deadline_ns: int | None = None,
        receipt: Receipt | None = None,
    ) -> None:
        """Hand a request or tell to its local actor; ``deadline_ns`` is given when it
        waited for the actor to start (else it may wait)."""
        self._readdress(env)
        is_request = env.direction == REQUEST
        may_wait = deadline_ns is None
        if deadline_ns is None:
            if not 0 <= env.timeout_ms <= MAX_TIMEOUT_MS:
                # Ours never send that: its deadline would not fit a frame's int64.
                pc.counters.malformed += 1
                if is_request:
                    error = BadRequest(f"timeout_ms {env.timeout_ms} is out of range")
                    self._reply_remote(pc, lane, env.request_id, error)
                return
            timeout_ns = env.timeout_ms * 1_000_000
            deadline_ns = time.monotonic_ns() + timeout_ns if timeout_ns else 0
        try:
            endpoint = self._local_endpoint(env.target, env.source, pc.remote_node)
        except ActrError as exc:
            if may_wait and isinstance(exc, (NotFound, Unavailable)):
                wait_s = STARTING_WAIT_S
                if deadline_ns:
                    wait_s = min(wait_s, (deadline_ns - time.monotonic_ns()) / 1e9)
                again = lambda: self._call_in(pc, env, lane, deadline_ns, receipt)  # noqa: E731
                # A call fails at once if its target is restarting, as between local
                # actors; a tell waits (its sender cannot be told).
                restart_too = not is_request
                if self._park_if_starting(env.target, wait_s, again, through_restart=restart_too):
                    return
            if is_request:
                self._reply_remote(pc, lane, env.request_id, exc)
            else:
                self.counters.undeliverable += 1
                log.debug("%r: tell for %s dropped: %s", self, env.target, exc.message)
                self._say_gone(pc, env.source, env.target, exc)
            return
        env.deadline_ns = deadline_ns
        if deadline_ns and not may_wait:
            # It waited for the actor to start: less time is left.
            remaining_ms = (deadline_ns - time.monotonic_ns()) // 1_000_000
            if remaining_ms <= 0:
                return  # the caller has given up already
            env.timeout_ms = remaining_ms
        if is_request:
            self.counters.calls_in += 1
            # Ours (two nodes may use the same ids), with the caller's in front: the
            # callee's ctx.request_id then matches the caller's logs (QA: "g3" alone).
            local_id = f"{env.request_id}/g{next(self._in_ids)}"
            expires_s = env.timeout_ms / 1000 if env.timeout_ms else NO_DEADLINE_S
            timer = self._in_expiry.add(local_id, expires_s + 0.5)
            self._pending_in[local_id] = _InCall(pc, env.request_id, lane, timer, env.target)
            original, env.request_id = env.request_id, local_id
        data = wire.reencode(env)
        if not is_request:
            self._to_local(
                endpoint,
                data,
                wait_s=TELL_WAIT_S,
                on_fail=self._count_undeliverable,
                bounded=True,
                receipt=receipt,
                came_on=pc,
            )
            return
        wait_s = env.timeout_ms / 1000 if env.timeout_ms else TELL_WAIT_S
        target = env.target  # not the decoded frame: it would wait too, payload and all

        def not_sent() -> None:
            call = self._pending_in.pop(local_id, None)
            if call is not None:
                call.timer.cancel()
                error = Unavailable(f"actor {target} is not accepting messages")
                self._reply_remote(pc, lane, original, error)

        self._to_local(endpoint, data, wait_s=wait_s, on_fail=not_sent, bounded=True)

    def _readdress(self, item: Envelope | StreamFrame) -> bool:
        """Point a frame for an actor that signaling knows by a new id at its worker's id
        (Gateway._refresh_aliases); True if it changed. Called where frames are handed
        to workers, not on arrival: a frame that waited for its actor to start comes
        back there."""
        worker_id = self._to_worker.get(item.target) if self._to_worker and item.target else None
        if worker_id is None:
            return False
        item.target = worker_id
        return True

    def _targets_gone(self, gone: list[ActorEntry]) -> None:
        """Local actors whose process went away (a directory update): calls from other
        nodes waiting on them fail now, not at their deadlines, as a local caller's do
        (``RpcEndpoint.peer_gone``: after a crash at once; after a graceful stop once its
        last answers had a moment to arrive)."""
        for entry in gone:
            waiting = [lid for lid, c in self._pending_in.items() if c.target == entry.actr_id]
            if not waiting:
                continue
            error = gone_error(entry)
            if entry.state is ActorState.STOPPED:
                self._loop.call_later(GRACEFUL_ANSWER_WAIT_S, self._fail_in, waiting, error)
            else:
                self._fail_in(waiting, error)

    def _fail_in(self, local_ids: list[str], error: ActrError) -> None:
        for local_id in local_ids:
            call = self._pending_in.pop(local_id, None)
            if call is not None:  # else answered meanwhile
                call.timer.cancel()
                self._reply_remote(call.pc, call.lane, call.request_id, error)

    def _reply_remote(
        self, pc: PeerConnection, lane: int, request_id: str, error: ActrError
    ) -> None:
        pc.enqueue(lane, wire.encode(wire.error_response(request_id, error)))

    def _on_dealer(self, parts: list[bytes]) -> None:
        self._in_drain = True  # answers of this drain go out in batches (_flush_links)
        try:
            env = wire.decode(parts[-1]) if len(parts) == 1 else None
        except BadRequest:
            env = None
        if not isinstance(env, Envelope) or env.direction != RESPONSE:
            self.counters.malformed_local += 1
            return
        call = self._pending_in.pop(env.request_id, None)
        if call is None and env.route_key == FEED_SYNC_ROUTE:
            self._synced(env.request_id)
            return
        if call is None:
            if self._callers_lost.pop(env.request_id, 0) is None:
                self.counters.undeliverable_replies += 1  # its caller's link failed
            else:
                self.counters.late_responses += 1
            return
        call.timer.cancel()
        if not framing.fits_between_nodes(len(parts[-1])):
            # Allowed by this node's max_message_bytes, but more than crosses to another.
            self.counters.undeliverable += 1
            error = HandlerError(framing.too_large("response", len(parts[-1])))
            env = wire.error_response(env.request_id, error)
        env.request_id = call.request_id
        self._send_link(call.pc, call.lane, wire.reencode(env))

    def _stream_in(
        self,
        pc: PeerConnection,
        sf: StreamFrame,
        data: bytes,
        may_wait: bool = True,
        receipt: Receipt | None = None,
        window: WindowShare | None = None,
    ) -> None:
        """Hand a stream frame from another node to its local actor. ``may_wait``: it may
        wait for the actor to (re)start. A reliable chunk's ``receipt`` goes wherever it
        waits (``_carry.HeldTells``); its ``window`` is given back to its sender when it
        is handed on, or None: given back already (it waited through a restart)."""
        sender_target = sf.target  # as the sending node knows it: for "full" (_to_workers)
        if self._readdress(sf):
            data = wire.encode_stream(sf)
        reliable = sf.payload_type == PayloadType.STREAM_RELIABLE
        try:
            endpoint = self._local_endpoint(sf.target, sf.source, pc.remote_node)
        except ActrError as exc:
            # A reliable chunk waits for a starting actor (the sender's window bounds how
            # many) or a restarting one (bounded in bytes); a latency-first one is
            # dropped, as it would be behind a full queue.
            if reliable and may_wait and isinstance(exc, (NotFound, Unavailable)):
                again = lambda: self._stream_in(pc, sf, data, False, receipt, window)  # noqa: E731
                if self._park_if_starting(sf.target, STARTING_WAIT_S, again, unbounded=True):
                    return
                if self._hold_for_restart(pc, sf, data, receipt, window):
                    return
            self.counters.undeliverable += 1
            log.debug("%r: stream frame for %s dropped: %s", self, sf.target, exc.message)
            self._say_gone(pc, sf.source, sf.target, exc)
            if window is not None:
                window.give_back()  # never delivered, but don't stall the window
            return
        if reliable and window is None:  # given back already: not bounded by the window
            wait_s = self.tuning.stream_wait_s
            self._to_local(
                endpoint,
                data,
                wait_s=wait_s,
                on_fail=self._count_undeliverable,
                renew=True,
                receipt=receipt,
                came_on=pc,
            )
        elif reliable:
            self._deliver_reliable(endpoint, data, pc, str(sender_target or ""), receipt, window)
        else:
            self._to_local(endpoint, data, wait_s=0.0, on_fail=self._count_undeliverable)
            if window is not None:  # (a latency-first chunk on the reliable channel)
                window.give_back()

    def _hold_for_restart(
        self,
        pc: PeerConnection,
        sf: StreamFrame,
        data: bytes,
        receipt: Receipt | None,
        window: WindowShare | None,
    ) -> bool:
        """Keep a reliable chunk for a local actor that is restarting, acknowledged to its
        sender at once up to RESTART_HELD_BYTES; False when it is not restarting."""
        target = sf.target
        if target is None:
            return False
        held = self._held_for_restart.get(target, 0)
        if sum(self._held_for_restart.values()) + len(data) > RESTART_HELD_BYTES:
            again_unacked = lambda: self._stream_in(pc, sf, data, False, receipt, window)  # noqa: E731
            return self._park_if_starting(
                target, STARTING_WAIT_S, again_unacked, unbounded=True, through_restart=True
            )

        def again() -> None:
            left = self._held_for_restart.get(target, 0) - len(data)
            if left > 0:
                self._held_for_restart[target] = left
            else:
                self._held_for_restart.pop(target, None)
            self._stream_in(pc, sf, data, may_wait=False, receipt=receipt, window=None)

        if not self._park_if_starting(
            target, STARTING_WAIT_S, again, unbounded=True, through_restart=True
        ):
            return False
        self._held_for_restart[target] = held + len(data)
        if window is not None:
            window.give_back()
        return True

    def _deliver_media(self, pc: PeerConnection, sf: StreamFrame) -> None:
        if sf.source is not None and sf.target is not None:
            if self._node_of.get(sf.source) != pc.remote_node:
                # Not kept (newest wins), but the next samples may pass.
                self._ask_introduction(pc, sf.source, sf.target)
        self._readdress(sf)
        try:
            endpoint = self._local_endpoint(sf.target, sf.source, pc.remote_node)
        except ActrError as exc:
            self.counters.undeliverable += 1
            self._say_gone(pc, sf.source, sf.target, exc)
            return
        self._to_local(
            endpoint, wire.encode_stream(sf), wait_s=0.0, on_fail=self._count_undeliverable
        )

    def _count_undeliverable(self) -> None:
        self.counters.undeliverable += 1


#: At most this many aliases in a "hello" (one per actor of the other node at most).
ALIASES_MAX = 65_536


def _parse_aliases(value: Any) -> dict[ActrId, ActrId] | None:
    """A hello's ``aliases`` ([worker id, signaling id] text pairs: ids a restarted
    signaling server gave the other node's actors) as a dict; None if malformed."""
    if not isinstance(value, list) or len(value) > ALIASES_MAX:
        return None
    aliases = {}
    for pair in value:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)
        ):
            return None
        try:
            aliases[ActrId.parse(pair[0])] = ActrId.parse(pair[1])
        except BadRequest:
            return None
    return aliases
