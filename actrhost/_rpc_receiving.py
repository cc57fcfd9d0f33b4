"""What an :class:`~actrhost._rpc.RpcEndpoint` reads, and where each frame goes.

Three kinds of socket bring frames in: the endpoint's ROUTER (requests, tells and stream
frames from the node's processes; answers never come there), its *feed* from the node's
gateway (frames from other nodes, and the gateway's notices and syncs), and each outbound
DEALER (answers to what was sent on it, and the gateway's notices on the links to it).
Whatever cannot be decoded, or comes where it has no business, is dropped and counted
(``Counters.malformed_frames``), never raised: one bad peer must not stop the process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _envelope as wire
from ._directory import gateway_media_endpoint, gateway_streams_endpoint
from ._envelope import Envelope, StreamFrame
from ._errors import ActrError, BadRequest
from ._gateway_credit import GatewayCredit, bytes_read, is_read_notice
from ._held_targets import HeldTargets, is_flow_notice
from ._payload_type import PayloadType
from ._replies import Replies
from ._tell_origin import TellsRead, Verdict
from ._undeliverable import RefusedTargets, is_notice

if TYPE_CHECKING:
    from ._rpc import Counters, _Pending
    from ._tells_sent import TellsSent

log = logging.getLogger("actrhost._rpc")  # (the endpoint's: one logger for all it logs)

#: Malformed frames logged one by one before only every 100th is (they are all counted).
MALFORMED_LOGGED = 5

#: The routing id ``on_request`` gets for a frame that came on the feed (a ROUTER never
#: gives an empty one); :meth:`RpcEndpoint.reply` answers it on the feed.
FEED_ROUTE = b""
#: The route of a *sync* on the feed: the worker sends it back as it reads it, telling the
#: gateway that everything before it was read (``gateway/_feed_reads.py``).
FEED_SYNC_ROUTE = "actrhost.gateway.Sync"

RequestHandler = Callable[[Envelope, bytes], None]
StreamHandler = Callable[[StreamFrame], None]


def worth_logging(malformed: int) -> bool:
    """Whether to log the ``malformed``-th malformed frame (counting from 1): the first
    :data:`MALFORMED_LOGGED`, then every 100th, so that garbage cannot flood the log."""
    return malformed <= MALFORMED_LOGGED or malformed % 100 == 0


class Receiving:
    """Mixin of :class:`~actrhost._rpc.RpcEndpoint`: the handlers of its sockets."""

    # Set up by RpcEndpoint.__init__.
    counters: Counters
    refused: RefusedTargets
    held: HeldTargets
    gateway_credit: GatewayCredit
    to_other_nodes: TellsSent
    _on_request: RequestHandler
    _on_stream: StreamHandler | None
    _pending: dict[str, _Pending]
    _tells_read: TellsRead
    _feed_replies: Replies | None

    def dropped_malformed(self, what: str, *args: object) -> None:
        """Count a malformed frame; log the first few and then every 100th, so that a
        peer sending garbage cannot flood the log."""
        self.counters.malformed_frames += 1
        count = self.counters.malformed_frames
        if worth_logging(count):
            log.warning(f"%r: dropped {what} (malformed frame #%d)", self, *args, count)

    def _decode(self, data: bytes) -> Envelope | StreamFrame | None:
        try:
            return wire.decode(data)
        except BadRequest as exc:
            self.dropped_malformed("a malformed frame: %s", exc.message)
            return None

    def _on_router_message(self, parts: list[bytes]) -> None:
        # [routing id, frame] — or several frames a sender batched (stream chunks sent
        # back to back travel as one ZeroMQ message: see StreamSender).
        if len(parts) < 2:
            self.dropped_malformed("a message without a frame")
            return
        routing_id = parts[0]
        for data in parts[1:]:
            env = self._decode(data)
            if env is None:
                continue
            if isinstance(env, StreamFrame):
                if routing_id or self._takes_from_node(env):
                    self._stream_frame(env)
            elif env.direction == wire.RESPONSE:
                if routing_id:
                    self._resolve(env)
                elif env.route_key == FEED_SYNC_ROUTE:  # (only the gateway's feed has none)
                    self._feed_reply(data)
                elif is_notice(env):
                    self._learn_refused(env)
                else:
                    self._resolve(env)
            elif routing_id or self._takes_from_node(env):
                self._on_request(env, routing_id)

    def _takes_from_node(self, item: Envelope | StreamFrame) -> bool:
        """Whether to take a frame the gateway's feed brought: False for a tell or
        reliable chunk that came again after a gateway died and was read already, or
        may have been (module ``_tell_origin``)."""
        if isinstance(item, StreamFrame):
            origin = item.origin if item.payload_type == PayloadType.STREAM_RELIABLE else None
        else:
            origin = wire.tell_origin(item) if item.direction == wire.TELL else None
        if origin is None:
            return True
        verdict = self._tells_read.judge(origin)
        if verdict is Verdict.TAKE:
            return True
        counters = self.counters
        if verdict is Verdict.READ:  # a duplicate caught: nothing lost
            if isinstance(item, StreamFrame):
                counters.chunks_duplicates_dropped += 1
            else:
                counters.tells_duplicates_dropped += 1
        elif isinstance(item, StreamFrame):
            counters.chunks_in_doubt_dropped += 1
        else:
            counters.tells_in_doubt_dropped += 1
        return False

    def _on_feed_message(self, parts: list[bytes]) -> None:
        self._on_router_message([FEED_ROUTE, *parts])

    def _feed_reply(self, data: bytes) -> None:
        if self._feed_replies is not None:
            self._feed_replies.send(FEED_ROUTE, data)

    def _learn_refused(self, env: Envelope) -> None:
        if not self.refused.learn(env):
            self.dropped_malformed("a notice without a target or an error")

    def _stream_frame(self, frame: StreamFrame) -> None:
        if self._on_stream is None:
            self.dropped_malformed("a %s frame: this endpoint takes no streams", frame.kind)
            return
        try:
            self._on_stream(frame)
        except ActrError as exc:
            self.dropped_malformed("%r: %s", frame, exc.message)

    def _on_link_message(self, endpoint: str, parts: list[bytes]) -> None:
        env = self._decode(parts[-1]) if len(parts) == 1 else None
        if env is None:
            if len(parts) != 1:
                self.dropped_malformed("a message of %d parts on an outbound link", len(parts))
            return
        if isinstance(env, StreamFrame) or env.direction != wire.RESPONSE:
            self.dropped_malformed("a %r arriving on an outbound link", env)
            return
        gateway = self.to_other_nodes.gateway
        if env.request_id or gateway is None:
            self._resolve(env)  # (an answer; a notice from another peer is not one)
        elif endpoint == gateway:
            self._on_gateway_notice(env)
        elif is_notice(env) and endpoint in (
            gateway_streams_endpoint(gateway),
            gateway_media_endpoint(gateway),
        ):
            # A Shell's stream frames or media samples the gateway dropped (_undeliverable;
            # a worker's actor is told on its feed), on the socket they went to.
            self._learn_refused(env)
        else:
            self._resolve(env)

    def _on_gateway_notice(self, env: Envelope) -> None:
        """A message without request id from the node's gateway, on the link calls and
        tells go to: what it read of ours (_gateway_credit), a target on another node
        whose link is full (_held_targets), or that our frames to it were dropped
        (_undeliverable: a Shell's; a worker's actor is told on its feed)."""
        if is_read_notice(env):
            try:
                self.gateway_credit.read(bytes_read(env))
            except BadRequest as exc:
                self.dropped_malformed("%s", exc.message)
        elif is_flow_notice(env):
            if not self.held.learn(env):
                self.dropped_malformed("a wait notice without a target")
        elif is_notice(env):
            self._learn_refused(env)
        else:
            self._resolve(env)

    def _resolve(self, env: Envelope) -> None:
        pending = self._pending.get(env.request_id)
        if pending is None or pending.future.done():
            # The caller gave up (deadline) or never asked: a late response is dropped,
            # never mistaken for a request.
            self.counters.late_responses += 1
            return
        pending.future.set_result(env)
