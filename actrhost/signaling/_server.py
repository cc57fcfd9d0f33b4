"""The signaling server: registration, credentials, presence, discovery and relay.

One asyncio task reads each WebSocket connection and handles every envelope
synchronously (no await between reading an envelope and queueing its answer), so the
state of the server changes only between frames. Answers and relayed messages go
through a bounded per-connection queue drained by a sender task: a peer that stops
reading fills its own queue and is disconnected, never slowing down the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .._config import parse_listen
from .._errors import (
    ActrError,
    BadRequest,
    ErrorCode,
    NotFound,
    PermissionDenied,
    Unauthorized,
    Unavailable,
)
from .._ids import ActrId, ActrType, Realm
from . import _wire as wire
from ._acl import acl_allows
from ._connection import COUNTERS, Connection
from ._credentials import KeysLike, load_keys
from ._presence import ActorEntry, Registry, SerialAllocator
from ._ranking import (
    AVAILABILITY,
    COMPATIBILITY,
    DEFAULT_RANKING,
    MAILBOX_BACKLOG,
    SchemaStore,
    rank_candidates,
)
from ._replies import actor_list, credential_update_ok, register_ok, route_candidates_response
from ._tls import server_context
from ._types import Availability

__all__ = ["SignalingServer"]

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 5.0
DEFAULT_CREDENTIAL_TTL_S = 3600.0
DEFAULT_MAX_FRAME_BYTES = 256 * 1024
DEFAULT_SEND_QUEUE_SLOTS = 256
MAX_CANDIDATES = 100
MAX_LISTED = 1000  # a listing stays far below the client's 1 MiB frame limit
# Refusals logged per connection before only every 100th is (a forging peer must not
# be able to flood the log).
_REFUSALS_LOGGED = 5

_RANKING_NAMES = {
    wire.RANKING_COMPATIBILITY: COMPATIBILITY,
    wire.RANKING_AVAILABILITY: AVAILABILITY,
    wire.RANKING_BACKLOG: MAILBOX_BACKLOG,
}


class SignalingServer:
    """A signaling server bound to one address; use :func:`run_server` or start/stop.

    ``keys``: a :class:`KeyRing`, its config dict, a key file path, or None for a random
    key (credentials then do not survive a restart of this server). ``tls_cert`` (and
    ``tls_key``, unless the key is in the same PEM file): serve ``wss://``.
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        *,
        keys: KeysLike = None,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        missed_heartbeats: int = 3,
        credential_ttl_s: float = DEFAULT_CREDENTIAL_TTL_S,
        reregister_grace_s: float | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        send_queue_slots: int = DEFAULT_SEND_QUEUE_SLOTS,
        max_actors_per_connection: int = 100_000,
        ws_ping_interval_s: float | None = 20.0,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> None:
        self.listen = listen
        # wss:// with this certificate chain (PEM) and key; ConfigError if unusable.
        self._tls = server_context(tls_cert, tls_key) if tls_cert is not None else None
        self._host, self._port = parse_listen(listen)
        self._keys = load_keys(keys)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.credential_ttl_s = credential_ttl_s
        # An actor whose credential expired during a long outage may still claim its id
        # back for this long.
        self._grace_ms = int(
            1000 * (credential_ttl_s if reregister_grace_s is None else reregister_grace_s)
        )
        self._max_frame_bytes = max_frame_bytes
        self._send_queue_slots = send_queue_slots
        self._max_actors_per_connection = max_actors_per_connection
        self._ws_ping_interval_s = ws_ping_interval_s
        self._registry = Registry(
            heartbeat_interval_s=heartbeat_interval_s, missed_heartbeats=missed_heartbeats
        )
        self._serials = SerialAllocator()
        self._schemas = SchemaStore()
        self._types: dict[tuple[str, str], ActrType] = {}  # interned: thousands share a few
        self._connections: set[Connection] = set()
        self._conn_ids = itertools.count(1)
        self._counters: Counter[str] = Counter()
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers: dict[str, Callable[[Connection, wire.Envelope], wire.Envelope | None]] = {
            "register_request": self._on_register,
            "unregister": self._on_unregister,
            "ping": self._on_ping,
            "ping_batch": self._on_ping_batch,
            "credential_update": self._on_credential_update,
            "route_candidates_request": self._on_route_candidates,
            "relay": self._on_relay,
            "stats_request": self._on_stats,
            "list_actors": self._on_list_actors,
        }

    def __repr__(self) -> str:
        where = self.url if self._server is not None else self.listen
        return f"SignalingServer({where}, actors={len(self._registry)})"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving. Raises OSError when the address is taken."""
        if self._server is not None:
            raise RuntimeError(f"{self!r} already started")
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            # websockets logs each connection opened and closed at INFO: anyone who can
            # reach the port could grow the (node's) log at will (QA: 200 half-open
            # connections, 400 lines). Refusals and errors are ours to log.
            logging.getLogger("websockets.server").setLevel(logging.WARNING)
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            max_size=self._max_frame_bytes,
            compression=None,  # envelopes are small protobufs; deflate would cost CPU only
            ping_interval=self._ws_ping_interval_s,
            ping_timeout=self._ws_ping_interval_s,
            close_timeout=1.0,
            server_header=None,
            ssl=self._tls,
        )
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="signaling-presence-sweep")
        log.info("%r: listening", self)

    async def stop(self) -> None:
        """Close every connection and stop listening. Idempotent."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()
            log.info("SignalingServer(%s): stopped", self.listen)

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (useful after listening on port 0)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS) clients connect to."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "wss" if self._tls is not None else "ws"
        return f"{scheme}://{host}:{self.port}"

    def stats(self) -> dict[str, int]:
        """Counters (connections, actors, refusals, malformed envelopes, ...)."""
        # Every counter, 0 where nothing happened (a missing one was a KeyError, QA).
        stats = {name: self._counters[name] for name in COUNTERS}
        stats["actors"] = len(self._registry)
        stats["connections_open"] = len(self._connections)
        stats["schemas"] = len(self._schemas)
        return stats

    # -- connections -------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws, next(self._conn_ids), self._send_queue_slots, self._counters)
        self._connections.add(conn)
        self._counters["connections_total"] += 1
        sender = asyncio.create_task(self._send_loop(conn), name=f"{conn!r} sender")
        try:
            async for frame in ws:
                self._on_frame(conn, frame)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:
                # websockets refused a frame above max_size and closed with "too big".
                self._counters["oversized_frames"] += 1
                log.warning("%r: frame above %d bytes: disconnected", conn, self._max_frame_bytes)
        finally:
            conn.closed = True
            sender.cancel()
            self._connections.discard(conn)
            left = []
            for serial in conn.actors:
                entry = self._registry.get(serial)
                if entry is not None and entry.owner is conn:
                    self._registry.remove(serial)
                    left.append(entry)
            self._tell_actors_left(conn, left)
            log.debug("%r: closed, %d actors removed", conn, len(conn.actors))

    def _tell_actors_left(self, conn: Connection, left: list[ActorEntry]) -> None:
        """Tell the connections ``conn`` relayed with that its actors are gone: their
        gateways hear at once that a peer node may have died, not at their keepalive
        timeout (they check the link before they believe it)."""
        peers, conn.relayed_with = conn.relayed_with, set()
        for peer in peers:
            peer.relayed_with.discard(conn)
        if not left or not peers:
            return
        notice = wire.new_envelope()
        for entry in left:
            wire.set_actr_id(notice.actors_left.actors.add(), entry.actr_id)
        frame = notice.SerializeToString()
        for peer in peers:
            if peer.send(frame):
                self._counters["actors_left_notices"] += 1

    async def _send_loop(self, conn: Connection) -> None:
        try:
            while True:
                frame = await conn.queue.get()
                await conn.ws.send(frame)
        except ConnectionClosed:
            conn.closed = True

    async def _sweep_loop(self) -> None:
        period = min(max(self.heartbeat_interval_s / 2, 0.02), 5.0)
        while True:
            await asyncio.sleep(period)
            for entry in self._registry.expire():
                self._expire(entry)

    def _expire(self, entry: ActorEntry) -> None:
        self._registry.remove(entry.actr_id.serial_number)
        if isinstance(entry.owner, Connection):
            entry.owner.actors.discard(entry.actr_id.serial_number)
        self._counters["presence_expired"] += 1
        log.info("%s: silent for %.1f s: removed", entry.actr_id, self._registry.silence_limit_s)

    # -- dispatch ----------------------------------------------------------------------

    def _on_frame(self, conn: Connection, frame: bytes | str) -> None:
        self._counters["envelopes"] += 1
        try:
            env = wire.decode(frame)
        except BadRequest as exc:
            self._counters["malformed"] += 1
            conn.send(wire.error_frame(ErrorCode.BAD_REQUEST, exc.message))
            return
        kind = env.WhichOneof("flow")
        handler = self._handlers.get(kind or "")
        try:
            if env.version != wire.PROTOCOL_VERSION:
                raise BadRequest(f"unsupported protocol version {env.version}")
            if handler is None:
                raise BadRequest(f"unexpected message {kind or '(none)'} from a client")
            reply = handler(conn, env)
        except ActrError as exc:
            if isinstance(exc, BadRequest):
                self._counters["malformed"] += 1
            elif isinstance(exc, Unauthorized | PermissionDenied):
                self._count_refusal(conn, kind, exc)
            reply = wire.new_envelope()
            reply.error.code = exc.code
            reply.error.message = exc.message
        except Exception as exc:  # a bug: answer 500 rather than leave the peer waiting
            log.exception("%r: %s failed", conn, kind)
            reply = wire.new_envelope()
            reply.error.code = ErrorCode.HANDLER_ERROR
            reply.error.message = f"internal error: {type(exc).__name__}"
        if reply is not None:
            reply.reply_for = env.envelope_id
            conn.send(reply.SerializeToString())

    def _count_refusal(self, conn: Connection, kind: str | None, exc: ActrError) -> None:
        name = "unauthorized" if exc.code == ErrorCode.UNAUTHORIZED else "forbidden"
        self._counters[name] += 1
        conn.refusals += 1
        if conn.refusals <= _REFUSALS_LOGGED or conn.refusals % 100 == 0:
            log.warning("%r: refused %s (%d): %s", conn, kind, exc.code, exc.message)

    def _authenticate(self, conn: Connection, source: Any, credential: Any) -> ActorEntry:
        """The entry of a message's source, after checking its credential (401/403).

        Compares protobuf fields with the token's claims directly: this runs for every
        message, and building ActrId objects (with name validation) cost ~10% of a
        discovery request.
        """
        realm_id, serial, _, type_text = self._keys.claims(
            credential.encrypted_token, credential.token_key_id, now_ms=_now_ms()
        )
        claimed_type = f"{source.type.manufacturer}+{source.type.name}"
        if realm_id != source.realm.realm_id:
            raise PermissionDenied(
                f"credential of realm {realm_id} used for realm {source.realm.realm_id}"
            )
        if serial != source.serial_number or type_text != claimed_type:
            raise Unauthorized(
                f"credential belongs to {serial:x}@{realm_id}:{type_text}, "
                f"not {source.serial_number:x}@{source.realm.realm_id}:{claimed_type}"
            )
        entry = self._registry.get(serial)
        # The serial and type were signed for this entry's id (reclaiming keeps the type).
        if entry is None or entry.owner is not conn:
            raise Unauthorized(
                f"{serial:x}@{realm_id}:{type_text} is not registered on this connection: "
                "register again"
            )
        if self._registry.is_silent(entry):
            # Already out of discovery: the same answer whether or not the sweeper ran.
            self._expire(entry)
            raise Unauthorized(
                f"{entry.actr_id} was silent too long and was removed: register again"
            )
        self._registry.touch(entry, None, None)
        return entry

    def _intern_type(self, msg: Any) -> ActrType:
        key = (msg.manufacturer, msg.name)
        actr_type = self._types.get(key)
        if actr_type is None:
            actr_type = wire.actr_type_from_pb(msg)
            if len(self._types) < 65536:
                self._types[key] = actr_type
        return actr_type

    # -- handlers ----------------------------------------------------------------------

    def _on_register(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        req = env.register_request
        if not req.HasField("actr_type"):
            raise BadRequest("register_request without actr_type")
        if not req.HasField("realm"):
            raise BadRequest("register_request without realm")
        actr_type = self._intern_type(req.actr_type)
        realm = Realm(req.realm.realm_id)
        fingerprint = self._schemas.learn(
            req.service_spec.fingerprint, req.service_spec.schema_text
        )
        acl = wire.acl_from_pb(req.acl)
        if len(conn.actors) >= self._max_actors_per_connection:
            raise Unavailable(
                f"more than {self._max_actors_per_connection} actors on one connection"
            )
        now_ms = _now_ms()
        serial = self._reclaim(conn, req, actr_type, realm, now_ms)
        if serial is None:
            serial = self._serials.next()
            self._counters["registrations"] += 1
        else:
            self._counters["reregistrations_kept_id"] += 1
        actr_id = ActrId(realm, serial, actr_type)
        entry = ActorEntry(
            actr_id=actr_id,
            owner=conn,
            fingerprint=fingerprint,
            acl=acl,
            availability=wire.AVAILABILITY_FROM_PB.get(req.availability, Availability.AVAILABLE),
            mailbox_backlog=0,
            last_seen=time.monotonic(),
            wire_id=wire.actr_id_to_pb(actr_id),
        )
        old = self._registry.add(entry)
        if old is not None and old.owner is not conn and isinstance(old.owner, Connection):
            old.owner.actors.discard(serial)
        conn.actors.add(serial)
        cred = self._keys.issue(actr_id, now_ms + int(self.credential_ttl_s * 1000))
        reply = register_ok(entry, cred, self.heartbeat_interval_s)
        log.debug("%r: registered %s", conn, actr_id)
        return reply

    def _reclaim(
        self, conn: Connection, req: Any, actr_type: ActrType, realm: Realm, now_ms: int
    ) -> int | None:
        """The serial of a re-registering actor whose previous credential is ours, or None."""
        if not (req.HasField("previous_id") and req.HasField("previous_credential")):
            return None
        try:
            previous = wire.actr_id_from_pb(req.previous_id)
            cred = self._keys.verify(
                req.previous_credential.encrypted_token,
                req.previous_credential.token_key_id,
                now_ms=now_ms,
                grace_ms=self._grace_ms,
            )
        except ActrError as exc:
            log.info("%r: previous credential not honoured (%s): new id", conn, exc.message)
            return None
        if cred.actr_id != previous or previous.type != actr_type or previous.realm != realm:
            log.info("%r: previous credential names %s, not this actor: new id", conn, cred.actr_id)
            return None
        self._serials.observe(previous.serial_number)
        return previous.serial_number

    def _on_unregister(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        msg = env.unregister
        entry = self._authenticate(conn, msg.source, msg.credential)
        self._registry.remove(entry.actr_id.serial_number)
        conn.actors.discard(entry.actr_id.serial_number)
        self._counters["unregistrations"] += 1
        reply = wire.new_envelope()
        reply.ack.SetInParent()
        return reply

    def _on_ping(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        msg = env.ping
        entry = self._authenticate(conn, msg.source, msg.credential)
        availability = wire.AVAILABILITY_FROM_PB.get(msg.availability, Availability.AVAILABLE)
        self._registry.touch(entry, availability, msg.mailbox_backlog)
        self._counters["pings"] += 1
        reply = wire.new_envelope()
        reply.pong.SetInParent()
        return reply

    def _on_ping_batch(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        """Heartbeats of many actors in one frame: each checked as a single Ping.

        The per-frame cost (WebSocket, dispatch, reply) is paid once per batch; with a
        node's few thousand actors on one connection that is most of a ping's cost.
        """
        reply = wire.new_envelope()
        pong = reply.pong
        pong.SetInParent()
        for i, ping in enumerate(env.ping_batch.pings):
            try:
                entry = self._authenticate(conn, ping.source, ping.credential)
            except ActrError as exc:
                if isinstance(exc, Unauthorized | PermissionDenied):
                    self._count_refusal(conn, "ping_batch", exc)
                pong.refused.append(i)
                error = pong.errors.add()
                error.code = exc.code
                error.message = exc.message
                continue
            availability = wire.AVAILABILITY_FROM_PB.get(ping.availability, Availability.AVAILABLE)
            self._registry.touch(entry, availability, ping.mailbox_backlog)
        self._counters["pings"] += len(env.ping_batch.pings)
        return reply

    def _on_credential_update(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        msg = env.credential_update
        entry = self._authenticate(conn, msg.source, msg.credential)
        cred = self._keys.issue(entry.actr_id, _now_ms() + int(self.credential_ttl_s * 1000))
        self._counters["credential_renewals"] += 1
        return credential_update_ok(cred)

    def _on_route_candidates(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        msg = env.route_candidates_request
        entry = self._authenticate(conn, msg.source, msg.credential)
        if not msg.HasField("target_type"):
            raise BadRequest("route_candidates_request without target_type")
        target_type = self._intern_type(msg.target_type)
        client_fp = msg.client_fingerprint
        if msg.client_schema_text or client_fp:
            client_fp = self._schemas.learn(client_fp, msg.client_schema_text)
        count = min(max(msg.criteria.candidate_count, 1), MAX_CANDIDATES)
        ranking = tuple(_RANKING_NAMES[f] for f in msg.criteria.ranking if f in _RANKING_NAMES)
        me = entry.actr_id
        # Realms never mix: candidates come from the caller's own realm only.
        ranked = rank_candidates(
            self._registry.bucket(me.realm.realm_id, target_type),
            store=self._schemas,
            client_fingerprint=client_fp,
            caller_type=me.type,
            caller_realm=me.realm.realm_id,
            count=count,
            seen_after=self._registry.horizon(),
            exclude=entry,
            ranking=ranking or DEFAULT_RANKING,
        )
        self._counters["discoveries"] += 1
        return route_candidates_response(ranked)

    def _on_relay(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        relay = env.relay
        entry = self._authenticate(conn, relay.source, relay.credential)
        if not relay.HasField("target"):
            raise BadRequest("relay without target")
        target_id = wire.actr_id_from_pb(relay.target)
        source_id = entry.actr_id
        if target_id.realm != source_id.realm:
            raise PermissionDenied(f"relay from realm {source_id.realm} to realm {target_id.realm}")
        target = self._registry.get(target_id.serial_number)
        if target is None or target.actr_id != target_id:
            raise NotFound(f"relay target {target_id} is not registered")
        if target.acl and not acl_allows(target.acl, source_id.type, source_id.realm.realm_id):
            raise PermissionDenied(f"{source_id.type} may not call {target_id}")
        kind = relay.WhichOneof("payload")
        if kind is None:
            raise BadRequest("relay without payload")
        if kind == "role_assignment":
            raise BadRequest("role_assignment is sent by the server only")
        forward = wire.new_envelope(traceparent=env.traceparent)
        forward.tracestate = env.tracestate
        forward.relay.CopyFrom(relay)
        forward.relay.ClearField("credential")
        reply = wire.new_envelope()
        if kind == "role_negotiation":
            # The server decides who offers: the smaller serial number (realms are equal
            # here), so that both sides negotiating at once still get opposite roles.
            source_offers = source_id.serial_number < target_id.serial_number
            forward.relay.role_assignment.is_offerer = not source_offers
            back = reply.relay
            back.source.CopyFrom(relay.target)
            back.target.CopyFrom(relay.source)
            back.session_id = relay.session_id
            back.role_assignment.is_offerer = source_offers
        else:
            reply.ack.SetInParent()
        owner = target.owner
        if not isinstance(owner, Connection) or not owner.send(forward.SerializeToString()):
            raise Unavailable(f"relay target {target_id} is not reachable")
        if owner is not conn:
            conn.relayed_with.add(owner)
            owner.relayed_with.add(conn)
        self._counters["relays"] += 1
        return reply

    def _on_list_actors(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        """The actors of the caller's realm (optionally of one type), for status tools."""
        msg = env.list_actors
        entry = self._authenticate(conn, msg.source, msg.credential)
        realm_id = entry.actr_id.realm.realm_id
        if msg.HasField("actr_type"):
            entries: Iterable[ActorEntry] = self._registry.bucket(
                realm_id, self._intern_type(msg.actr_type)
            )
        else:
            entries = (e for e in self._registry if e.actr_id.realm.realm_id == realm_id)
        return actor_list(entries, MAX_LISTED)

    def _on_stats(self, conn: Connection, env: wire.Envelope) -> wire.Envelope:
        reply = wire.new_envelope()
        for key, value in self.stats().items():
            reply.stats_response.counters[key] = value
        return reply


def _now_ms() -> int:
    return int(time.time() * 1000)
