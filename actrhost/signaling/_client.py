"""The signaling client: one WebSocket to the server, carrying any number of actors.

A node's gateway holds one :class:`SignalingClient` and registers each local actor
instance on it; each :meth:`SignalingClient.register` returns a :class:`Registration`,
the handle for that actor (heartbeat, discovery, relay, unregister).

In the background the client keeps the connection up: when it drops it reconnects with
exponential backoff (with jitter, so a restarted server isn't hit by every node at
once), registers every actor again with its previous credential (the server then gives
the same ids back), sends heartbeats every interval the server asked for, and renews
each credential when two thirds of its lifetime have passed (those two live in
``_keepalive.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from enum import StrEnum
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .._errors import (
    ActrError,
    BadRequest,
    ClosedResourceError,
    DeadlineExceeded,
    Unavailable,
)
from .._fingerprint import SchemaError, service_fingerprint
from .._ids import ActrId, ActrType
from . import _wire as wire
from ._acl import AclRule
from ._keepalive import Keepalive
from ._registration import Registration
from ._tls import certificate_error, client_context, connect_error_text
from ._types import Availability, RelayMessage

__all__ = ["ConnectionState", "Registration", "SignalingClient"]

log = logging.getLogger(__name__)

RelayCallback = Callable[[RelayMessage], Awaitable[None] | None]
ReregisterCallback = Callable[["Registration", ActrId], Awaitable[None] | None]
ActorsLeftCallback = Callable[[list[ActrId]], None]


class ConnectionState(StrEnum):
    """State of the client's connection (aiortc's set, DESIGN STYLE §3)."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


_TRANSITIONS = {
    ConnectionState.NEW: {ConnectionState.CONNECTING, ConnectionState.CLOSED},
    ConnectionState.CONNECTING: {
        ConnectionState.CONNECTED,
        ConnectionState.CLOSED,
        ConnectionState.FAILED,
    },
    ConnectionState.CONNECTED: {ConnectionState.CONNECTING, ConnectionState.CLOSED},
    ConnectionState.FAILED: {ConnectionState.CLOSED},
    ConnectionState.CLOSED: set(),
}


