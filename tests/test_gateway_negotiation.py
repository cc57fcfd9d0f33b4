"""Who offers, glare and reconnects, with two RemoteNodes in one process whose relay is a
direct call (no signaling server): the state machine of actrhost/gateway/_remote.py."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

pytest.importorskip("aiortc")

from actrhost import NotFound
from actrhost import _envelope as wire
from actrhost._config import WebrtcConfig
from actrhost._envelope import TELL, Envelope
from actrhost._errors import ClosedResourceError
from actrhost._payload_type import PayloadType
from actrhost.gateway._peer import Callbacks, PeerConnection
from actrhost.gateway._remote import RemoteNode, parse_session
from actrhost.gateway._types import LinkState, Tuning
from actrhost.signaling import RoleAssignment, RoleNegotiation, SdpAnswer, SdpOffer

from .test_gateway_peer import Side
from .utils import run

TUNING = Tuning(
    connect_timeout_s=4.0, keepalive_interval_s=0.2, keepalive_timeout_s=1.0, reconnect_for_s=1.0
)


pytestmark = pytest.mark.usefixtures("gateway_process_setup")


class Gateway:
    """Just enough of a gateway around one RemoteNode: frames and states it saw."""

    def __init__(self, local: str, remote: str, net: dict[str, Gateway], offerer_node: str) -> None:
        self.local = local
        self.net = net
        self.offerer_node = offerer_node  # what the "server" says for every negotiation
        self.frames: list[bytes] = []
        self.tasks: set[asyncio.Future[None]] = set()
        self.states: list[tuple[str, LinkState]] = []
        self.given_up = asyncio.Event()
        self.relays = 0
        self.unregistered = False  # our actors' registrations closed: we are stopping
        callbacks = Callbacks(
            on_frame=lambda pc, lane, data: self.frames.append(data),
            on_control=lambda pc, m: None,
            on_state=lambda pc, s, r: None,
            on_pressure=lambda pc, socket, full: None,
            on_media=lambda pc, sample: None,
            parse_id=str,
        )
        self.node = RemoteNode(
            local,
            remote,
            webrtc=WebrtcConfig(),
            tuning=TUNING,
            callbacks=callbacks,
            relay=self.relay,
            on_state=self.on_state,
            on_given_up=lambda node, dropped: self.given_up.set(),
        )
        net[local] = self

    def on_state(self, node: RemoteNode, pc: PeerConnection, state: LinkState, reason: str) -> None:
        self.states.append((pc.session_id, state))

    async def relay(self, node: RemoteNode, payload: Any, session: str) -> RoleAssignment | None:
        self.relays += 1
        if self.unregistered:
            raise ClosedResourceError("Registration(test) was unregistered")
        if node.node_id not in self.net:
            raise NotFound(f"relay target on node {node.node_id} is not registered")
        other = self.net[node.node_id].node
        if isinstance(payload, RoleNegotiation):
            assert parse_session(session) is not None
            other.ensure(self.offerer_node != self.local)
            return RoleAssignment(self.offerer_node == self.local)
        if isinstance(payload, SdpOffer):
            self.tasks.add(asyncio.ensure_future(other.on_offer(payload.sdp, session)))
        elif isinstance(payload, SdpAnswer):
            self.tasks.add(asyncio.ensure_future(other.on_answer(payload.sdp, session)))
        return None


async def both_connected(a: Gateway, b: Gateway, timeout_s: float = 6.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not (a.node.state is LinkState.CONNECTED and b.node.state is LinkState.CONNECTED):
            await asyncio.sleep(0.01)


async def connected_by_traffic(net: dict[str, Gateway]) -> tuple[Gateway, Gateway]:
    """Node aaa (which offers) and bbb, connected because aaa had traffic for bbb."""
    a = Gateway("aaa", "bbb", net, offerer_node="aaa")
    b = Gateway("bbb", "aaa", net, offerer_node="aaa")
    a.node.connection()  # traffic: negotiate
    await both_connected(a, b)
    return a, b


def test_glare_both_offer_at_once_one_connection_wins() -> None:
    async def scenario() -> None:
        net: dict[str, Gateway] = {}
        # Each side is told it offers: two negotiations of different actor pairs at once.
        a = Gateway("aaa", "bbb", net, offerer_node="aaa")
        b = Gateway("bbb", "aaa", net, offerer_node="bbb")
        try:
            a.node.ensure(True)
            b.node.ensure(True)
            b.node.connection().enqueue(PayloadType.RPC_RELIABLE, b"queued before glare")
            await both_connected(a, b)
            assert a.node.pc is not None and b.node.pc is not None
            # The smaller node id kept its offer; the other answered it.
            assert a.node.pc.session_id == b.node.pc.session_id
            assert parse_session(a.node.pc.session_id)[1] == "aaa"
            assert a.node.failures == b.node.failures == 0
            async with asyncio.timeout(3):
                while not a.frames:
                    await asyncio.sleep(0.01)
            assert a.frames == [b"queued before glare"]  # moved to the winning connection
        finally:
            await a.node.close()
            await b.node.close()

    run(scenario())


def test_lost_connection_fails_then_reconnects_by_itself() -> None:
    async def scenario() -> None:
        net: dict[str, Gateway] = {}
        a, b = await connected_by_traffic(net)
        try:
            first = a.node.pc
            assert first is not None
            first.fail("test: link cut")
            await both_connected(a, b)
            assert a.node.pc is not first
            assert (first.session_id, LinkState.FAILED) in a.states
            assert a.node.connects == 2 and a.node.failures == 1
            b.node.pc.enqueue(PayloadType.RPC_RELIABLE, b"after")  # type: ignore[union-attr]
            async with asyncio.timeout(3):
                while b"after" not in a.frames:
                    await asyncio.sleep(0.01)
        finally:
            await a.node.close()
            await b.node.close()

    run(scenario())


def test_tells_a_connection_lost_before_any_arrived_go_again_and_arrive() -> None:
    # The other node remembered an earlier connection only if something had arrived on
    # it: tells in flight on one that brought nothing went again behind an "again" naming
    # a connection it did not know, and it dropped them all as "may have run already".
    async def scenario() -> None:
        net: dict[str, Gateway] = {}
        a, b = await connected_by_traffic(net)
        try:
            first = a.node.pc
            assert first is not None and first._pc is not None

            async def lost(data: bytes) -> None:
                pass

            first._pc.sctp.transport._send_data = lost  # what A sends now never arrives
            tells = [
                wire.encode(Envelope(TELL, "note", b"%04d" % n, request_id=str(n)))
                for n in range(20)
            ]
            for tell in tells:
                first.enqueue(PayloadType.RPC_RELIABLE, tell)
            await asyncio.sleep(0.2)  # some transmitted (and lost): in doubt
            first.fail("test: link cut")
            counters = b.node.counters
            async with asyncio.timeout(6):
                while len(b.frames) < len(tells) and not counters.tells_in_doubt:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert counters.tells_in_doubt == 0
            assert b.frames == tells
        finally:
            await a.node.close()
            await b.node.close()

    run(scenario())


def test_a_node_that_stays_unreachable_is_given_up() -> None:
    async def scenario() -> None:
        net: dict[str, Gateway] = {}
        a, b = await connected_by_traffic(net)
        try:
            del net["bbb"]  # the other node is gone: its actors are no longer registered
            await b.node.close()
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(TUNING.keepalive_timeout_s + TUNING.reconnect_for_s + 4):
                await a.given_up.wait()
            waited = asyncio.get_running_loop().time() - started
            assert waited >= TUNING.reconnect_for_s  # it kept trying for the whole window
            assert a.node.failures >= 3  # the lost connection, then failed attempts
            assert a.node.state in (LinkState.FAILED, LinkState.CLOSED)
            assert not b.given_up.is_set()
        finally:
            await a.node.close()

    run(scenario())


def test_traffic_while_reconnecting_starts_attempts_on_the_backoff_not_per_frame() -> None:
    async def scenario() -> None:
        net: dict[str, Gateway] = {}
        a, b = await connected_by_traffic(net)
        try:
            del net["bbb"]  # its gateway restarts: relays to it fail at once meanwhile
            assert a.node.pc is not None
            a.node.pc.fail("test: link cut")
            a.relays = 0
            loop = asyncio.get_running_loop()
            until = loop.time() + 0.8
            while loop.time() < until:  # a busy caller: a frame every 2 ms
                a.node.connection().enqueue(PayloadType.RPC_RELIABLE, b"call")
                await asyncio.sleep(0.002)
            # One attempt per 0.2 s at most (the reconnect loop's and traffic's alike),
            # not one per frame (~400).
            assert 1 <= a.relays <= 6, a.relays
            assert a.node.failures <= 7, a.node.failures  # the cut, then the attempts
        finally:
            await a.node.close()
            await b.node.close()

    run(scenario())


def test_a_reconnect_after_our_registrations_closed_ends_quietly() -> None:
    async def scenario() -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        net: dict[str, Gateway] = {}
        a, b = await connected_by_traffic(net)
        try:
            a.unregistered = True  # the gateway is stopping: relays raise
            assert a.node.pc is not None
            a.node.pc.fail("test: link cut")
            for _ in range(20):  # traffic meanwhile: attempts on the backoff
                a.node.connection()
                await asyncio.sleep(0.03)
            assert a.relays >= 1
        finally:
            await a.node.close()
            await b.node.close()
        gc.collect()  # an exception nobody retrieved is reported when its task goes
        await asyncio.sleep(0)
        return errors

    assert run(scenario()) == []


def test_offers_that_queued_up_are_answered_the_last_one_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A gateway held by SIGSTOP for 30 s found the other node's reconnect offers queued
    # up; each replaced the one before while it was being answered, and every replaced
    # answer logged "answering failed" with aiortc's traceback, at ERROR (QA).
    caplog.set_level(logging.INFO)

    async def scenario() -> tuple[str, str | None]:
        net: dict[str, Gateway] = {}
        Gateway("aaa", "bbb", net, offerer_node="aaa")
        b = Gateway("bbb", "aaa", net, offerer_node="aaa")
        offerers = [Side("aaa"), Side("aaa")]
        try:
            offers = [await side.pc.create_offer() for side in offerers]
            sessions = ["pc|aaa|bbb|00000001", "pc|aaa|bbb|00000002"]
            await asyncio.gather(*map(b.node.on_offer, offers, sessions))
            assert b.node.pc is not None
            return sessions[1], b.node.pc.session_id
        finally:
            await b.node.close()
            for side in offerers:
                await side.pc.close()

    last, answered = run(scenario())
    assert answered == last
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "answer to pc|aaa|bbb|00000001 abandoned" in caplog.text


def test_two_failures_in_one_loop_turn_start_one_reconnect_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The connection failed, and the one started for its traffic failed too before the
    # reconnect loop ran (QA: a gateway back from SIGSTOP): two loops ran side by side,
    # each logging its attempts.
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        net: dict[str, Gateway] = {}
        a, b = await connected_by_traffic(net)
        try:
            assert a.node.pc is not None
            a.node.pc.fail("test: link cut")
            a.node.connection().fail("test: cut again")
            await both_connected(a, b)
            await asyncio.sleep(0.2)
        finally:
            await a.node.close()
            await b.node.close()

    run(scenario())
    starts = [r for r in caplog.records if "reconnecting for up to" in r.getMessage()]
    assert len([r for r in starts if "RemoteNode(bbb" in r.getMessage()]) == 1, caplog.text
