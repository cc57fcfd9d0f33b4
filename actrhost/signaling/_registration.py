"""One actor's handle on a :class:`SignalingClient`: heartbeat, discovery, relay,
credential renewal and unregister, all authenticated with its current credential."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection

from .._errors import ActrError, ClosedResourceError, Unauthorized, Unavailable
from .._ids import ActrId, ActrType
from . import _wire as wire
from ._acl import AclRule, acl_allows
from ._types import Availability, DiscoveryResult, RelayPayload, RoleAssignment, RouteCandidate

if TYPE_CHECKING:
    from ._client import SignalingClient

__all__ = ["Registration"]

log = logging.getLogger(__name__)


class Registration:
    """One actor registered through a :class:`SignalingClient`.

    ``actr_id`` may change only when the server could not give the old id back (e.g. a
    restarted server without the same keys); the client's ``on_reregistered`` callback
    reports it. Every method raises :class:`ClosedResourceError` after unregister.
    """

    def __init__(
        self,
        client: SignalingClient,
        actr_type: ActrType,
        realm: int,
        fingerprint: str,
        schema_text: str,
        acl: tuple[AclRule, ...],
        availability: Availability,
    ) -> None:
        self._client = client
        self.actr_type = actr_type
        self.realm = realm
        self.fingerprint = fingerprint
        self._schema_text = schema_text
        self._acl = acl
        self.availability = availability
        self.mailbox_backlog = 0
        self.actr_id: ActrId | None = None
        self._token = b""
        self._key_id = 0
        self.credential_expires_at_ms = 0
        self._renew_at = float("inf")  # loop time
        self._next_beat = float("inf")  # loop time
        self._generation = 0  # bumped by every successful (re-)registration
        self._lock = asyncio.Lock()
        self.closed = False

    def __repr__(self) -> str:
        return f"Registration({self.actr_id or self.actr_type})"

    @property
    def credential(self) -> tuple[bytes, int]:
        """The current credential as ``(token bytes, key id)``."""
        return self._token, self._key_id

    def admits(self, caller: ActrId) -> bool:
        """Whether this actor's ACL, as registered, lets ``caller`` relay to it (what the
        server checks): an answer to a relay we send comes back only if it does."""
        return acl_allows(self._acl, caller.type, caller.realm.realm_id)

    def set_load(
        self, *, availability: Availability | None = None, mailbox_backlog: int | None = None
    ) -> None:
        """Set what the next heartbeats report. Does not block."""
        if availability is not None:
            self.availability = Availability(availability)
        if mailbox_backlog is not None:
            self.mailbox_backlog = max(0, min(int(mailbox_backlog), 2**32 - 1))

    async def heartbeat(
        self, *, availability: Availability | None = None, mailbox_backlog: int | None = None
    ) -> None:
        """Send a heartbeat now (the client also sends them every interval).

        Raises :class:`Unavailable` (no connection), :class:`DeadlineExceeded`.
        """
        self.set_load(availability=availability, mailbox_backlog=mailbox_backlog)

        def build() -> wire.Envelope:
            env = wire.new_envelope()
            self._fill_ping(env.ping)
            return env

        await self._call(build)
        self._next_beat = asyncio.get_running_loop().time() + self._client._keepalive.interval_s

    def _fill_ping(self, ping: Any) -> None:
        self._fill_auth(ping)
        ping.availability = wire.AVAILABILITY_TO_PB[self.availability]
        ping.mailbox_backlog = self.mailbox_backlog

    async def discover(
        self,
        target_type: ActrType | str,
        *,
        client_fingerprint: str = "",
        client_schema_text: str = "",
        candidate_count: int = 1,
        ranking: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> DiscoveryResult:
        """Ask the server for the best ``candidate_count`` actors of ``target_type``.

        Candidates come from this actor's realm only, best first: exact fingerprint,
        then backward compatible, then unknown; within those, available before degraded,
        then smaller mailbox backlog. ``ranking`` reorders these factors (names
        ``"compatibility"``, ``"availability"``, ``"mailbox_backlog"``). An empty
        result is not an error. Raises :class:`BadRequest`, :class:`Unavailable`,
        :class:`DeadlineExceeded`.
        """
        if isinstance(target_type, str):
            target_type = ActrType.parse(target_type)
        factors = [wire.RANKING_BY_NAME[name] for name in ranking]

        def build() -> wire.Envelope:
            env = wire.new_envelope()
            req = env.route_candidates_request
            self._fill_auth(req)
            wire.set_actr_type(req.target_type, target_type)
            req.criteria.candidate_count = candidate_count
            req.criteria.ranking.extend(factors)
            req.client_fingerprint = client_fingerprint
            req.client_schema_text = client_schema_text
            return env

        reply = await self._call(build, timeout_s=timeout_s)
        return wire.discovery_result_from_pb(reply.route_candidates_response)

    async def relay(
        self,
        target: ActrId,
        payload: RelayPayload,
        *,
        session_id: str = "",
        traceparent: str = "",
        timeout_s: float | None = None,
    ) -> RoleAssignment | None:
        """Send an SDP offer/answer, ICE candidate or role negotiation to ``target``.

        Returns once the server has queued it for the target; for a
        :class:`RoleNegotiation` returns this side's :class:`RoleAssignment` (the
        target receives the opposite one). Raises :class:`NotFound` (target not
        registered), :class:`PermissionDenied` (other realm, or its ACL refuses us),
        :class:`Unavailable` (target unreachable), :class:`DeadlineExceeded`.
        """

        def build() -> wire.Envelope:
            env = wire.new_envelope(traceparent=traceparent)
            relay = env.relay
            self._fill_auth(relay)
            wire.set_actr_id(relay.target, target)
            relay.session_id = session_id
            wire.set_relay_payload(relay, payload)
            return env

        reply = await self._call(build, timeout_s=timeout_s)
        if reply.WhichOneof("flow") == "relay":
            return RoleAssignment(reply.relay.role_assignment.is_offerer)
        return None

    async def list_actors(
        self, actr_type: ActrType | str | None = None, *, timeout_s: float | None = None
    ) -> tuple[tuple[RouteCandidate, ...], bool]:
        """Who is registered in this actor's realm (at most 1000), and whether the list
        was truncated. Compatibility is ``unchecked`` in a listing."""
        if isinstance(actr_type, str):
            actr_type = ActrType.parse(actr_type)

        def build() -> wire.Envelope:
            env = wire.new_envelope()
            msg = env.list_actors
            self._fill_auth(msg)
            if actr_type is not None:
                wire.set_actr_type(msg.actr_type, actr_type)
            return env

        reply = await self._call(build, timeout_s=timeout_s)
        listing = reply.actor_list
        return wire.candidates_from_pb(listing.actors), listing.truncated

    async def renew_credential(self) -> None:
        """Get a fresh credential now (the client renews by itself before expiry)."""

        def build() -> wire.Envelope:
            env = wire.new_envelope()
            self._fill_auth(env.credential_update)
            return env

        reply = await self._call(build)
        ok = reply.credential_update_ok
        self._set_credential(
            ok.credential.encrypted_token, ok.credential.token_key_id, ok.credential_expires_at_ms
        )

    async def unregister(self, *, timeout_s: float | None = None) -> None:
        """Leave discovery and forget this registration. Idempotent.

        Best effort when disconnected: the registration is dropped locally and the
        server forgets the actor when the connection closes or heartbeats stop.
        """
        if self.closed:
            return
        connected = self.actr_id is not None and self._client.connected
        if connected:
            env = wire.new_envelope()
            self._fill_auth(env.unregister)
        self.closed = True
        self._client._forget(self)
        if not connected:
            return
        with contextlib.suppress(ActrError):
            await self._client._request(env, timeout_s=timeout_s)

    # -- internals ---------------------------------------------------------------------

    def _fill_auth(self, msg: Any) -> None:
        if self.closed:
            raise ClosedResourceError(f"{self!r} was unregistered")
        assert self.actr_id is not None
        wire.set_actr_id(msg.source, self.actr_id)
        msg.credential.encrypted_token = self._token
        msg.credential.token_key_id = self._key_id

    def _set_credential(self, token: bytes, key_id: int, expires_at_ms: int) -> None:
        self._token = token
        self._key_id = key_id
        self.credential_expires_at_ms = expires_at_ms
        remaining_s = expires_at_ms / 1000 - time.time()
        loop = asyncio.get_running_loop()
        self._renew_at = loop.time() + max(0.0, remaining_s * self._client.renew_fraction)
        self._client._keepalive.wake()

    async def _call(
        self, build: Callable[[], wire.Envelope], *, timeout_s: float | None = None
    ) -> wire.Envelope:
        """Send a request built fresh for each try; recover once from a lost connection
        or a refused credential (re-registering first), within one deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self._client.request_timeout_s)
        generation = self._generation
        try:
            return await self._client._request(build(), deadline=deadline)
        except Unauthorized:
            # Unavailable here: the connection dropped; reconnecting re-registers us.
            with contextlib.suppress(Unavailable):
                await self._reregister(generation, deadline=deadline)
        except Unavailable:
            pass
        return await self._client._request(build(), deadline=deadline)

    async def _reregister(
        self,
        generation: int,
        *,
        deadline: float | None = None,
        ws: ClientConnection | None = None,
        first: bool = False,
    ) -> None:
        """Register again unless someone already did since ``generation``.

        ``ws``: the connection being set up (reconnect). Otherwise, while disconnected,
        raises :class:`Unavailable` at once instead of waiting with the lock held: the
        reconnect needs this lock to re-register us. Only the ``first`` registration,
        unknown to the reconnect logic, waits for the connection.
        """
        async with self._lock:
            if self._generation != generation or self.closed:
                return
            if ws is None and not first and not self._client.connected:
                raise Unavailable(f"{self!r}: not connected; registering again on reconnect")
            env = wire.new_envelope()
            req = env.register_request
            wire.set_actr_type(req.actr_type, self.actr_type)
            req.realm.realm_id = self.realm
            req.service_spec.fingerprint = self.fingerprint
            req.service_spec.schema_text = self._schema_text
            wire.acl_to_pb(self._acl, req.acl)
            req.availability = wire.AVAILABILITY_TO_PB[self.availability]
            old_id = self.actr_id
            if old_id is not None:
                wire.set_actr_id(req.previous_id, old_id)
                req.previous_credential.encrypted_token = self._token
                req.previous_credential.token_key_id = self._key_id
            reply = await self._client._request(env, deadline=deadline, ws=ws)
            ok = reply.register_ok
            self.actr_id = wire.actr_id_from_pb(ok.actr_id)
            self._set_credential(
                ok.credential.encrypted_token,
                ok.credential.token_key_id,
                ok.credential_expires_at_ms,
            )
            interval = ok.heartbeat_interval_secs or 5.0
            self._client._keepalive.interval_s = interval
            self._next_beat = asyncio.get_running_loop().time() + interval
            self._generation += 1
        if old_id is not None and old_id != self.actr_id:
            log.warning("%r: server gave a new id (was %s)", self, old_id)
            await self._client._notify_reregistered(self, old_id)