class SignalingClient:
    """Connection to a signaling server, shared by every actor of a node.

    ``on_relay(message)`` receives relayed SDP, ICE and role messages for any of the
    registered actors, one at a time in arrival order (sync or async callable). When
    the callback falls more than ``relay_queue_slots`` messages behind, newer messages
    are dropped and counted (``relay_dropped``): reading from the server never waits
    for user code. ``on_reregistered(registration, old_id)`` reports an id change after
    a reconnect. ``on_actors_left(ids)`` (sync, called as the notice arrives) hears that
    the server's connection holding those actors closed, when one of ours had relayed
    with one of them: their node may be gone. ``on_connected()`` (sync) runs each time
    a connection is up and every actor registered again (the gateway re-reads
    ``local_address`` there).

    Use ``async with SignalingClient(url) as client`` or ``await client.connect()`` and
    ``await client.aclose()``.
    """

    def __init__(
        self,
        url: str,
        *,
        on_relay: RelayCallback | None = None,
        on_reregistered: ReregisterCallback | None = None,
        on_actors_left: ActorsLeftCallback | None = None,
        on_connected: Callable[[], None] | None = None,
        request_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 5.0,
        max_frame_bytes: int = 1024 * 1024,
        max_in_flight: int = 128,
        relay_queue_slots: int = 1024,
        renew_fraction: float = 2 / 3,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.url = url
        # wss://: the server's certificate must chain to ca_file's, else the system's CAs.
        tls = client_context(url, ca_file)
        self._ca_file = os.fspath(ca_file) if ca_file is not None else None
        # websockets takes ssl only for wss:// (with ws:// it raises, even for None).
        self._tls_option: dict[str, Any] = {"ssl": tls} if tls is not None else {}
        self._on_relay = on_relay
        self._on_reregistered = on_reregistered
        self._on_actors_left = on_actors_left
        self._on_connected = on_connected
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._max_frame_bytes = max_frame_bytes
        # Bounds our requests in flight so that answers can't pile up in the server's
        # per-connection send queue (256 slots by default) faster than we read them.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.renew_fraction = renew_fraction
        self._relay_queue: asyncio.Queue[RelayMessage] = asyncio.Queue(maxsize=relay_queue_slots)
        self.relay_dropped = 0
        self.reconnects = 0
        self._state = ConnectionState.NEW
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()
        self._pending: dict[str, asyncio.Future[wire.Envelope]] = {}
        self._ids = itertools.count(1)
        self._registrations: set[Registration] = set()
        self._keepalive = Keepalive(self)  # heartbeats and credential renewals
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()
        self._first_connect: asyncio.Future[None] | None = None
        self._last_connect_error = ""

    def __repr__(self) -> str:
        return f"SignalingClient({self.url}, {self._state}, actors={len(self._registrations)})"

    @property
    def state(self) -> ConnectionState:
        """The connection state; ``connected`` once every actor is registered again."""
        return self._state

    @property
    def local_address(self) -> str | None:
        """The local IP address of the connection to the server (None: not connected):
        where this host reaches the server from."""
        ws = self._ws
        return str(ws.local_address[0]) if ws is not None and ws.local_address else None

    @property
    def connected(self) -> bool:
        """True while connected and every registration is current."""
        return self._ready.is_set()

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """The live registrations."""
        return tuple(self._registrations)

    def _set_state(self, new: ConnectionState) -> None:
        old = self._state
        if new == old:
            return
        if new not in _TRANSITIONS[old]:
            raise RuntimeError(f"{self!r}: invalid transition {old} -> {new}")
        self._state = new
        log.debug("%r: %s -> %s", self, old, new)

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect (bounded by ``connect_timeout_s``) and start the background tasks.

        Raises :class:`Unavailable` when the first connection fails in time; the
        client is then closed.
        """
        if self._state is not ConnectionState.NEW:
            raise RuntimeError(f"{self!r}: connect() called twice")
        loop = asyncio.get_running_loop()
        self._first_connect = loop.create_future()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"{self!r} connection"),
            asyncio.create_task(self._keepalive.run(), name=f"{self!r} heartbeats"),
            asyncio.create_task(self._dispatch_relays(), name=f"{self!r} relay dispatch"),
        ]
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await asyncio.shield(self._first_connect)
        except Exception as exc:  # TimeoutError included
            await self.aclose(unregister=False)
            if isinstance(exc, ActrError):
                raise
            if isinstance(exc, TimeoutError):
                last = (
                    f" (last attempt: {self._last_connect_error})"
                    if self._last_connect_error
                    else ""
                )
                raise Unavailable(
                    f"cannot connect to signaling server {self.url} within "
                    f"{self.connect_timeout_s:g} s{last}; is it running? (`actrhost signal "
                    '--listen HOST:PORT` runs one; url = "embedded" runs one in the node)'
                ) from None
            raise Unavailable(f"cannot connect to signaling server {self.url}: {exc!r}") from None

    async def aclose(self, *, unregister: bool = True, timeout_s: float = 2.0) -> None:
        """Unregister every actor (best effort, bounded by ``timeout_s``), then close.

        Idempotent; safe to call from a cancelled task.
        """
        if self._state is ConnectionState.CLOSED:
            return
        if unregister and self.connected and self._registrations:
            with contextlib.suppress(TimeoutError, ActrError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.gather(
                        *(r.unregister() for r in list(self._registrations)),
                        return_exceptions=True,
                    )
        self._set_state(ConnectionState.CLOSED)
        self._ready.clear()
        for task in [*self._tasks, *self._jobs]:
            task.cancel()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout_s):
                    await ws.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_pending(ClosedResourceError(f"{self!r} closed"))

    async def __aenter__(self) -> SignalingClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public requests ---------------------------------------------------------------

    async def register(
        self,
        actr_type: ActrType | str,
        realm: int,
        *,
        fingerprint: str = "",
        schema_text: str = "",
        acl: Sequence[AclRule] = (),
        availability: Availability = Availability.AVAILABLE,
        timeout_s: float | None = None,
        previous_id: ActrId | None = None,
        previous_credential: tuple[bytes, int] | None = None,
    ) -> Registration:
        """Register one actor instance; returns its :class:`Registration`.

        ``fingerprint`` and/or ``schema_text`` describe the service it serves (the
        server computes the fingerprint from the schema and checks a given one against
        it). ``previous_id`` with ``previous_credential`` (``Registration.credential``
        of an earlier registration: token and key id) asks for that id back, as this
        client does by itself after a reconnect; a process that restarts (a gateway
        respawned by its supervisor) passes what it saved. The server gives it back
        within the credential's grace period, else a new id. Raises
        :class:`BadRequest` (invalid type, schema or fingerprint), :class:`Unavailable`,
        :class:`DeadlineExceeded`.
        """
        if (previous_id is None) != (previous_credential is None):
            raise ValueError("previous_id and previous_credential go together")
        if self._state is ConnectionState.CLOSED:
            raise ClosedResourceError(f"{self!r} is closed")
        if isinstance(actr_type, str):
            actr_type = ActrType.parse(actr_type)
        if schema_text and not fingerprint:
            try:
                fingerprint = service_fingerprint(schema_text)
            except SchemaError as exc:
                raise BadRequest(f"service schema does not parse: {exc}") from None
        reg = Registration(
            self, actr_type, realm, fingerprint, schema_text, tuple(acl), Availability(availability)
        )
        if previous_id is not None and previous_credential is not None:
            reg.actr_id = previous_id
            reg._token, reg._key_id = previous_credential
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self.request_timeout_s)
        await reg._reregister(0, deadline=deadline, first=True)
        self._registrations.add(reg)
        return reg

    async def server_stats(self) -> dict[str, int]:
        """The server's counters (actors, connections, refusals, malformed, ...)."""
        env = wire.new_envelope()
        env.stats_request.SetInParent()
        reply = await self._request(env)
        return dict(reply.stats_response.counters)

    # -- plumbing ----------------------------------------------------------------------

    async def _request(
        self,
        env: wire.Envelope,
        *,
        deadline: float | None = None,
        timeout_s: float | None = None,
        ws: ClientConnection | None = None,
    ) -> wire.Envelope:
        """Send one request and wait for its reply (error replies raise).

        Without ``ws`` it waits for the client to be connected, within the deadline.
        """
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + (timeout_s or self.request_timeout_s)
        kind = env.WhichOneof("flow")
        try:
            async with asyncio.timeout_at(deadline):
                if ws is None:
                    if self._state is ConnectionState.CLOSED:
                        raise ClosedResourceError(f"{self!r} is closed")
                    await self._ready.wait()
                    ws = self._ws
                    assert ws is not None
                async with self._in_flight:
                    envelope_id = f"c{next(self._ids)}"
                    env.envelope_id = envelope_id
                    future: asyncio.Future[wire.Envelope] = loop.create_future()
                    self._pending[envelope_id] = future
                    try:
                        await ws.send(env.SerializeToString())
                        reply = await future
                    finally:
                        self._pending.pop(envelope_id, None)
                        if future.done() and not future.cancelled():
                            # Failed by the connection's loss while the send was still
                            # going (which then raised): retrieved here, not logged.
                            future.exception()
                        future.cancel()
        except TimeoutError:
            raise DeadlineExceeded(f"signaling {kind}: no answer from {self.url} in time") from None
        except ConnectionClosed:
            raise Unavailable(f"signaling {kind}: connection to {self.url} lost") from None
        wire.raise_if_error(reply)
        return reply

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    async def _run(self) -> None:
        """Connect, re-register, read; on loss back off and do it again, until closed."""
        delay = self._reconnect_min_s
        failures = 0  # connect attempts failed since the last connection
        while self._state is not ConnectionState.CLOSED:
            self._set_state(ConnectionState.CONNECTING)
            try:
                ws = await connect(
                    self.url,
                    proxy=None,  # never route loopback/LAN signaling through an env proxy
                    compression=None,
                    max_size=self._max_frame_bytes,
                    open_timeout=self.connect_timeout_s,
                    close_timeout=1.0,
                    user_agent_header=None,
                    **self._tls_option,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                if isinstance(exc, InvalidURI):
                    self._set_state(ConnectionState.FAILED)
                    self._resolve_first(Unavailable(f"invalid signaling url {self.url!r}"))
                    return
                certificate = isinstance(exc, ssl.SSLCertVerificationError)
                if isinstance(exc, ssl.SSLCertVerificationError):
                    # Retrying will not change the certificate: say why now (a later
                    # reconnect keeps trying, in case the server's certificate is renewed).
                    self._resolve_first(certificate_error(self.url, exc, self._ca_file))
                self._last_connect_error = connect_error_text(self.url, exc)
                failures += 1
                # One failure is routine (a server restarting); a lasting one, or a
                # certificate that does not verify, is for the operator to see (QA: at
                # INFO every 5 s, forever).
                lasting = failures == 3 or failures % 20 == 0 or (certificate and failures == 1)
                log.log(
                    logging.WARNING if lasting else logging.INFO,
                    "%r: connect failed (%s, %d time(s) in a row); retrying in %.2f s",
                    self,
                    exc,
                    failures,
                    delay,
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._reconnect_max_s)
                continue
            self._ws = ws
            reader = asyncio.create_task(self._read(ws), name=f"{self!r} reader")
            try:
                await self._register_all(ws)
                self._set_state(ConnectionState.CONNECTED)
                failures = 0
                self._ready.set()
                self._resolve_first(None)
                if self._on_connected is not None:
                    try:
                        self._on_connected()
                    except Exception:  # a bug of the owner's must not drop the connection
                        log.exception("%r: on_connected failed", self)
                delay = self._reconnect_min_s
                await reader
            except (ActrError, ConnectionClosed) as exc:
                log.info("%r: re-registration failed (%s)", self, exc)
            finally:
                self._ready.clear()
                self._ws = None
                reader.cancel()
                self._fail_pending(Unavailable(f"connection to {self.url} lost"))
                with contextlib.suppress(Exception):
                    await ws.close()
            if self._state is ConnectionState.CLOSED:
                return
            self.reconnects += 1
            log.info("%r: connection lost; reconnecting in %.2f s", self, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._reconnect_max_s)

    def _resolve_first(self, exc: Exception | None) -> None:
        if self._first_connect is not None and not self._first_connect.done():
            if exc is None:
                self._first_connect.set_result(None)
            else:
                self._first_connect.set_exception(exc)

    async def _register_all(self, ws: ClientConnection) -> None:
        regs = [r for r in self._registrations if not r.closed]
        if not regs:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_s
        results = await asyncio.gather(
            *(r._reregister(r._generation, deadline=deadline, ws=ws) for r in regs),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # Without its registrations this connection is useless: start over.
            raise Unavailable(
                f"{len(failures)} of {len(regs)} re-registrations failed: {failures[0]!r}"
            )
        log.info("%r: re-registered %d actors", self, len(regs))

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                try:
                    env = wire.decode(frame)
                except ActrError as exc:
                    log.warning("%r: undecodable frame from server: %s", self, exc.message)
                    continue
                if env.reply_for:
                    future = self._pending.get(env.reply_for)
                    if future is not None and not future.done():
                        future.set_result(env)
                elif env.WhichOneof("flow") == "relay":
                    self._enqueue_relay(env)
                elif env.WhichOneof("flow") == "actors_left":
                    self._actors_left(env)
                elif env.WhichOneof("flow") == "error":
                    log.warning("%r: server error %d: %s", self, env.error.code, env.error.message)

    def _enqueue_relay(self, env: wire.Envelope) -> None:
        try:
            message = wire.relay_message_from_pb(env)
        except ActrError as exc:
            log.warning("%r: bad relayed message: %s", self, exc.message)
            return
        try:
            self._relay_queue.put_nowait(message)
        except asyncio.QueueFull:
            self.relay_dropped += 1
            log.warning(
                "%r: relay callback behind: dropped %s", self, type(message.payload).__name__
            )

    def _actors_left(self, env: wire.Envelope) -> None:
        if self._on_actors_left is None:
            return
        try:
            ids = [wire.actr_id_from_pb(pb) for pb in env.actors_left.actors]
        except ActrError as exc:
            log.warning("%r: bad actors_left notice: %s", self, exc.message)
            return
        try:
            self._on_actors_left(ids)
        except Exception:
            log.exception("%r: on_actors_left callback failed", self)

    async def _dispatch_relays(self) -> None:
        while True:
            message = await self._relay_queue.get()
            if self._on_relay is None:
                continue
            try:
                result = self._on_relay(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%r: on_relay callback failed", self)

    async def _notify_reregistered(self, reg: Registration, old_id: ActrId) -> None:
        if self._on_reregistered is None:
            return
        try:
            result = self._on_reregistered(reg, old_id)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%r: on_reregistered callback failed", self)

    def _forget(self, reg: Registration) -> None:
        self._registrations.discard(reg)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background job owned by the client; its failure is logged."""
        task = asyncio.create_task(coro)
        self._jobs.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._jobs.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.info("%r: background job failed: %r", self, t.exception())

        task.add_done_callback(done)
