"""Telling a sender that its tells and stream frames to another node's actor were dropped
(actrhost/_undeliverable.py, actrhost/gateway/_notices.py), part by part. The whole path
between two real nodes: tests/test_remote.py and tests/test_gateway_failure.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import zmq

from actrhost import _envelope as wire
from actrhost._directory import gateway_feed_endpoint
from actrhost._envelope import REQUEST, STREAM, TELL, Envelope, StreamFrame
from actrhost._errors import NotFound, PermissionDenied, Unavailable
from actrhost._ids import ActrId
from actrhost._rpc import RpcEndpoint
from actrhost._undeliverable import (
    KEPT_MAX,
    KEPT_S,
    NOTICE_EVERY_S,
    NOTICE_ROUTE,
    NoticeLimiter,
    RefusedTargets,
    is_notice,
    notice,
)
from actrhost.gateway._counters import GatewayCounters
from actrhost.gateway._notices import (
    DROPPED_FRAMES_PER_TURN,
    SHELL_TARGETS_MAX,
    SHELLS_PER_TARGET_MAX,
    Notices,
    ShellTellers,
)
from actrhost.gateway._types import CALLS, STREAMS, LinkCounters, LinkState

from .utils import beside_a_bare_gateway, run

OURS = ActrId.parse("1@1:test+A")
THEIRS = ActrId.parse("2@1:test+B")
ELSEWHERE = ActrId.parse("3@1:test+C")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_notice_makes_the_sends_to_its_target_raise_for_a_while() -> None:
    clock = Clock()
    refused = RefusedTargets(clock)
    refused.check(THEIRS)  # nothing known: nothing raised
    data = notice(THEIRS, Unavailable("actor b is failed"))
    env = wire.decode(data)
    assert isinstance(env, Envelope) and is_notice(env)
    assert refused.learn(env)
    for _ in range(3):  # every send within KEPT_S, not just the next one
        with pytest.raises(Unavailable, match="actor b is failed"):
            refused.check(THEIRS)
    refused.check(OURS)  # another target is not refused
    refused.check(None)  # a Shell
    clock.now += KEPT_S
    refused.check(THEIRS)  # then one goes out again, and finds out


def test_a_notice_without_target_or_error_is_refused_and_answers_are_no_notices() -> None:
    refused = RefusedTargets(Clock())
    no_target = wire.error_response("", NotFound("x"))
    no_target.route_key = NOTICE_ROUTE
    assert not refused.learn(no_target)
    no_error = wire.decode(notice(THEIRS, NotFound("x")))
    assert isinstance(no_error, Envelope)
    no_error.error_code = 0
    assert not refused.learn(no_error)
    refused.check(THEIRS)
    answer = wire.error_response("r1", NotFound("x"))  # an answer to a call
    assert not is_notice(answer)


def test_the_targets_remembered_are_bounded() -> None:
    refused = RefusedTargets(Clock())
    targets = [ActrId.parse(f"{n + 16:x}@1:test+B") for n in range(KEPT_MAX + 1)]
    for target in targets:
        env = wire.decode(notice(target, NotFound("gone")))
        assert isinstance(env, Envelope) and refused.learn(env)
    refused.check(targets[0])  # the oldest went
    with pytest.raises(NotFound):
        refused.check(targets[-1])


def test_a_gateway_sends_one_notice_per_pair_per_interval() -> None:
    clock = Clock()
    limiter = NoticeLimiter(clock)
    assert limiter.due((OURS, THEIRS))
    assert not limiter.due((OURS, THEIRS))
    assert limiter.due((OURS, ELSEWHERE))  # another pair has its own
    clock.now += NOTICE_EVERY_S
    assert limiter.due((OURS, THEIRS))
    for n in range(KEPT_MAX + 5):  # bounded
        limiter.due(n)
    assert len(limiter._sent_at) == KEPT_MAX


def test_a_notice_on_the_feed_is_learned_and_one_from_another_worker_is_not(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        zctx = zmq.Context()
        endpoint = f"ipc://{tmp_path}/a-1.sock"
        rpc = RpcEndpoint(zctx, endpoint, lambda env, route: None, hwm=100, name="w")
        feed = zctx.socket(zmq.DEALER)  # as the gateway binds it
        feed.bind(gateway_feed_endpoint(endpoint))
        other = zctx.socket(zmq.DEALER)  # any local peer, on the worker's ROUTER
        other.connect(endpoint)
        try:
            rpc.open_feed(gateway_feed_endpoint(endpoint))
            other.send(notice(OURS, NotFound("forged")))
            feed.send(wire.encode(wire.error_response("", NotFound("no target"))))
            malformed = wire.decode(notice(ELSEWHERE, NotFound("x")))
            assert isinstance(malformed, Envelope)
            malformed.target = None
            feed.send(wire.encode(malformed))
            feed.send(notice(THEIRS, Unavailable("actor b is failed")))
            for _ in range(200):
                try:
                    rpc.refused.check(THEIRS)
                except Unavailable:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the notice was not learned")
            rpc.refused.check(OURS)  # not from the gateway's feed: not a notice
            assert rpc.counters.late_responses == 2  # it, and the notice-less answer
            assert rpc.counters.malformed_frames == 1  # the notice without a target
        finally:
            rpc.close()
            feed.close(0)
            other.close(0)
            zctx.term()

    run(scenario(), 10)


def test_a_notice_on_a_link_to_the_gateway_makes_the_next_tell_raise(tmp_path: Path) -> None:
    # A Shell has no feed: the gateway answers on the connection the dropped tell came
    # on, and RpcEndpoint.tell (the Shell's and the worker's) checks what it was told.
    async def scenario() -> None:
        async with beside_a_bare_gateway(tmp_path) as (rpc, gateway, endpoint):
            loop = asyncio.get_running_loop()
            tell = Envelope(TELL, "r", b"1", request_id="t1", target=THEIRS)
            # Another peer (a local worker) says the same: not its to say, not learned.
            zctx = zmq.Context()
            other = zctx.socket(zmq.ROUTER)
            other.bind(f"ipc://{tmp_path}/other.sock")
            try:
                await rpc.tell(f"ipc://{tmp_path}/other.sock", tell, loop.time() + 5)
                routing_id, _ = await asyncio.to_thread(other.recv_multipart)
                other.send_multipart([routing_id, notice(THEIRS, NotFound("forged"))])
                while not rpc.counters.late_responses:  # (taken as an answer nobody awaits)
                    await asyncio.sleep(0.01)
                rpc.refused.check(THEIRS)
            finally:
                other.close(0)
                zctx.term()
            await rpc.tell(endpoint, tell, loop.time() + 5)
            routing_id, _ = await asyncio.to_thread(gateway.recv_multipart)
            gateway.send_multipart([routing_id, notice(THEIRS, NotFound("no such actor"))])
            with pytest.raises(NotFound, match="no such actor"):
                for _ in range(200):
                    await rpc.tell(endpoint, tell, loop.time() + 5)
                    await asyncio.sleep(0.01)
            await rpc.tell(endpoint, Envelope(TELL, "r", target=OURS), loop.time() + 5)
            assert rpc.counters.late_responses == 1  # the gateway's was a notice

    run(scenario(), 10)


class FakeLink:
    def __init__(self, remote_node: str) -> None:
        self.remote_node = remote_node
        self.state = LinkState.CONNECTED
        self.counters = LinkCounters()
        self.said: list[dict[str, Any]] = []

    def send_control(self, message: dict[str, Any]) -> None:
        self.said.append(message)


class FakeFeed:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_nowait(self, data: bytes) -> None:
        self.sent.append(data)


class FakeRouter:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart_nowait(self, parts: list[bytes]) -> None:
        self.sent.append(parts)


class FakeEntry:
    endpoint = "ipc:///nowhere/a-1.sock"
    comes_back = False  # failed or stopped for good: its senders are told


class Gateway(Notices):
    """Just the notices part of a gateway: node "A" hosts OURS; THEIRS is on node "B"."""

    def __init__(self) -> None:
        clock = Clock()
        self.clock = clock
        self.node_id = "A"
        self.counters = GatewayCounters()
        self.directory = {OURS: FakeEntry()}  # type: ignore[assignment]
        self.link = FakeLink("B")
        self._nodes = {"B": type("Node", (), {"pc": self.link})()}  # type: ignore[dict-item]
        self._node_of = {THEIRS: "B", ELSEWHERE: "C"}
        self._notices = NoticeLimiter(clock)
        self._to_signaling = {}
        self._to_worker = {}
        self.feed = FakeFeed()
        self._dealer = lambda endpoint: self.feed  # type: ignore[assignment,return-value]
        self.router = FakeRouter()  # the calls socket
        self.streams_router = FakeRouter()  # the streams socket
        self._routers = {CALLS: self.router, STREAMS: self.streams_router}  # type: ignore[dict-item]
        self._shell_tellers = ShellTellers()


def gone(target: object, source: object, code: object = 503, reason: object = "x") -> dict:
    return {"op": "gone", "t": str(target), "s": str(source), "code": code, "m": reason}


def test_gone_is_passed_on_for_that_nodes_actors_to_ours_only() -> None:
    gateway = Gateway()
    link = gateway.link
    gateway._on_gone(link, gone(ELSEWHERE, OURS))  # node C's actor: not B's to say
    gateway._on_gone(link, gone(THEIRS, THEIRS))  # not to one of ours
    gateway._on_gone(link, gone("nonsense", OURS))
    gateway._on_gone(link, gone(THEIRS, OURS, code="503"))
    gateway._on_gone(link, {"op": "gone"})
    assert link.counters.malformed == 5
    assert gateway.feed.sent == []
    gateway._on_gone(link, gone(THEIRS, OURS, 503, "actor b is failed"))
    gateway._on_gone(link, gone(THEIRS, OURS, 503, "actor b is failed"))  # within the interval
    (data,) = gateway.feed.sent
    env = wire.decode(data)
    assert isinstance(env, Envelope) and is_notice(env) and env.target == THEIRS
    assert (env.error_code, env.error_message) == (503, "actor b is failed")
    assert gateway.counters.senders_told == 1
    gateway._notify_sender(OURS, ELSEWHERE, PermissionDenied("acl"), b"")  # not said
    gateway._notify_sender(None, ELSEWHERE, NotFound("x"), b"")  # no actor, no connection
    assert len(gateway.feed.sent) == 1 and gateway.router.sent == []
    # A Shell's tell (no actor id): told on the connection it came on, once a while.
    gateway._notify_sender(None, ELSEWHERE, NotFound("x"), b"shell-7")
    gateway._notify_sender(None, ELSEWHERE, NotFound("x"), b"shell-7")
    ((routing_id, data),) = gateway.router.sent
    env = wire.decode(data)
    assert routing_id == b"shell-7" and isinstance(env, Envelope) and is_notice(env)
    assert env.target == ELSEWHERE and gateway.counters.senders_told == 2


def test_senders_known_to_signaling_by_a_new_id_are_told_on_their_workers_feed() -> None:
    # A signaling server restarted without its keys gave OURS a new id, which its frames
    # leave with (Gateway._refresh_aliases); drops named that id, no worker had it, and
    # the sender was never told (QA: 2,344 undeliverable, senders_told 0).
    gateway = Gateway()
    known_as = ActrId.parse("11@1:test+A")
    gateway._to_signaling, gateway._to_worker = {OURS: known_as}, {known_as: OURS}
    tell = wire.encode(Envelope(TELL, "r", source=known_as, target=ELSEWHERE))
    gateway._tell_senders_of_dropped([tell], NotFound("no node hosts it"))
    gateway._on_gone(gateway.link, gone(THEIRS, known_as, 503, "actor b is failed"))
    assert gateway.link.counters.malformed == 0
    assert [wire.decode(data).target for data in gateway.feed.sent] == [ELSEWHERE, THEIRS]
    assert gateway.counters.senders_told == 2


def test_nothing_is_said_for_a_target_that_comes_back() -> None:
    # A sample dropped while its target restarts is dropped as under pressure: said gone,
    # its sender raised for a second where between local actors nothing did (QA).
    gateway = Gateway()
    gateway.directory[OURS].comes_back = True  # type: ignore[index]
    gateway._say_gone(gateway.link, THEIRS, OURS, Unavailable("actor a is starting"))
    assert gateway.link.said == []


def test_the_targets_node_says_gone_once_per_pair_for_tells_and_chunks_only() -> None:
    gateway = Gateway()  # here playing node B's part: THEIRS sends to OURS, which is gone
    error = Unavailable("actor a is failed")
    tell = Envelope(TELL, "r", source=THEIRS, target=OURS)
    call = Envelope(REQUEST, "r", request_id="q1", source=ELSEWHERE, target=OURS)
    chunk = StreamFrame(STREAM, "s", source=THEIRS, target=OURS, payload=b"x")
    frames = [wire.encode(tell), wire.encode(call), wire.encode_stream(chunk), b"\xff junk"]
    gateway._say_gone_for_frames(((data, None) for data in frames), error)
    (said,) = gateway.link.said  # the tell's and the chunk's pair, once; not the call's
    assert said == {"op": "gone", "t": str(OURS), "s": str(THEIRS), "code": 503, "m": error.message}
    gateway.clock.now += NOTICE_EVERY_S
    gateway._say_gone(None, THEIRS, OURS, PermissionDenied("acl"))  # not said
    gateway.link.state = LinkState.FAILED
    gateway._say_gone(None, THEIRS, OURS, error)  # no live connection: nothing to say it on
    assert len(gateway.link.said) == 1


def test_frames_dropped_with_a_node_given_up_are_told_to_their_senders() -> None:
    # Node A gave node B up after its reconnect window: what waited for it is dropped.
    # Our actor that sent it is told on its worker's feed, a Shell on its connection;
    # once per (source, target), and not for calls (their callers got 503 already).
    gateway = Gateway()
    gateway._shell_tellers.remember(THEIRS, (CALLS, b"shell-1"))
    error = Unavailable("node b stayed unreachable for 60 s: what waited for it was dropped")
    tell = Envelope(TELL, "r", source=OURS, target=THEIRS)
    call = Envelope(REQUEST, "r", request_id="q1", source=OURS, target=ELSEWHERE)
    chunk = StreamFrame(STREAM, "s", source=OURS, target=THEIRS, payload=b"x")
    shell_tell = Envelope(TELL, "r", target=THEIRS)
    frames = [wire.encode(tell), wire.encode_stream(chunk), wire.encode(call)]
    frames += [wire.encode(shell_tell), wire.encode(shell_tell), b"\xff junk"]
    gateway._tell_senders_of_dropped(frames, error)
    (data,) = gateway.feed.sent  # the actor's tell and chunk to THEIRS: once
    ((routing_id, shell_data),) = gateway.router.sent  # the Shell's, on its connection
    assert routing_id == b"shell-1"
    for env in (wire.decode(data), wire.decode(shell_data)):
        assert isinstance(env, Envelope) and is_notice(env) and env.target == THEIRS
        assert (env.error_code, env.error_message) == (503, error.message)
    assert gateway.counters.senders_told == 2


def test_many_dropped_frames_are_looked_at_over_several_loop_turns() -> None:
    # Each frame is decoded to find its sender: 80,000 tiny tells in one go held the
    # gateway's loop ≈ 0.25 s. A batch per loop turn; each pair is still told once.
    gateway = Gateway()
    gateway._shell_tellers.remember(ELSEWHERE, (CALLS, b"shell-1"))
    error = Unavailable("node b stayed unreachable for 60 s: what waited for it was dropped")
    to_theirs = wire.encode(Envelope(TELL, "r", source=OURS, target=THEIRS))
    to_elsewhere = wire.encode(Envelope(TELL, "r", source=OURS, target=ELSEWHERE))
    from_shell = wire.encode(Envelope(TELL, "r", target=ELSEWHERE))
    frames = [to_theirs] * (DROPPED_FRAMES_PER_TURN + 1) + [to_elsewhere]
    frames += [to_theirs] * DROPPED_FRAMES_PER_TURN + [from_shell, to_elsewhere]

    async def go() -> list[int]:
        gateway._tell_senders_of_dropped(frames, error)
        told = [gateway.counters.senders_told]  # what one turn found
        for _ in range(3):
            await asyncio.sleep(0)
            told.append(gateway.counters.senders_told)
        return told

    assert run(go(), 5) == [1, 2, 3, 3]
    targets = [wire.decode(data).target for data in gateway.feed.sent]
    assert targets == [THEIRS, ELSEWHERE]
    ((routing_id, _),) = gateway.router.sent  # the Shell's
    assert routing_id == b"shell-1"


def test_a_shells_frames_dropped_on_the_other_node_are_told_to_the_shells_that_sent_them() -> None:
    # A Shell's tells and stream frames name no source: node B says `gone` without one,
    # on the link they came on, and node A passes it on to each Shell that sent that
    # target frames lately, on the socket they came on.
    node_b = Gateway()  # playing node B: a Shell on "B" told OURS, which is gone
    error = Unavailable("actor a is failed")
    node_b._say_gone(None, None, OURS, error)  # which node? nothing says it
    assert node_b.link.said == []
    node_b._say_gone(node_b.link, None, OURS, error)
    node_b._say_gone(node_b.link, None, OURS, error)  # within the interval
    (said,) = node_b.link.said
    assert said == {"op": "gone", "t": str(OURS), "code": 503, "m": error.message}
    # Its frames that waited for a worker that will not be back: told on the link they
    # came on, or the node's live one if that link has been replaced since; once.
    node_b.clock.now += NOTICE_EVERY_S
    shell_tell = wire.encode(Envelope(TELL, "r", target=OURS))
    shell_chunk = wire.encode_stream(StreamFrame(STREAM, "s", target=OURS, payload=b"x"))
    old_link = FakeLink("B")
    old_link.state = LinkState.FAILED
    waited = [(shell_tell, old_link), (shell_chunk, node_b.link), (shell_tell, None)]
    node_b._say_gone_for_frames(waited, error)
    assert node_b.link.said == [said, said] and old_link.said == []

    node_a = Gateway()  # playing node A: its Shells sent THEIRS frames, on node B
    node_a._shell_tellers.remember(THEIRS, (CALLS, b"shell-1"))
    node_a._shell_tellers.remember(THEIRS, (CALLS, b"shell-2"))
    node_a._shell_tellers.remember(THEIRS, (STREAMS, b"shell-1-streams"))
    node_a._shell_tellers.remember(ELSEWHERE, (CALLS, b"shell-3"))
    without_source = {"op": "gone", "t": str(THEIRS), "code": 503, "m": "actor b is failed"}
    node_a._on_gone(node_a.link, without_source)
    sent = [*node_a.router.sent, *node_a.streams_router.sent]
    told = {routing_id: wire.decode(data) for routing_id, data in sent}
    assert list(told) == [b"shell-1", b"shell-2", b"shell-1-streams"]
    assert [parts[0] for parts in node_a.streams_router.sent] == [b"shell-1-streams"]
    for env in told.values():
        assert isinstance(env, Envelope) and is_notice(env) and env.target == THEIRS
        assert (env.error_code, env.error_message) == (503, "actor b is failed")
    assert node_a.counters.senders_told == 3 and node_a.link.counters.malformed == 0
    assert node_a.feed.sent == []
    # Only for that node's actors; a source, when there is one, must still be ours.
    node_a._on_gone(node_a.link, {**without_source, "t": str(ELSEWHERE)})
    node_a._on_gone(node_a.link, {**without_source, "s": "nonsense"})
    assert node_a.link.counters.malformed == 2 and len(node_a.router.sent) == 2


def test_the_shells_remembered_per_target_are_the_newest_and_bounded() -> None:
    tellers = ShellTellers()
    for n in range(SHELLS_PER_TARGET_MAX + 2):
        tellers.remember(THEIRS, (CALLS, b"shell-%d" % n))
    tellers.remember(THEIRS, (CALLS, b"shell-2"))  # told again: the newest now
    expected = [b"shell-%d" % n for n in range(3, SHELLS_PER_TARGET_MAX + 2)] + [b"shell-2"]
    assert tellers.of(THEIRS) == [(CALLS, routing_id) for routing_id in expected]
    for serial in range(SHELL_TARGETS_MAX):
        tellers.remember(ActrId(1, 1000 + serial, THEIRS.type), (CALLS, b"shell-x"))
    assert tellers.of(THEIRS) == [] and tellers.of(ELSEWHERE) == []
