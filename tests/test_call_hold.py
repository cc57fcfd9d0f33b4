"""The hold for calls and tells to a node whose link is full (``gateway/_call_hold.py``)
and the worker's side of it, waits for a target (``actrhost/_held_targets.py``), alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actrhost import DeadlineExceeded
from actrhost import _envelope as wire
from actrhost._gateway_credit import CREDIT_BYTES
from actrhost._held_targets import WAIT_KEPT_S, HeldTargets, flow_notice, is_flow_notice
from actrhost._ids import ActrId
from actrhost._payload_type import PayloadType
from actrhost.gateway._call_hold import CallHold, Held
from actrhost.gateway._sender_waits import RENEW_S, ROOM_FOR_SENDERS_MAX, SenderWaits

SOURCE = ActrId.parse("a@1:t+A")
#: The routing id of the connection the frames came on: the sender told to wait.
SENDER = b"\x00k\x8bEg"
TARGET = ActrId.parse("b@1:t+B")
RPC = PayloadType.RPC_RELIABLE


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


class Recorder:
    """A CallHold with what it sent on, paused and told recorded."""

    def __init__(self, max_bytes: int = 1000) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.paused: list[bool] = []
        self.told: list[tuple[bytes, ActrId, bool]] = []
        self.hold = CallHold(
            lambda node, item: self.sent.append((node, item.frame)),
            self.paused.append,
            lambda sender, target, wait: self.told.append((sender, target, wait)),
            max_bytes,
        )


def held(n: int, size: int = 10) -> Held:
    return Held(RPC, b"%d" % n + bytes(size), "", SOURCE, TARGET, SENDER)


def test_frames_for_a_full_node_wait_in_order_and_go_once_it_has_room() -> None:
    async def scenario() -> None:
        r = Recorder()
        first, second = object(), object()  # two connections (an old one may linger)
        r.hold.link_full("n1", first, True)
        r.hold.link_full("n1", second, True)
        assert r.hold.holds("n1") and not r.hold.holds("n2")
        for n in range(5):
            r.hold.hold("n1", held(n))
        assert r.hold.frames == 5 and r.told == [(SENDER, TARGET, True)]  # once a pair
        # Told again while they wait: a worker's wait ends on its own after WAIT_KEPT_S.
        await asyncio.sleep(RENEW_S * 2.5)
        assert r.told == [(SENDER, TARGET, True)] * 3
        r.hold.link_full("n1", first, False)
        await asyncio.sleep(0)
        assert r.sent == []  # the other connection is still full
        r.hold.link_full("n1", second, False)
        assert r.hold.holds("n1")  # (released at the next loop turn: in order, after)
        await asyncio.sleep(0)
        assert [frame[:1] for _node, frame in r.sent] == [b"0", b"1", b"2", b"3", b"4"]
        assert r.hold.frames == 0 and not r.hold.holds("n1")
        assert r.told[-1] == (SENDER, TARGET, False)  # told there is room, once
        assert r.told.count((SENDER, TARGET, False)) == 1
        await asyncio.sleep(RENEW_S * 1.5)
        assert r.told.count((SENDER, TARGET, True)) == 3  # and no longer to wait

    run(scenario())


def test_past_its_bound_and_the_senders_credit_the_socket_pauses_then_reads_at_half() -> None:
    # A sender told to wait may still have its credit's worth on its way: room is kept
    # for it (eight senders flooding at once passed a bound without it, session 44).
    async def scenario() -> None:
        r = Recorder(max_bytes=100)
        link = object()
        r.hold.link_full("n1", link, True)
        quarter = CREDIT_BYTES // 4
        for n in range(4):  # one sender's credit (and a digit each): not past the bound
            r.hold.hold("n1", held(n, quarter))
        assert r.paused == [] and r.told == [(SENDER, TARGET, True)]
        r.hold.hold("n1", held(4, 100))
        assert r.paused == [True]
        r.hold.link_full("n1", link, False)
        await asyncio.sleep(0)
        assert r.paused == [True, False] and len(r.sent) == 5

    run(scenario())


def test_the_room_kept_for_senders_told_to_wait_is_bounded() -> None:
    async def scenario() -> None:
        waits = SenderWaits(lambda sender, target, wait: None)
        assert waits.room_bytes() == 0
        waits.wait("n1", b"s1", TARGET)
        waits.wait("n2", b"s1", TARGET)  # the same sender for another cause: once
        waits.wait("n1", b"s1", SOURCE)
        assert waits.room_bytes() == CREDIT_BYTES
        waits.end("n1")
        assert waits.room_bytes() == CREDIT_BYTES  # (still told for n2)
        waits.end("n2")
        assert waits.room_bytes() == 0
        for n in range(ROOM_FOR_SENDERS_MAX + 8):
            waits.wait("n1", b"s%d" % n, TARGET)
        assert waits.room_bytes() == ROOM_FOR_SENDERS_MAX * CREDIT_BYTES
        waits.end("n1")

    run(scenario())


def test_a_node_given_up_releases_its_frames() -> None:
    async def scenario() -> None:
        r = Recorder()
        r.hold.link_full("n1", object(), True)
        r.hold.hold("n1", held(1))
        r.hold.forget("n1")  # they go on as for a node not known (located afresh)
        await asyncio.sleep(0)
        assert len(r.sent) == 1 and not r.hold.holds("n1")

    run(scenario())


def test_a_worker_waits_for_room_then_goes_on() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        targets = HeldTargets(loop.time)
        wait = wire.decode(flow_notice(TARGET, True))
        room = wire.decode(flow_notice(TARGET, False))
        assert isinstance(wait, wire.Envelope) and isinstance(room, wire.Envelope)
        assert is_flow_notice(wait) and is_flow_notice(room)
        assert not targets.holds(TARGET)
        assert targets.learn(wait) and targets.holds(TARGET)
        waiting = asyncio.ensure_future(targets.wait(TARGET, loop.time() + 5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert targets.learn(room)
        await asyncio.wait_for(waiting, 1)
        assert not targets.holds(TARGET)
        # Its own deadline first: 504, saying why.
        targets.learn(wait)
        with pytest.raises(DeadlineExceeded, match="its link is full, or it is still being"):
            await targets.wait(TARGET, loop.time() + 0.05)
        # No room notice (its gateway died): the wait ends on its own.
        started = loop.time()
        await targets.wait(TARGET, loop.time() + 5)
        assert WAIT_KEPT_S - 0.2 < loop.time() - started < WAIT_KEPT_S + 0.5
        assert not targets.holds(TARGET)

    run(scenario())
