"""A tell's origin (actrhost/_tell_origin.py): how it rides on a frame, and how a worker
decides whether a tell that came again after a gateway died is one it had read."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest
import zmq

from actrhost import _envelope as wire
from actrhost._envelope import TELL, Envelope
from actrhost._errors import DeadlineExceeded, Unavailable
from actrhost._ids import ActrId
from actrhost._rpc import RpcEndpoint
from actrhost._tell_origin import (
    TellsRead,
    Verdict,
    appended,
    origin_field,
    session_key,
    without_appended_origin,
)
from actrhost._tells_sent import KeptTells, TellsSent

from .utils import run

SOURCE = ActrId.parse("7@1:acme+Client")
TARGET = ActrId.parse("9@1:acme+Sink")


def tell(payload: bytes = b"x") -> bytes:
    return wire.encode(Envelope(TELL, "note", payload, source=SOURCE, target=TARGET))


def origin(
    index: int, position: int = 0, *, session: int = 1, channel: int = 1, in_doubt: bool = False
) -> SimpleNamespace:
    return SimpleNamespace(
        session=session, channel=channel, index=index, position=position, in_doubt=in_doubt
    )


def test_an_origin_appended_to_a_frame_is_read_with_it() -> None:
    key = session_key("pc|node-a|node-b|0a1b2c3d")
    env = wire.decode(tell(b"hello") + origin_field(key, 1, 41, 2, True))
    assert isinstance(env, Envelope)
    assert (env.route_key, env.payload) == ("note", b"hello")
    assert (env.source, env.target) == (SOURCE, TARGET)
    got = wire.tell_origin(env)
    assert got is not None
    assert (got.session, got.channel, got.index) == (key, 1, 41)
    assert (got.position, got.in_doubt) == (2, True)
    plain = wire.decode(tell())
    assert isinstance(plain, Envelope) and wire.tell_origin(plain) is None


def test_a_gateway_passing_a_frame_on_drops_the_origin_it_came_with() -> None:
    # Another node could send one, in doubt, to have its tells dropped: the receiving
    # gateway re-encodes every frame (and appends its own; two would be merged).
    env = wire.decode(tell() + origin_field(5, 0, 3, 0, True))
    assert isinstance(env, Envelope)
    again = wire.decode(wire.reencode(env))
    assert isinstance(again, Envelope) and wire.tell_origin(again) is None


def test_session_keys_are_stable_and_tell_sessions_apart() -> None:
    assert session_key("pc|a|b|00000001") == session_key("pc|a|b|00000001")
    assert session_key("pc|a|b|00000001") != session_key("pc|a|b|00000002")
    assert 0 <= session_key("pc|a|b|00000001") < 1 << 64


def test_a_worker_takes_new_tells_and_drops_those_in_doubt_it_had_read() -> None:
    read = TellsRead()
    # Read before the gateway died: messages 0..2, message 2 with two tells.
    assert all(
        read.judge(origin(i, p)) is Verdict.TAKE for i, p in [(0, 0), (1, 0), (2, 0), (2, 1)]
    )
    # Sent again, in doubt: those it had are dropped, the rest (never read) taken once.
    assert read.judge(origin(1, 0, in_doubt=True)) is Verdict.READ
    assert read.judge(origin(2, 1, in_doubt=True)) is Verdict.READ
    assert read.judge(origin(2, 2, in_doubt=True)) is Verdict.TAKE  # the third tell of message 2
    assert read.judge(origin(3, 0, in_doubt=True)) is Verdict.TAKE
    assert read.judge(origin(3, 0, in_doubt=True)) is Verdict.READ  # and only once
    # Another channel or connection has a mark of its own.
    assert read.judge(origin(0, channel=0)) is Verdict.TAKE
    assert read.judge(origin(0, session=2)) is Verdict.TAKE


def test_a_tell_in_doubt_from_a_connection_the_worker_never_heard_of_is_dropped() -> None:
    # The worker may have been restarted since it read it: a tell runs at most once.
    read = TellsRead()
    assert read.judge(origin(0, in_doubt=True)) is Verdict.MAYBE_READ
    assert read.judge(origin(0)) is Verdict.TAKE  # one not in doubt is taken


def test_the_first_process_of_an_instance_takes_one_from_a_sender_never_heard_of() -> None:
    # No earlier process of the instance can have read it: the first tells of a new
    # sender, all held by a gateway that died, arrive (they were dropped before).
    read = TellsRead(complete=True)
    assert read.judge(origin(3, in_doubt=True)) is Verdict.TAKE
    assert read.judge(origin(3, in_doubt=True)) is Verdict.READ  # once
    assert read.judge(origin(4, in_doubt=True)) is Verdict.TAKE


def test_the_first_process_that_forgot_a_sender_drops_one_in_doubt_from_it() -> None:
    read = TellsRead(kept=1, complete=True)
    assert read.judge(origin(0, session=1)) is Verdict.TAKE
    assert read.judge(origin(0, session=2)) is Verdict.TAKE  # forgets session 1
    assert (
        read.judge(origin(1, session=1, in_doubt=True)) is Verdict.MAYBE_READ
    )  # it may have read it
    assert (
        read.judge(origin(0, session=3, in_doubt=True)) is Verdict.MAYBE_READ
    )  # and so for any other


def test_a_tell_arriving_late_does_not_lower_the_mark() -> None:
    # One that waited in the gateway (for an introduction) may come after later ones:
    # taken, but the mark stays, so what came again up to the mark is still dropped.
    read = TellsRead()
    assert read.judge(origin(5)) is Verdict.TAKE
    assert read.judge(origin(3)) is Verdict.TAKE
    assert read.judge(origin(4, in_doubt=True)) is Verdict.READ
    assert read.judge(origin(6, in_doubt=True)) is Verdict.TAKE


def test_the_oldest_connection_is_forgotten_beyond_those_kept() -> None:
    read = TellsRead(kept=2)
    for session in (1, 2):
        assert read.judge(origin(0, session=session)) is Verdict.TAKE
    assert read.judge(origin(1, session=1)) is Verdict.TAKE  # session 1 used again: kept over 2
    assert read.judge(origin(0, session=3)) is Verdict.TAKE  # forgets session 2
    assert (
        read.judge(origin(5, session=2, in_doubt=True)) is Verdict.MAYBE_READ
    )  # as if never heard of
    assert read.judge(origin(2, session=1, in_doubt=True)) is Verdict.TAKE


def test_a_reliable_chunk_carries_its_origin_too() -> None:
    # Handed over as it came from the other node, with the gateway's origin appended:
    # all five fields written, so it overrides one the frame came with.
    chunk = wire.StreamFrame(wire.STREAM, "s", source=SOURCE, target=TARGET, sequence=3)
    data = wire.encode_stream(chunk) + origin_field(5, 3, 9, 0, True)
    got = wire.decode(data + origin_field(6, 3, 10, 0, False))
    assert isinstance(got, wire.StreamFrame) and got.sequence == 3
    assert (got.origin.session, got.origin.index, got.origin.in_doubt) == (6, 10, False)
    assert wire.decode(wire.encode_stream(chunk)).origin is None  # type: ignore[union-attr]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def again(sent: KeptTells, pid: int | None) -> list[bytes]:
    """The gateway is ``pid`` now: the tells to send it, stamped."""
    return [sent.stamped_again(kept, pid or 0) for kept in sent.gateway_is(pid)]


def origin_of(data: bytes) -> tuple[bytes, int, int, bool, int]:
    """(payload, channel, index, in_doubt, gateway) of a stamped tell."""
    env = wire.decode(data)
    assert isinstance(env, Envelope)
    got = wire.tell_origin(env)
    assert got is not None and got.position == 0
    return env.payload, got.channel, got.index, got.in_doubt, got.gateway


def test_a_sender_stamps_its_tells_to_other_nodes_with_its_key_and_a_count() -> None:
    sent = KeptTells(Clock())
    assert again(sent, 40) == []  # the first gateway: nothing owed
    first, index = sent.stamp(tell(b"a"), 0)
    second, _ = sent.stamp(tell(b"b"), 1)
    assert origin_of(first) == (b"a", 0, index, False, 40)
    assert origin_of(second) == (b"b", 1, index + 1, False, 40)
    env = wire.decode(first)
    assert isinstance(env, Envelope)
    assert wire.tell_origin(env).session == sent.key  # type: ignore[union-attr]
    assert KeptTells(Clock()).key != sent.key  # a restarted process is another sender


def test_after_the_gateway_died_every_tell_kept_goes_again_in_doubt_to_the_next() -> None:
    sent = KeptTells(Clock())
    again(sent, 40)
    for payload in (b"a", b"b", b"c"):
        sent.stamp(tell(payload), 0)
    assert again(sent, None) == []  # gone: nothing to send to yet
    sent_again = [origin_of(data) for data in again(sent, 41)]
    assert sent_again == [(b"a", 0, 0, True, 41), (b"b", 0, 1, True, 41), (b"c", 0, 2, True, 41)]
    assert again(sent, 41) == []  # once
    assert origin_of(sent.stamp(tell(b"d"), 0)[0]) == (b"d", 0, 3, False, 41)
    # A gateway replaced without a gap between (a restart seen in one directory).
    assert [origin_of(d)[0] for d in again(sent, 42)] == [b"a", b"b", b"c", b"d"]


def test_a_tell_whose_send_failed_is_not_sent_again() -> None:
    sent = KeptTells(Clock())
    again(sent, 40)
    sent.stamp(tell(b"a"), 0)
    _, index = sent.stamp(tell(b"b"), 0)
    sent.stamp(tell(b"c"), 0)
    sent.unsent(index)
    assert [origin_of(d)[0] for d in again(sent, 41)] == [b"a", b"c"]


def test_each_tell_sent_again_is_counted_and_one_that_fails_does_not_stop_the_rest() -> None:
    async def go() -> tuple[list[bytes], list[bool]]:
        loop = asyncio.get_running_loop()
        delivered: list[bytes] = []
        counted: list[bool] = []

        async def send(endpoint: str, data: bytes, deadline: float) -> None:
            payload, _channel, _index, in_doubt, _gateway = origin_of(data)
            if in_doubt and payload == b"b":
                raise Unavailable("its target is gone")
            delivered.append(payload)

        sent = TellsSent(loop, send, counted.append)
        sent.gateway_is("ipc://gateway", 40)
        for payload in (b"a", b"b", b"c"):
            await sent.send("ipc://gateway", tell(payload), 0, loop.time() + 1)
        sent.gateway_is(None, None)  # it died
        sent.gateway_is("ipc://gateway", 41)
        await sent.sent_again_first(loop.time() + 5)
        sent.close()
        return delivered, counted

    delivered, counted = run(go(), 10)
    assert delivered == [b"a", b"b", b"c", b"a", b"c"]
    assert counted == [True, False, True]


def test_a_senders_tells_leave_in_the_order_of_their_numbers() -> None:
    # Two tasks' tells wait for room in a full socket; a third task's, sent the moment
    # room comes, left first with the highest number. A receiver drops a tell in doubt
    # below the highest number it read: such a tell, lost with a dying gateway and sent
    # again, was dropped. Now the third waits its turn.
    async def go() -> list[tuple[bytes, int]]:
        loop = asyncio.get_running_loop()
        room = asyncio.Event()
        left: list[tuple[bytes, int]] = []

        async def send(endpoint: str, data: bytes, deadline: float) -> None:
            if not room.is_set():  # full, as RpcEndpoint.send waits for room
                await room.wait()
            payload, _channel, index, _in_doubt, _gateway = origin_of(data)
            left.append((payload, index))

        sent = TellsSent(loop, send, lambda again: None)
        sent.gateway_is("ipc://gateway", 40)
        waiting = [
            asyncio.create_task(sent.send("ipc://gateway", tell(p), 0, loop.time() + 5))
            for p in (b"a", b"b")
        ]
        await asyncio.sleep(0.01)
        room.set()
        await sent.send("ipc://gateway", tell(b"c"), 0, loop.time() + 5)
        await asyncio.gather(*waiting)
        assert [payload for payload, _index in left] == [b"a", b"b", b"c"]  # (c, a, b before)
        # A tell that cannot even wait its turn before its deadline says why.
        room.clear()
        stuck = asyncio.create_task(sent.send("ipc://gateway", tell(b"d"), 0, loop.time() + 5))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded, match="earlier tells"):
            await sent.send("ipc://gateway", tell(b"e"), 0, loop.time() + 0.05)
        room.set()
        await stuck
        sent.close()
        return left

    left = run(go(), 10)
    assert [payload for payload, _index in left] == [b"a", b"b", b"c", b"d"]
    assert [index for _payload, index in left] == sorted(index for _payload, index in left)


def test_a_sender_keeps_only_its_newest_tells_by_count_bytes_and_age() -> None:
    clock = Clock()
    size = len(tell(b"x"))
    sent = KeptTells(clock, kept=3, kept_bytes=10 * size, kept_s=60.0)
    again(sent, 40)
    for n in range(5):
        sent.stamp(tell(b"%d" % n), 0)
    assert [origin_of(d)[0] for d in again(sent, 41)] == [b"2", b"3", b"4"]
    sent = KeptTells(clock, kept=100, kept_bytes=2 * size, kept_s=60.0)
    again(sent, 40)
    for n in range(5):
        sent.stamp(tell(b"%d" % n), 0)
    assert [origin_of(d)[0] for d in again(sent, 41)] == [b"3", b"4"]
    sent = KeptTells(clock, kept=100, kept_bytes=100 * size, kept_s=60.0)
    again(sent, 40)
    sent.stamp(tell(b"old"), 0)
    clock.now += 61.0  # no gateway holds it any more: not sent again
    sent.stamp(tell(b"new"), 0)
    assert [origin_of(d)[0] for d in again(sent, 41)] == [b"new"]


def test_a_receiving_worker_takes_a_tell_sent_again_once() -> None:
    # The two halves together: what the receiver read before the gateway died is
    # dropped when it comes again, the rest is taken.
    sent, read = KeptTells(Clock()), TellsRead()
    again(sent, 40)
    stamped = [sent.stamp(tell(b"%d" % n), 0)[0] for n in range(4)]
    for data in stamped[:2]:  # read; the other two died with the gateway
        env = wire.decode(data)
        assert isinstance(env, Envelope) and read.judge(wire.tell_origin(env)) is Verdict.TAKE
    taken = []
    for data in again(sent, 41):
        env = wire.decode(data)
        assert isinstance(env, Envelope)
        if read.judge(wire.tell_origin(env)) is Verdict.TAKE:
            taken.append(env.payload)
    assert taken == [b"2", b"3"]


def test_a_gateway_replaces_the_origin_a_chunk_came_with_by_its_own() -> None:
    # The sending gateway appends the origin its worker stamped (``appended``); the
    # receiving one takes it off before it appends its own, so the worker gets one.
    chunk = wire.StreamFrame(wire.STREAM, "s", source=SOURCE, target=TARGET, payload=b"x" * 40)
    body = wire.encode_stream(chunk)
    stamped = body + origin_field(7, 2, 5, 0, False, 40)
    decoded = wire.decode(stamped)
    assert isinstance(decoded, wire.StreamFrame) and decoded.origin is not None
    assert body + appended(decoded.origin) == stamped
    assert without_appended_origin(stamped) == body
    assert without_appended_origin(body) == body  # none appended: as it is


def test_a_tell_the_nodes_gateway_did_not_take_in_time_says_where_it_waited(tmp_path) -> None:
    # "Its queue is full: the receiver is busy" sent people looking at the actor on the
    # other node when what was full was the link to it (QA: a partition, a tells flood).
    zctx = zmq.Context()
    gateway = zctx.socket(zmq.ROUTER)
    gateway.setsockopt(zmq.RCVHWM, 1)
    endpoint = f"ipc://{tmp_path}/gateway.sock"
    gateway.bind(endpoint)  # and never read

    async def go() -> None:
        rpc = RpcEndpoint(zctx, f"ipc://{tmp_path}/w.sock", lambda *_: None, hwm=1, name="w")
        rpc.to_other_nodes.gateway_is(endpoint, os.getpid())
        loop = asyncio.get_running_loop()
        try:
            with pytest.raises(DeadlineExceeded, match="the node's gateway reads no more"):
                for _ in range(100_000):
                    env = Envelope(TELL, "note", bytes(4096), source=SOURCE, target=TARGET)
                    await rpc.tell(endpoint, env, loop.time() + 0.3)
        finally:
            rpc.close()

    try:
        run(go(), 30)
    finally:
        gateway.close(0)
        zctx.term()
