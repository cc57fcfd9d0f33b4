"""The gateway's outbound half: frames from local workers to actors on other nodes.

A request keeps the caller's routing id under a request id of our own (callers' ids are
unique per node only by convention, and answers from other nodes are matched on it);
its CLOCK_MONOTONIC deadline becomes the remaining ``timeout_ms`` (meaningless on
another host); a ring descriptor becomes the payload itself (rings don't cross hosts).
A target whose node is unknown is located first (module ``_locates``); its frames wait
there meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from .. import _envelope as wire
from .._config import Config
from .._directory import GATEWAY_DISCOVER_ROUTE
from .._envelope import REQUEST, RESPONSE, STREAM, TELL, Envelope, StreamFrame
from .._errors import (
    ActrError,
    BadRequest,
    ClosedResourceError,
    NotFound,
    Unavailable,
)
from .._gateway_credit import ReadCounts, read_notice
from .._ids import ActrId, ActrType
from .._payload_type import PayloadType
from .._replies import Replies
from .._ring_readers import RingReaders
from .._rpc import MAX_TIMEOUT_S
from .._rpc_receiving import worth_logging
from .._tell_origin import appended
from .._zmqloop import LoopSocket
from ..shm import Descriptor
from ..signaling import SignalingClient
from . import _framing as framing
from . import _ring_payloads as ring_payloads
from ._counters import GatewayCounters
from ._discovery import Discoverer
from ._expiry import Expiring, ExpiryWheel
from ._media import is_track_sample
from ._notices import ShellTellers
from ._peer import PeerConnection
from ._remote import RemoteNode
from ._stream_hold import StreamHold
from ._types import CALLS, STREAMS, LinkState, Tuning

log = logging.getLogger(__name__)

#: The longest remaining time a frame carries to another node (a caller's longest timeout).
MAX_TIMEOUT_MS = int(MAX_TIMEOUT_S * 1000)
#: Pending-call entries of calls without a deadline expire after this long.
NO_DEADLINE_S = 300.0
#: For this long after our signaling connection came back, "not registered" is 503: the
#: server may have restarted, and other nodes' reconnects back off up to 5 s.
REREGISTER_GRACE_S = 6.0


class _OutCall:
    """A local caller waiting for a remote answer (its own request id, its socket)."""

    __slots__ = ("node", "request_id", "routing_id", "timer")

    def __init__(self, routing_id: bytes, request_id: str, timer: Expiring) -> None:
        self.routing_id = routing_id
        self.request_id = request_id
        self.node: str | None = None
        self.timer = timer


class Outbound:
    """Mixin of :class:`~._gateway.Gateway`: local worker -> remote node."""

    # Set up by Gateway.__init__.
    config: Config
    node_id: str
    counters: GatewayCounters
    _loop: asyncio.AbstractEventLoop
    _router: LoopSocket
    _reads: ReadCounts  # bytes read per connection to the calls socket
    _replies: dict[str, Replies]  # by socket (CALLS, STREAMS, MEDIA)
    _signaling_back_at: float | None  # loop time our signaling connection came back
    _signaling: SignalingClient | None
    _discoverer: Discoverer
    _routers: dict[str, LoopSocket]
    _regs: dict[ActrId, Any]
    _to_signaling: dict[ActrId, ActrId]
    _nodes: dict[str, RemoteNode]
    _node_of: dict[ActrId, str]
    _pending_out: dict[str, _OutCall]
    _out_expiry: ExpiryWheel
    _out_ids: itertools.count[int]
    _rings: RingReaders
    _lossy: dict[ActrId, deque[StreamFrame]]
    tuning: Tuning
    _pressure: dict[str, set[object]]
    _spawn: Callable[[Any], None]
    _send_link: Callable[[PeerConnection, int, bytes], None]
    _in_drain: bool
    _stream_hold: StreamHold
    _to_actor: Callable[..., None]  # _locates.Locates: onto its node's link, or located
    _keep_for_locate: Callable[[StreamFrame, bytes], bool]  # _locates.Locates
    _locate_only: Callable[[ActrId, ActrId | None], None]  # _locates.Locates
    _shell_tellers: ShellTellers  # _notices

    def _on_router(self, parts: list[bytes], via: str = CALLS) -> None:
        """Frames from a worker on socket ``via`` (CALLS, STREAMS or MEDIA)."""
        self._in_drain = True  # frames of this drain go out in batches (_flush_links)
        if len(parts) < 2:
            self.counters.malformed_local += 1
            return
        # A sender may put several frames in one message (ring descriptors queued in one
        # loop turn, actrhost._streams): one routing id, then the frames.
        routing_id = parts[0]
        for data in parts[1:]:
            self._from_worker(routing_id, data, via)
        if via == CALLS:  # (its sender keeps a credit of bytes unread: _gateway_credit)
            read = self._reads.add(routing_id, sum(map(len, parts)) - len(routing_id))
            if read:
                try:
                    self._router.send_multipart_nowait([routing_id, read_notice(read)])
                except zmq.ZMQError:
                    self._reads.unsent(routing_id, read)

    def _from_worker(self, routing_id: bytes, data: bytes, via: str = CALLS) -> None:
        try:
            item = wire.decode(data)
        except BadRequest as exc:
            self.counters.malformed_local += 1
            if worth_logging(self.counters.malformed_local):
                log.warning(
                    "%r: dropped a malformed local frame (#%d): %s",
                    self,
                    self.counters.malformed_local,
                    exc.message,
                )
            return
        if self._to_signaling and item.source in self._to_signaling:
            # Leaves with the id other nodes know (Gateway._refresh_aliases).
            item.source = self._to_signaling[item.source]
            if isinstance(item, StreamFrame):
                data = wire.encode_stream(item)
        if isinstance(item, StreamFrame):
            if item.source is None and item.target is not None:
                self._shell_tellers.remember(item.target, (via, routing_id))  # (as tells)
            self._stream_out(item, data)
        elif via != CALLS:
            # Calls and tells go to the calls socket; answered here, on the socket it came
            # in on (an answer on the calls socket would find no such peer: it waited).
            self.counters.malformed_local += 1
            if item.direction == REQUEST:
                error = BadRequest(
                    f"the gateway's {via} socket takes no calls: send them to its endpoint"
                )
                answer = wire.encode(wire.error_response(item.request_id, error))
                self._send_router(routing_id, answer, via)
        elif item.direction == RESPONSE:
            self.counters.malformed_local += 1  # answers come back on our DEALERs
        elif item.route_key == GATEWAY_DISCOVER_ROUTE and item.target is None:
            if item.direction == REQUEST:
                self._spawn(self._discover(item, routing_id))
        else:
            self._call_out(item, routing_id, len(data))

    def _call_out(self, env: Envelope, routing_id: bytes, size_bytes: int) -> None:
        is_request = env.direction == REQUEST
        if env.direction == TELL and _stale(wire.tell_origin(env)):
            # Stamped for the gateway before us and left in the sender's socket when it
            # died: the sender sends it again, in doubt (module actrhost._tell_origin).
            self.counters.stale_tells_dropped += 1
            return
        target = env.target
        if not framing.fits_between_nodes(size_bytes):
            # The sender's max_message_bytes may allow more than crosses between nodes:
            # say so now rather than drop it on the link and let the caller wait.
            self.counters.undeliverable += 1
            what = f"{'request' if is_request else 'tell'} {env.route_key!r}"
            if is_request:
                error = BadRequest(framing.too_large(what, size_bytes))
                self._reply_local(routing_id, env.request_id, error)
            else:  # nobody to answer: say it here
                log.warning("%r: dropped a %s", self, framing.too_large(what, size_bytes))
            return
        if target is None:
            if is_request:
                self._reply_local(
                    routing_id, env.request_id, NotFound("no target actor for a remote call")
                )
            return
        if env.source is None and not is_request:
            self._shell_tellers.remember(target, (CALLS, routing_id))  # told if dropped
        now_ns = time.monotonic_ns()
        if env.deadline_ns:
            remaining_ms = (env.deadline_ns - now_ns) // 1_000_000
            if remaining_ms <= 0:
                return  # the caller has given up already
            # At most what a caller may ask for: the other side adds it to its clock, and
            # a deadline past the int64 nanoseconds of a frame failed the whole link.
            env.timeout_ms = min(remaining_ms, MAX_TIMEOUT_MS)
        # CLOCK_MONOTONIC means nothing on another host: only the remaining time travels.
        env.deadline_ns = 0
        out_id = ""
        if is_request:
            # Our own id on the wire: callers' ids are unique per node only by convention,
            # and answers from other nodes are matched on it. The caller's goes in front,
            # so that the callee's ctx.request_id matches the caller's logs.
            out_id = f"{env.request_id}/o{next(self._out_ids)}"
            expires_s = env.timeout_ms / 1000 if env.timeout_ms else NO_DEADLINE_S
            timer = self._out_expiry.add(out_id, expires_s + 0.5)
            self._pending_out[out_id] = _OutCall(routing_id, env.request_id, timer)
            env.request_id = out_id
            self.counters.calls_out += 1
        data = wire.reencode(env, keep_origin=not is_request)  # the sender's, for the tell
        self._to_actor(target, env.payload_type, data, out_id, env.source, routing_id)

    def _stream_out(
        self, sf: StreamFrame, data: bytes, deferred: bool = False, released: bool = False
    ) -> None:
        """A stream frame or media sample from a worker (``released``: one the stream hold
        kept until its node had room)."""
        target = sf.target
        if sf.origin is not None and _stale(sf.origin):
            # Stamped for the gateway before us and left in the sender's socket when it
            # died; its ring went with it. The sender sends it again, in doubt.
            self.counters.stale_chunks_dropped += 1
            return
        if not released and target is not None and sf.payload_type == PayloadType.STREAM_RELIABLE:
            node_id = self._node_of.get(target)
            if node_id is not None and self._stream_hold.holds(node_id, target):
                if sf.shm and not ring_payloads.keep_ring(self._rings, self.counters, sf):
                    return
                self._stream_hold.hold(node_id, sf, data)
                return
            if self._keep_for_locate(sf, data):
                return
        if sf.shm and target is not None and not deferred and sf.kind == STREAM:
            if sf.payload_type == PayloadType.STREAM_LATENCY_FIRST:
                self._defer_lossy(target, sf)
                return
        inline = not sf.shm  # the frame can go on as it came (no deadline in a stream frame)
        if sf.shm and not ring_payloads.inline(self._rings, self.counters, sf, kept=released):
            return
        if target is None:
            self.counters.undeliverable += 1
            return
        kind = is_track_sample(sf, sf.array_meta)
        if kind is not None:
            node_id = self._node_of.get(target)
            node = self._nodes.get(node_id) if node_id else None
            pc = node.connection() if node is not None else None
            sent = False
            if pc is not None:
                try:
                    sent = pc.send_media(sf, sf.payload, sf.array_meta, kind)
                except (ValueError, TypeError) as exc:
                    log.warning("%r: media sample not encodable: %s", self, exc)
            if not sent:
                self.counters.dropped_media += 1
                if node is None:
                    self._locate_only(target, sf.source)
            return
        if inline:
            frame = data
        elif sf.origin is None:
            frame = wire.encode_stream(sf)
        else:  # a reliable chunk our worker stamped: where it came from goes with it
            frame = wire.encode_stream(sf) + appended(sf.origin)
        self._to_actor(target, sf.payload_type, frame, "", sf.source)

    def _defer_lossy(self, target: ActrId, sf: StreamFrame) -> None:
        """Leave a latency-first chunk in its ring until the drain ends, when the newest
        few of each target are read (:meth:`_flush_lossy`). Older ones are retired unread
        and counted as dropped: the lane's queue keeps only the newest anyway, and copying
        chunks only to drop them was most of a flood's cost (it once starved the loop
        past the keepalive timeout)."""
        waiting = self._lossy.setdefault(target, deque())
        waiting.append(sf)
        if len(waiting) > self.tuning.latency_queue_frames:
            old = waiting.popleft()
            try:
                desc = Descriptor.from_bytes(old.shm)
                self._rings.get(desc.ring).retire(desc)
            except ActrError as exc:
                self.counters.malformed_local += 1
                log.warning("%r: could not retire %r: %s", self, old, exc.message)
                return
            node_id = self._node_of.get(target)
            if node_id is not None:
                self._nodes[node_id].counters.by_lane[old.payload_type].dropped += 1
            else:
                self.counters.undeliverable += 1

    def _flush_lossy(self) -> None:
        """End of a drain: the latency-first chunks kept by :meth:`_defer_lossy` go on."""
        if self._lossy:
            lossy, self._lossy = self._lossy, {}
            for waiting in lossy.values():
                for sf in waiting:
                    self._stream_out(sf, b"", deferred=True)

    async def _discover(self, env: Envelope, routing_id: bytes) -> None:
        self.counters.discoveries += 1
        reg = self._regs.get(env.source) if env.source is not None else None
        if reg is None and self._regs:
            reg = next(iter(self._regs.values()))
        try:
            if reg is None:
                raise Unavailable(f"node {self.node_id} has no registered actor to discover with")
            actr_type = ActrType.parse(bytes(env.payload).decode("utf-8", "replace"))
            # A Shell asks as one of our actors: say so, not just that actor's type.
            caller = f"{reg.actr_type}" if env.source else f"{reg.actr_type} (for a Shell)"
            best = await self._discoverer.best(reg, actr_type, caller)
        except ActrError as exc:
            self._reply_local(routing_id, env.request_id, exc)
            return
        except ClosedResourceError:  # unregistered meanwhile: this gateway is stopping
            error = Unavailable(f"the gateway of node {self.node_id} is stopping")
            self._reply_local(routing_id, env.request_id, error)
            return
        answer = Envelope(RESPONSE, payload=str(best).encode(), request_id=env.request_id)
        self._send_router(routing_id, wire.encode(answer))

    def _new_discoverer(self) -> Discoverer:
        """Discovery through signaling, with the last answers for when it is away."""

        def node_of(actr_id: ActrId) -> RemoteNode | None:
            return self._nodes.get(self._node_of.get(actr_id, ""))

        def link_up(actr_id: ActrId) -> bool:
            node = node_of(actr_id)
            return node is not None and node.state is LinkState.CONNECTED

        def may_be_back(actr_id: ActrId) -> str:
            node = node_of(actr_id)
            if node is None or node.refuses_us:  # (up, and its ACLs refuse the link)
                return ""
            if why := node.reconnecting_because():
                return f"is reconnecting after its link failed ({why})"
            if why := node.doubted_because():
                return f"is being checked: {why}"
            return ""

        def signaling_up() -> bool:
            return self._signaling is not None and self._signaling.connected

        return Discoverer(
            self.config,
            link_up,
            may_be_back,
            signaling_up,
            self._reconnected_s_ago,
            self.counters,
        )

    def _fail_out(self, request_id: str, error: ActrError) -> None:
        call = self._pending_out.pop(request_id, None)
        if call is None:
            return
        call.timer.cancel()
        self.counters.failed_calls += 1
        self._reply_local(call.routing_id, call.request_id, error)

    def _reply_local(self, routing_id: bytes, request_id: str, error: ActrError) -> None:
        self._send_router(routing_id, wire.encode(wire.error_response(request_id, error)))

    def _reconnected_s_ago(self) -> float | None:
        """Seconds since our signaling connection came back, within REREGISTER_GRACE_S."""
        if self._signaling_back_at is None:
            return None
        since = self._loop.time() - self._signaling_back_at
        return since if since < REREGISTER_GRACE_S else None

    def _count_undelivered_answers(self, count: int) -> None:
        self.counters.undeliverable += count

    def _send_router(self, routing_id: bytes, data: bytes, via: str = CALLS) -> None:
        self._replies[via].send(routing_id, data)

    def _on_pressure(
        self, source: object, full: bool, sockets: tuple[str, ...] = (CALLS, STREAMS)
    ) -> None:
        """Stop reading the workers' ``sockets`` while ``source`` (a link's lanes, the
        frames waiting for a locate) is full; read again once no source is."""
        for name in sockets:
            waiting = self._pressure[name]
            if full:
                waiting.add(source)
                self._routers[name].pause_reading()
            elif source in waiting:
                waiting.remove(source)
                if not waiting:
                    self._routers[name].resume_reading()


def _stale(origin: Any | None) -> bool:
    """Whether a tell or chunk from a worker of ours (its ``TellOrigin``, or None) was
    stamped for another gateway than this process."""
    return origin is not None and origin.gateway != os.getpid()
