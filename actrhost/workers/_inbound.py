"""What reaches a worker: requests, tells and stream frames, each admitted or refused
before it is queued (in the mailbox, or the stream receiver).

While ``on_start`` runs, calls get 503; tells and stream frames wait until it returns (up
to ``mailbox_capacity`` of each). Once the actor stops, calls get 503 and the rest is
dropped, counted. A running actor checks the ACL, then the route: an unknown one is a
404 that names the routes the actor serves. The worker's ``_serve`` runs what passes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .._actor import Route
from .._config import ActorConfig
from .._directory import BARRIER_ROUTE, ActorState
from .._envelope import REQUEST, RESPONSE, Envelope, StreamFrame, error_response
from .._errors import ActrError, NotFound, PermissionDenied, Unavailable
from .._ids import ActrId
from .._payload_type import PayloadType
from .._rpc import RpcEndpoint
from .._rpc_receiving import worth_logging
from .._streams import StreamReceiver
from ._mailbox import Mailbox

if TYPE_CHECKING:
    from ._worker import WorkerCounters

# The worker's log: these are its messages, whichever module holds the code.
log = logging.getLogger("actrhost.workers._worker")

#: Routes a NotFound for an unknown route names, at most.
NO_ROUTE_LISTED = 20


class Inbound:
    """Mixin of :class:`~._worker.Worker`: the receiving half, the callbacks of its
    sockets (and the stream callbacks its contexts register)."""

    # Set up by Worker.__init__ (and _accepting, state, as it starts and stops).
    self_id: ActrId
    actor_config: ActorConfig
    routes: dict[str, Route]
    counters: WorkerCounters
    rpc: RpcEndpoint
    mailbox: Mailbox
    streams_in: StreamReceiver
    state: ActorState
    _accepting: bool
    _route_timings: bool
    _early_tells: list[tuple[Envelope, bytes]]
    _early_frames: list[StreamFrame]

    def _on_request(self, env: Envelope, routing_id: bytes) -> None:
        if not self._accepting:
            if env.direction == REQUEST:
                self._reply_error(
                    env, routing_id, Unavailable(f"actor {self.self_id} is {self.state.value}")
                )
            elif (
                self.state is ActorState.STARTING
                and len(self._early_tells) < self.actor_config.mailbox_capacity
            ):
                self._early_tells.append((env, routing_id))
            else:
                self.counters.tells_dropped += 1
                if worth_logging(self.counters.tells_dropped):  # a sender's flood: not ours
                    log.warning(
                        "%r: tell %r dropped: %s (tells_dropped: %d)",
                        self,
                        env.route_key,
                        self.state.value,
                        self.counters.tells_dropped,
                    )
            return
        if env.route_key == BARRIER_ROUTE:
            if env.direction == REQUEST:
                self.rpc.reply(routing_id, Envelope(RESPONSE, request_id=env.request_id))
            return
        source = env.source
        if source is not None and not self.actor_config.acl_allows(
            source.type, source.realm.realm_id
        ):
            self.counters.denied += 1
            if env.direction == REQUEST:
                self._reply_error(
                    env, routing_id, PermissionDenied(f"{source.type} may not call {self.self_id}")
                )
            return
        route = self.routes.get(env.route_key)
        if route is None:
            self.counters.unknown_routes += 1
            if env.direction == REQUEST:
                self._reply_error(env, routing_id, NotFound(self._no_route(env.route_key)))
            elif worth_logging(self.counters.unknown_routes):
                log.warning(
                    "%r: tell for unknown route %r dropped (unknown_routes: %d)",
                    self,
                    env.route_key,
                    self.counters.unknown_routes,
                )
            return
        signal_lane = (
            route.spec.payload_type is PayloadType.RPC_SIGNAL
            or env.payload_type == PayloadType.RPC_SIGNAL
        )
        arrived_ns = time.monotonic_ns() if self._route_timings else 0
        self.mailbox.put((env, routing_id, route, arrived_ns), signal=signal_lane)

    def _no_route(self, route_key: str) -> str:
        """Why ``route_key`` is unknown, with the routes there are (a typo shows)."""
        served = sorted(k for k in self.routes if not k.startswith("actrhost."))
        listed = ", ".join(served[:NO_ROUTE_LISTED])
        if len(served) > NO_ROUTE_LISTED:
            listed += f", … ({len(served)} in all)"
        return f"{self.self_id} has no route {route_key!r} (it serves: {listed or 'none'})"

    def _drop_early_frames(self) -> None:
        for frame in self._early_frames:
            self.streams_in.counters.not_running += 1
            self.streams_in.discard(frame)
        self._early_frames = []

    def _reply_error(self, env: Envelope, routing_id: bytes, error: ActrError) -> None:
        self.rpc.reply(routing_id, error_response(env.request_id, error))

    def _on_stream(self, frame: StreamFrame) -> None:
        source = frame.source
        if not self._accepting:
            if (
                self.state is ActorState.STARTING
                and len(self._early_frames) < self.actor_config.mailbox_capacity
            ):
                # Its ring record stays taken until then: the sender waits for room.
                self._early_frames.append(frame)
            else:
                self.streams_in.counters.not_running += 1
                self.streams_in.discard(frame)
        elif source is not None and not self.actor_config.acl_allows(
            source.type, source.realm.realm_id
        ):
            self.counters.denied += 1
            self.streams_in.discard(frame)
        else:
            self.streams_in.on_frame(frame)

    def register_stream_callback(self, kind: str, key: str, callback: Any) -> None:
        """Route incoming chunks of ``key`` to ``callback``."""
        self.streams_in.register(kind, key, callback)

    def unregister_stream_callback(self, kind: str, key: str) -> None:
        """Stop routing ``key``."""
        self.streams_in.unregister(kind, key)
