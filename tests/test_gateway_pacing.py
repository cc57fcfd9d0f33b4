"""How much waits in aiortc's send FIFO follows the link (actrhost.gateway._pacing), on a
real pair of peer connections whose packets cross a slow link with a drop-tail queue."""

from __future__ import annotations

import asyncio
import hashlib
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("aiortc")

from actrhost._payload_type import PayloadType
from actrhost._status_text import _pace_lines
from actrhost.gateway._pacing import (
    LIMIT_FLOOR_BYTES,
    PART_FLOOR_BYTES,
    FifoPace,
)
from actrhost.gateway._types import Tuning

from .test_gateway_peer import TUNING, Side, connected_pair
from .test_gateway_sctp_loss import impair
from .utils import run

pytestmark = pytest.mark.usefixtures("gateway_process_setup")

#: 1 Mbit/s each way, 20 ms one way, a router queue of 0.2 s.
SLOW_LINK = {"delay_s": 0.02, "rate_bytes_s": 125_000, "queue_s": 0.2}
CHUNK = 64 * 1024


async def call_delay(a: Side, b: Side, tag: bytes) -> float:
    """Seconds a small RPC frame takes from a's queue to b."""
    started = time.monotonic()
    a.pc.enqueue(PayloadType.RPC_RELIABLE, tag)
    async with asyncio.timeout(10):
        while not any(data == tag for _lane, data in b.frames):
            await asyncio.sleep(0.005)
    return time.monotonic() - started


def test_a_call_beside_a_stream_on_a_slow_link_waits_for_little_of_it() -> None:
    # With a fixed 256 KiB FIFO a call waited behind all of it: 2.5 s on this link, every
    # time (QA, 2026-12-03); now it waits behind ≈ 50 ms of it, plus what SCTP has in
    # flight and the router's queue.
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            impair(a, **SLOW_LINK)
            impair(b, **SLOW_LINK, seed=2)
            # SCTP measured the round trip on loopback as the channels opened; on a real
            # slow link it would have measured that link's. Keepalives correct it.
            await asyncio.sleep(1.5)
            chunks = [hashlib.sha256(b"%d" % i).digest() * (CHUNK // 32) for i in range(64)]
            for chunk in chunks:
                a.pc.enqueue(PayloadType.STREAM_RELIABLE, chunk)
            delays = []
            for n in range(4):
                await asyncio.sleep(0.7)  # the stream keeps the link busy meanwhile
                delays.append(await call_delay(a, b, b"call %d" % n))
            assert max(delays) < 1.2, delays
            pace = a.pc._pace
            assert LIMIT_FLOOR_BYTES <= pace.limit_bytes < TUNING.buffer_high_bytes // 4
            assert PART_FLOOR_BYTES <= pace.part_bytes < TUNING.max_message_bytes
            # What `actrhost status` says of it.
            (line,) = _pace_lines(a.pc.stats())
            assert f"slow link: {pace.limit_bytes // 1024} KiB may wait" in line, line
            # The stream went on at the link's rate, in smaller parts, intact and in order.
            streamed = [data for lane, data in b.frames if lane == PayloadType.STREAM_RELIABLE]
            assert len(streamed) * CHUNK > 0.5 * SLOW_LINK["rate_bytes_s"] * 3, len(streamed)
            assert streamed == chunks[: len(streamed)]

    run(scenario(), timeout_s=60)


def test_the_limits_follow_the_window_per_round_trip() -> None:
    # aiortc's SCTP state as the pace reads it: congestion window (bytes), smoothed
    # round trip and its variation (s; None before the first).
    pace = FifoPace(TUNING)
    assert not pace.follow(SimpleNamespace(_cwnd=4800, _srtt=None, _rttvar=None))
    assert (pace.limit_bytes, pace.part_bytes) == (TUNING.buffer_high_bytes, CHUNK)
    assert not pace.follow(SimpleNamespace(_cwnd=4_000_000, _srtt=0.002, _rttvar=0.0))  # loopback
    assert pace.follow(
        SimpleNamespace(_cwnd=100_000, _srtt=0.05, _rttvar=0.0)
    )  # 2 MB/s: 50 ms of it
    assert (pace.limit_bytes, pace.part_bytes) == (100_000, CHUNK)
    assert not pace.follow(SimpleNamespace(_cwnd=100_000, _srtt=0.05, _rttvar=0.0))
    # A round trip that varies (a queue building up) counts with four times its variation.
    assert pace.follow(SimpleNamespace(_cwnd=100_000, _srtt=0.05, _rttvar=0.0125))
    assert (pace.limit_bytes, pace.part_bytes) == (50_000, 50_000)
    assert pace.follow(SimpleNamespace(_cwnd=40_000, _srtt=0.05, _rttvar=0.0))
    assert (pace.limit_bytes, pace.part_bytes) == (40_000, 40_000)
    assert pace.follow(SimpleNamespace(_cwnd=30_000, _srtt=0.25, _rttvar=0.0))  # 1 Mbit/s, queued
    assert (pace.limit_bytes, pace.part_bytes) == (LIMIT_FLOOR_BYTES, LIMIT_FLOOR_BYTES)
    assert pace.follow(SimpleNamespace(_cwnd=4_000_000, _srtt=0.002, _rttvar=0.0))
    assert (pace.limit_bytes, pace.part_bytes) == (TUNING.buffer_high_bytes, CHUNK)
    pace = FifoPace(Tuning(max_message_bytes=4096))
    assert pace.follow(SimpleNamespace(_cwnd=30_000, _srtt=0.25, _rttvar=0.0))
    assert (pace.limit_bytes, pace.part_bytes) == (LIMIT_FLOOR_BYTES, 4096)
    ceiling = {"send_buffer_bytes": 262144, "send_buffer_max_bytes": 262144}
    assert _pace_lines(ceiling) == []  # `actrhost status` says nothing of a fast link
    # Nor of one whose limit held nothing back lately: an idle link keeps SCTP's first
    # window, 133 KiB on loopback, and was called slow (QA).
    idle = {"send_buffer_bytes": 136_000, "send_buffer_max_bytes": 262144}
    assert _pace_lines(idle) == []
    assert _pace_lines({**idle, "send_buffer_held_back_s_ago": 60.0}) == []
    (line,) = _pace_lines({**idle, "send_buffer_held_back": 3, "send_buffer_held_back_s_ago": 0.5})
    assert line.endswith("held the sending back 3 time(s), last 0.5 s ago"), line
    held = FifoPace(TUNING)
    held.waited()  # at its ceiling: the pace held nothing back
    assert (held.held_back, held.held_back_s_ago()) == (0, None)
    held.follow(SimpleNamespace(_cwnd=30_000, _srtt=0.25, _rttvar=0.0))
    held.waited()
    assert held.held_back == 1 and held.held_back_s_ago() is not None
    pace = FifoPace(Tuning(fifo_target_s=0))  # a fixed limit
    assert not pace.follow(SimpleNamespace(_cwnd=30_000, _srtt=0.25, _rttvar=0.0))
    assert pace.limit_bytes == TUNING.buffer_high_bytes
