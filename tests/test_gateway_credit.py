"""The bytes a process may have on its way to its gateway (``actrhost/_gateway_credit.py``):
the sender's credit, the gateway's read counts, and the read notice between them over a
real socket. The whole path: ``test_gateway_partition.py`` (a flood of 32 KiB tells)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from actrhost import DeadlineExceeded
from actrhost import _envelope as wire
from actrhost._envelope import TELL, Envelope
from actrhost._gateway_credit import (
    CONNECTIONS_MAX,
    CREDIT_BYTES,
    READ_EVERY_BYTES,
    WAIT_S,
    GatewayCredit,
    ReadCounts,
    bytes_read,
    is_read_notice,
    read_notice,
)
from actrhost._ids import ActrId

from .utils import beside_a_bare_gateway, run

TARGET = ActrId.parse("b@1:t+B")


def test_a_sender_waits_past_its_credit_until_the_gateway_says_it_read() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        credit = GatewayCredit()
        assert credit.room_for(CREDIT_BYTES)  # one frame up to the credit
        credit.sent(CREDIT_BYTES - 10)
        assert credit.room_for(10) and not credit.room_for(11)
        waiting = asyncio.ensure_future(credit.wait(11, loop.time() + 5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        credit.read(READ_EVERY_BYTES)
        await asyncio.wait_for(waiting, 1)
        # A frame larger than the credit goes alone, once nothing else is unread.
        credit.read(CREDIT_BYTES)
        assert credit.unread == 0 and credit.room_for(4 * CREDIT_BYTES)
        credit.sent(4 * CREDIT_BYTES)
        assert not credit.room_for(1)
        # Its own deadline first: 504, saying why.
        with pytest.raises(DeadlineExceeded, match="read nothing more of this process's"):
            await credit.wait(1, loop.time() + 0.05)
        # No notice at all (lost, or the gateway gone before it answered): on after WAIT_S.
        started = loop.time()
        await credit.wait(1, loop.time() + 5)
        assert WAIT_S - 0.2 < loop.time() - started < WAIT_S + 0.5
        assert credit.waits == 3 and credit.waits_timed_out == 1
        # A gateway that went away read nothing more: the count starts again.
        credit.sent(CREDIT_BYTES)
        credit.reset()
        assert credit.unread == 0

    run(scenario(), 10)


def test_past_the_credit_a_send_waits_only_while_a_read_notice_is_due() -> None:
    # With less than READ_EVERY_BYTES unread, the gateway may have read it all and owe no
    # notice: a large frame goes (it waited WAIT_S for nothing before, session 44).
    credit = GatewayCredit()
    credit.sent(READ_EVERY_BYTES - 1)
    assert credit.room_for(CREDIT_BYTES) and credit.room_for(4 * CREDIT_BYTES)
    credit.sent(1)  # now one is due, once the gateway reads on
    assert not credit.room_for(CREDIT_BYTES - READ_EVERY_BYTES + 1)
    assert credit.room_for(CREDIT_BYTES - READ_EVERY_BYTES)


def test_the_gateway_tells_each_connection_every_quarter_credit() -> None:
    counts = ReadCounts()
    assert counts.add(b"w1", READ_EVERY_BYTES - 1) == 0
    assert counts.add(b"w2", 5) == 0  # another connection counts on its own
    assert counts.add(b"w1", 2) == READ_EVERY_BYTES + 1  # then it starts again
    assert counts.add(b"w1", 1) == 0
    counts.unsent(b"w2", READ_EVERY_BYTES)  # a notice that could not go: with the next
    assert counts.add(b"w2", 0) == READ_EVERY_BYTES + 5
    for n in range(CONNECTIONS_MAX + 1):  # bounded: the oldest counts go
        counts.add(b"shell-%d" % n, 1)
    assert counts.add(b"w1", READ_EVERY_BYTES - 1) == 0  # w1's 1 byte was forgotten


def test_a_read_notice_is_no_answer_and_a_malformed_one_is_counted() -> None:
    notice = wire.decode(read_notice(12345))
    assert isinstance(notice, Envelope) and is_read_notice(notice)
    assert bytes_read(notice) == 12345
    answer = wire.decode(wire.encode(wire.error_response("r1", DeadlineExceeded("x"))))
    assert isinstance(answer, Envelope) and not is_read_notice(answer)


def test_a_process_sends_past_its_credit_once_its_gateway_reads(tmp_path: Path) -> None:
    # A ROUTER standing in for the gateway: it reads, and says so as the gateway does.
    async def scenario() -> None:
        async with beside_a_bare_gateway(tmp_path) as (rpc, gateway, endpoint):
            loop = asyncio.get_running_loop()
            big = bytes(CREDIT_BYTES // 4)  # (with its envelope, four pass the credit)
            for n in range(3):
                env = Envelope(TELL, "r", big, request_id=f"t{n}", target=TARGET)
                await rpc.tell(endpoint, env, loop.time() + 5)
            assert rpc.gateway_credit.unread > 3 * len(big)  # (and their envelopes)
            env = Envelope(TELL, "r", big, request_id="t3", target=TARGET)
            fourth = asyncio.ensure_future(rpc.tell(endpoint, env, loop.time() + 5))
            await asyncio.sleep(0.1)
            assert not fourth.done()  # past the credit: it waits for a read notice
            routing_id, frame = await asyncio.to_thread(gateway.recv_multipart)
            gateway.send_multipart([routing_id, read_notice(len(frame))])
            gateway.send_multipart([routing_id, b"not a frame"])  # dropped and counted
            await asyncio.wait_for(fourth, 2)
            assert rpc.gateway_credit.waits == 1 and rpc.gateway_credit.waits_timed_out == 0
            assert rpc.counters.late_responses == 0  # a notice, not an answer

    run(scenario(), 10)
