"""One remote node as this gateway sees it: its current peer connection, who offers,
glare, reconnects, and counters that survive reconnects.

Negotiation (docs/gateway.md, "Connecting"): a connection starts with a
``RoleNegotiation`` relayed between one actor of each node; the signaling server answers
both sides with opposite roles (the actor with the smaller serial offers). The offering
gateway sends an ``SdpOffer``, the other answers. Session ids name both nodes:

* ``neg|<from node>|<to node or ->|<nonce>`` on role negotiations,
* ``pc|<offering node>|<answering node>|<nonce>`` on offers and answers,

so the receiving gateway knows which node a relay comes from and puts every actor pair
of two nodes on one connection. Two negotiations of different actor pairs may both make
a side offerer at once (glare); then the node with the smaller node id keeps its offer
and the other drops its own and answers. Every rule is deterministic, so both sides
agree without another round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCCertificate

from .._config import WebrtcConfig
from .._errors import ActrError, ClosedResourceError, PermissionDenied
from .._ids import ActrId
from ..signaling import RoleAssignment, SdpAnswer, SdpOffer
from ._carry import Carried
from ._peer import Callbacks, PeerConnection, close_in_background
from ._types import TERMINAL, LinkCounters, LinkState, Tuning

log = logging.getLogger(__name__)

#: Backoff between reconnect attempts after a connection failed.
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 2.0

Relay = Callable[["RemoteNode", Any, str], Awaitable[RoleAssignment | None]]


def session_id(kind: str, first: str, second: str) -> str:
    """A relay session id naming both nodes (see the module docstring)."""
    return f"{kind}|{first}|{second}|{secrets.token_hex(4)}"


def parse_session(text: str) -> tuple[str, str, str] | None:
    """(kind, first node, second node or "") of a session id, or None if not ours."""
    parts = text.split("|")
    if len(parts) != 4 or parts[0] not in ("neg", "pc") or not parts[1]:
        return None
    return parts[0], parts[1], "" if parts[2] == "-" else parts[2]


#: How many replaced connections a node remembers (for their stream frame counts).
_EARLIER_KEPT = 4


class RemoteNode:
    """Another node's gateway: at most one live :class:`PeerConnection` at a time.

    ``relay(node, payload, session_id)`` sends a signaling relay from one of our actors
    to one of this node's actors (the gateway picks the pair). ``on_state(node, pc,
    state, reason)`` reports state changes of the *current* connection only: a
    connection replaced after glare is retired silently. ``on_given_up(node, dropped)``
    says that a failed connection could not be restored within
    ``Tuning.reconnect_for_s`` (or the node stopped), with the tells and stream chunks
    that waited for it and are dropped now.
    """

    def __init__(
        self,
        local_node: str,
        node_id: str,
        *,
        webrtc: WebrtcConfig,
        tuning: Tuning,
        callbacks: Callbacks,
        relay: Relay,
        certificate: RTCCertificate | None = None,
        on_state: Callable[[RemoteNode, PeerConnection, LinkState, str], None],
        on_given_up: Callable[[RemoteNode, list[Carried]], None],
    ) -> None:
        self.local_node = local_node
        self.node_id = node_id
        self._webrtc = webrtc
        self._tuning = tuning
        self._certificate = certificate
        self._relay = relay
        self._on_state = on_state
        self._on_given_up = on_given_up
        #: The last connections replaced by a new one, by session id: what they received
        #: tells which of the frames sent again are duplicates (module ``_carry``).
        self._earlier: dict[str, PeerConnection] = {}
        # The owner's callbacks, with on_state wrapped to filter retired connections.
        self._owner_on_control = callbacks.on_control
        self._callbacks = Callbacks(
            on_frame=callbacks.on_frame,
            on_control=self._pc_control,
            on_state=self._pc_state,
            on_pressure=callbacks.on_pressure,
            on_media=callbacks.on_media,
            parse_id=callbacks.parse_id,
            earlier_connection=self._earlier.get,
            received_before=callbacks.received_before,
        )
        self.counters = LinkCounters()
        #: The node's config name, from its gateway's "hello" ("" until it arrives).
        self.name = ""
        self.actors: set[ActrId] = set()
        #: The node's actors that signaling knows by a new id now (its "hello"), by the
        #: id their workers have: both reach the same actor, counted once.
        self.aliases: dict[ActrId, ActrId] = {}
        #: (local actor, remote actor) pairs known to pass both ACLs, newest first.
        self.pairs: list[tuple[ActrId, ActrId]] = []
        self.pc: PeerConnection | None = None
        self.connects = 0
        #: Connection attempts that failed, lost links included (several a second while
        #: traffic waits for a reconnect), and links lost: connections that had been up.
        self.failures = 0
        self.links_lost = 0
        #: When this entry (and its counters) began: a node forgotten and found again is
        #: a new entry, counting from zero (wall-clock seconds, for `actrhost load`).
        self.since = time.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconnect_until = 0.0
        self._reconnecting = False
        # While reconnecting: why the link failed, and why the latest attempt did (QA:
        # "nothing received for 3.4 s" gave way to "no connection within 10 s").
        self._failed_because = ""
        self._attempt_failed_because = ""
        #: The last negotiation was refused: the node's ACLs deny every pair of actors
        #: tried. It is up, and refuses us (not a node that may be back in a moment).
        self.refuses_us = False
        #: Why reconnecting was given up (the window ended, the node unreachable): ""
        #: for a node that said bye or was never given up on.
        self.gave_up_because = ""
        self._last_attempt = 0.0  # loop time a negotiation started (or will)
        self._said_bye = False  # the node told us it stops for good
        self._closed = False
        # Tells and reliable stream chunks a failed connection had queued: the next one
        # sends them first (PeerConnection.take_undelivered).
        self._carried: list[Carried] = []
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        name = f"{self.name} " if self.name else ""
        return f"RemoteNode({name}{self.node_id} {self.state})"

    @property
    def state(self) -> LinkState:
        """The current connection's state (``new`` when there is none)."""
        return self.pc.state if self.pc is not None else LinkState.NEW

    def add_pair(self, local: ActrId, remote: ActrId) -> None:
        """Remember an actor pair that can relay between the two nodes."""
        pairs = self.pairs
        if pairs and pairs[0][0] is local and pairs[0][1] is remote:
            return  # the common case, once per call: decoded ids are cached objects
        self.actors.add(remote)
        pair = (local, remote)
        if self.pairs[:1] != [pair]:
            with contextlib.suppress(ValueError):
                self.pairs.remove(pair)
            self.pairs.insert(0, pair)
            del self.pairs[8:]

    def reconnecting_because(self) -> str:
        """Why the link failed, while no new connection has come up yet; "" otherwise.

        Calls made meanwhile wait for the next connection only ``reconnect_call_wait_s``
        (the gateway's ``_to_node``); tells and stream chunks wait through the whole
        reconnect window.
        """
        if not self._reconnecting or self.state is LinkState.CONNECTED:
            return ""
        why = self._failed_because or "the link failed"
        latest = self._attempt_failed_because
        return f"{why}; since then: {latest}" if latest and latest != why else why

    def doubted_because(self) -> str:
        """Why the node may be gone although its link is up: its actors left signaling
        (its gateway died, or only its signaling connection), and the link is being
        probed (``PeerConnection.probe``); "" otherwise."""
        pc = self.pc
        if pc is None or pc.state is not LinkState.CONNECTED:
            return ""
        return pc.doubted_because

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the current connection ----------------------------------------------------------

    def _live(self) -> PeerConnection | None:
        pc = self.pc
        return pc if pc is not None and pc.state not in TERMINAL else None

    def _new_pc(self, session: str) -> PeerConnection:
        pc = PeerConnection(
            self.node_id,
            session,
            webrtc=self._webrtc,
            tuning=self._tuning,
            counters=self.counters,
            callbacks=self._callbacks,
            certificate=self._certificate,
        )
        pc.quiet = self._reconnecting  # the reconnect loop reports on its attempts
        if self.pc is not None and self.pc.was_connected:
            self._earlier[self.pc.session_id] = self.pc
            while len(self._earlier) > _EARLIER_KEPT:
                del self._earlier[next(iter(self._earlier))]
        self.pc = pc
        carried, self._carried = self._carried, []
        pc.enqueue_carried(carried)
        self._spawn(self._watch_new(pc))
        return pc

    def _drop_carried(self) -> list[Carried]:
        """Drop (and count) what waited for the next connection; returns it."""
        dropped, self._carried = self._carried, []
        for item in dropped:
            self.counters.by_lane[item.lane].dropped += item.frame_count()
        return dropped

    async def _watch_new(self, pc: PeerConnection) -> None:
        """A connection that waits for an offer that never comes fails like any other."""
        await asyncio.sleep(self._tuning.connect_timeout_s)
        if pc.state is LinkState.NEW:
            pc.fail(
                f"no offer from node {self.node_id} within {self._tuning.connect_timeout_s:g} s"
            )

    def connection(self) -> PeerConnection:
        """The live connection, starting one (negotiated in the background) if none.

        While reconnecting after a failure, attempts start at most every
        ``RECONNECT_MIN_S``: traffic meanwhile waits in the next one. (Each batch of
        traffic used to start a negotiation of its own: 518 relays in 1.8 s while the
        other node's gateway restarted, each counted as a failure.)
        """
        pc = self._live()
        if pc is not None:
            return pc
        delay = 0.0
        if self._reconnecting:
            delay = max(0.0, self._last_attempt + RECONNECT_MIN_S - self._loop.time())
        return self._start_connection(delay)

    def _start_connection(self, delay_s: float = 0.0) -> PeerConnection:
        pc = self._new_pc(session_id("pc", self.local_node, self.node_id))
        self._last_attempt = self._loop.time() + delay_s
        self._spawn(self._negotiate(delay_s))
        return pc

    async def _negotiate(self, delay_s: float = 0.0) -> None:
        """Ask the server who offers (a relayed RoleNegotiation), then act on it."""
        from ..signaling import RoleNegotiation

        if delay_s:
            await asyncio.sleep(delay_s)
            pc = self._live()
            if self._closed or pc is None or pc.state is not LinkState.NEW or pc.is_offerer:
                return  # closed meanwhile, or an offer from the other side came first
        try:
            role = await self._relay(
                self, RoleNegotiation(), session_id("neg", self.local_node, self.node_id)
            )
        except ClosedResourceError:
            return  # our actors' registrations closed: this gateway is stopping
        except ActrError as exc:
            self.refuses_us = isinstance(exc, PermissionDenied)
            pc = self._live()
            if pc is not None and pc.state is LinkState.NEW:
                pc.denied = self.refuses_us
                pc.fail(f"role negotiation with node {self.node_id} failed: {exc.message}")
            return
        self.refuses_us = False
        if role is not None:
            self.ensure(role.is_offerer)

    def ensure(self, offerer: bool) -> None:
        """Act on a role the server assigned: offer, or wait for the offer."""
        if self._closed:
            return
        pc = self._live()
        if pc is None:
            pc = self._new_pc(session_id("pc", self.local_node, self.node_id))
        if offerer and pc.state is LinkState.NEW and not pc.is_offerer:
            pc.is_offerer = True
            self._spawn(self._offer(pc))

    async def _offer(self, pc: PeerConnection) -> None:
        try:
            sdp = await pc.create_offer()
            if pc.state in TERMINAL:
                return
            await self._relay(self, SdpOffer(sdp), pc.session_id)
        except ActrError as exc:
            pc.fail(f"offer not delivered: {exc.message}")
        except Exception as exc:
            if pc.state in TERMINAL:  # replaced (an offer of theirs) while we made it
                log.info("%r: offer %s abandoned: %s", self, pc.session_id, pc.error)
                return
            log.exception("%r: creating the offer failed", self)
            pc.fail(f"offer failed: {exc!r}")

    async def on_offer(self, sdp: str, session: str) -> None:
        """An offer from this node (session ``pc|<them>|<us>|…``)."""
        if self._closed:
            return
        pc = self._live()
        if pc is not None and pc.session_id == session:
            return  # a duplicate
        moved: list[Carried] = []
        if pc is not None:
            if pc.is_offerer and pc.state is not LinkState.CONNECTED:
                if self.local_node < self.node_id:
                    log.info("%r: glare, keeping our offer %s", self, pc.session_id)
                    return
                log.info("%r: glare, answering %s instead of our offer", self, session)
                moved = pc.take_queued()
                self._retire(pc)
            elif pc.state is LinkState.NEW:
                moved = pc.take_queued()
                self._retire(pc)
            else:
                # The other side started over: it lost the old connection (or restarted).
                pc.fail(f"node {self.node_id} opened a new connection")
        new = self._new_pc(session)
        new.enqueue_carried(moved)
        try:
            answer = await new.accept_offer(sdp)
            if new.state in TERMINAL:
                return
            await self._relay(self, SdpAnswer(answer), session)
        except ActrError as exc:
            new.fail(f"answer not delivered: {exc.message}")
        except Exception as exc:
            if new.state in TERMINAL:
                # A later offer replaced it while we answered (aiortc: "closed"): offers
                # queue up for a gateway that was stopped a while (SIGSTOP, QA).
                log.info("%r: answer to %s abandoned: %s", self, session, new.error)
                return
            log.exception("%r: answering failed", self)
            new.fail(f"answer failed: {exc!r}")

    async def on_answer(self, sdp: str, session: str) -> None:
        """An answer to one of our offers."""
        pc = self._live()
        if pc is None or pc.session_id != session or not pc.is_offerer:
            return
        try:
            await pc.accept_answer(sdp)
        except Exception as exc:
            pc.fail(f"bad answer: {exc!r}")

    def _retire(self, pc: PeerConnection) -> None:
        """Drop a connection nobody will use, without reporting it as a failure."""
        if self.pc is pc:
            self.pc = None
        # Every first connection retires one (the side waiting for the offer had made its
        # own): its "new -> closed" at INFO only puzzled people reading the log.
        pc.quiet = True
        close_in_background(pc.close())

    def _pc_control(self, pc: PeerConnection, message: dict[str, Any]) -> None:
        if message["op"] == "bye":  # PeerConnection.say_bye on the other side
            if pc is self.pc:
                self._said_bye = True
            return
        self._owner_on_control(pc, message)

    def _pc_state(self, pc: PeerConnection, state: LinkState, reason: str) -> None:
        if pc is not self.pc:
            return
        if state is LinkState.CONNECTED:
            self.connects += 1
            self._reconnect_until = 0.0
            self._said_bye = False
        elif state is LinkState.FAILED:
            self.failures += 1
            if pc.was_connected:
                self.links_lost += 1
            if self._reconnecting:
                self._attempt_failed_because = reason
            else:
                self._failed_because, self._attempt_failed_because = reason, ""
            if not self._said_bye and not self._closed:
                # Its senders were told these went: they go on the next connection.
                self._carried += pc.take_undelivered()
            if not self._reconnect_until:
                self._reconnect_until = self._loop.time() + self._tuning.reconnect_for_s
            if not self._reconnecting and not self._closed and not self._said_bye:
                # Set here, not in the task: a second failure before it runs (a connection
                # that fails as it starts) would spawn a second one (two attempts each turn).
                self._reconnecting = True
                self._spawn(self._reconnect())
        self._on_state(self, pc, state, reason)
        if state is LinkState.FAILED and self._said_bye and not self._closed:
            # A node that stopped does not come back under this id (a new run of it
            # has a new one): reconnecting would only relay to actors that are gone.
            log.info(
                "%r: the node stopped; forgetting it until traffic for one of its actors "
                "finds it again",
                self,
            )
            self._on_given_up(self, [])

    async def drain(self, timeout_s: float) -> None:
        """Let what is queued for that node leave first (PeerConnection.drain)."""
        if self.pc is not None:
            await self.pc.drain(timeout_s)

    async def say_bye(self) -> None:
        """This node stops: tell the other one, so that it does not try to reconnect."""
        if self.pc is not None:
            await self.pc.say_bye()

    async def _reconnect(self) -> None:
        """After a failure keep negotiating new connections, with backoff, for a while."""
        self._reconnecting = True
        delay = RECONNECT_MIN_S
        attempts = 0
        log.info("%r: reconnecting for up to %g s", self, self._tuning.reconnect_for_s)
        try:
            while not self._closed and self._loop.time() < self._reconnect_until:
                await asyncio.sleep(delay)
                attempts += 1
                pc = self.connection()  # traffic may have started this attempt already
                while pc.state in (LinkState.NEW, LinkState.CONNECTING):
                    await asyncio.sleep(0.05)
                    pc = self.pc if self.pc is not None else pc
                if pc.state is LinkState.CONNECTED:
                    log.info("%r: reconnected (attempt %d)", self, attempts)
                    return
                delay = min(delay * 2, RECONNECT_MAX_S)
            self._reconnect_until = 0.0  # a later failure starts a new window
            self.gave_up_because = (
                f"unreachable for {self._tuning.reconnect_for_s:g} s "
                f"({self.reconnecting_because()}), given up on"
            )
            if not self._closed and attempts:
                error = self.pc.error if self.pc is not None else ""
                log.warning(
                    "%r: gave up reconnecting after %d attempts (last: %s); forgetting the "
                    "node until traffic for one of its actors finds it again",
                    self,
                    attempts,
                    error or "no error",
                )
        finally:
            self._reconnecting = False
        if not self._closed and self._live() is None:
            # Nodes come and go (a restarted node has a new id): one that stayed
            # unreachable is dropped rather than kept, failed, in the table forever.
            dropped = self._drop_carried()
            if dropped:
                # Its counters go with it: the log keeps the number (QA: a stream lost
                # 1,391 chunks to a 90 s outage, and nothing said so afterwards).
                log.warning(
                    "%r: %d tell(s) and stream chunk(s) that waited for it are dropped",
                    self,
                    sum(item.frame_count() for item in dropped),
                )
            self._on_given_up(self, dropped)

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._closed = True
        self._drop_carried()
        for task in list(self._tasks):
            task.cancel()
        if self.pc is not None:
            await self.pc.close()

    def stats(self) -> dict[str, Any]:
        """Connection state, candidate type, per-lane traffic, drops (``actrhost status``)."""
        pc = self.pc
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state.value,
            "reconnecting": self._reconnecting,  # after a failure: the state is the attempt's
            "down_because": self.reconnecting_because(),  # why, until a connection is back
            "doubted_because": self.doubted_because(),  # why its link is being probed
            "candidate_type": pc.candidate_type if pc is not None else "",
            "connects": self.connects,
            "failures": self.failures,
            "links_lost": self.links_lost,
            "since": self.since,
            "actors": sorted({str(self.aliases.get(a, a)) for a in self.actors}),
        }
        if pc is not None:
            out["connection"] = pc.stats()
        out.update(self.counters.as_dict())
        return out
