"""SCTP packets larger than aiortc's between two gateways on one host
(``actrhost/gateway/_sctp_packets.py``), on two real aiortc connections in this process:
a link on loopback host candidates sends packets as large as a DTLS record once the other
side says it reads them, and what it sends arrives intact, lost packets too; without that
word it keeps aiortc's size; the patch refuses to go under others. Between hosts
(``_sctp_path.py``): a probe as large as a packet first, aiortc's size again after losses.
Between two gateway processes: tests/test_gateway_streams.py (on one host),
test_gateway_relay.py (a relay keeps aiortc's size) and test_gateway_netns.py (a veth:
large packets in IP fragments)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import sys

import pytest

pytest.importorskip("aiortc")

from aiortc.rtcsctptransport import DataChunk, parse_packet

from actrhost._payload_type import PayloadType
from actrhost._status_text import format_status
from actrhost.gateway import _sctp, _sctp_packets, _sctp_path

from .test_gateway_peer import Side, connected_pair
from .test_gateway_sctp_loss import impair, stream
from .test_gateway_tuning import NO_KEEPALIVES, record_packets, sctp_of
from .utils import REPO, run

CARRIED, NO_ANSWER = _sctp_path.Probe.CARRIED, _sctp_path.Probe.NO_ANSWER

pytestmark = pytest.mark.usefixtures("gateway_process_setup")


def record_data_packet_sizes(side: Side) -> list[int]:
    """The size of each packet with DATA this side sends."""
    dtls = sctp_of(side).transport
    sizes: list[int] = []
    send = dtls._send_data

    async def recording_send(data: bytes) -> None:
        if any(isinstance(c, DataChunk) for c in parse_packet(data)[3]):
            sizes.append(len(data))
        await send(data)

    dtls._send_data = recording_send
    return sizes


def status_line_of(side: Side) -> str:
    """The line ``actrhost status`` prints for ``side``'s link (a host candidate pair)."""
    node = {"state": "connected", "candidate_type": "host", "connection": side.pc.stats()}
    gateway = {"pid": 1, "state": "running", "stats": {"remote_nodes": {"n1": node}}}
    text = format_status({"node": "a", "actors": [], "gateway": gateway})
    (line,) = [line for line in text.splitlines() if "remote node n1" in line]
    return line


def enqueue_chunks(a: Side, count: int) -> list[bytes]:
    """Queue ``count`` stream frames of 256 KiB on ``a``'s link; returns them as sent."""
    chunks = [bytes([i]) * (256 * 1024) for i in range(count)]
    for chunk in chunks:
        a.pc.enqueue(PayloadType.STREAM_RELIABLE, chunk)
    return chunks


def test_a_link_inside_one_host_sends_large_packets_once_the_other_side_reads_them() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            sizes = record_data_packet_sizes(a)
            a.pc.peer_reads_packets(None)  # an older gateway: no word
            assert a.pc.stats()["sctp_packet_bytes"] == 1189
            a.pc.peer_reads_packets(16384)
            b.pc.peer_reads_packets(16384)
            assert a.pc.stats()["sctp_packet_bytes"] == 16384
            chunks = enqueue_chunks(a, 16)  # 4 MiB
            await b.wait_frames(len(chunks), timeout_s=20)
            got = [data for _lane, data in b.frames]
            assert [hashlib.sha256(x).digest() for x in got] == [
                hashlib.sha256(x).digest() for x in chunks
            ]
            # ≈ 260 packets of ≤ 16 KiB instead of ≈ 3,600 of 1,189 bytes.
            assert max(sizes) <= 16384 and len(sizes) < 400, (max(sizes), len(sizes))

    run(scenario())


def test_large_packets_lost_on_the_way_are_sent_again() -> None:
    # A loss costs a whole 16 KiB packet (several of aiortc's), found and sent again as
    # any other: what arrives is whole and in order.
    rng = random.Random(7)
    dropped = 0

    def drop_some_data(packet: bytes) -> bool:
        nonlocal dropped
        if any(isinstance(c, DataChunk) for c in parse_packet(packet)[3]) and rng.random() < 0.03:
            dropped += 1
            return True
        return False

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            a.pc.peer_reads_packets(16384)
            b.pc.peer_reads_packets(16384)
            sizes = record_data_packet_sizes(a)
            impair(a, delay_s=0.005, rate_bytes_s=50e6, drop=drop_some_data)
            impair(b, delay_s=0.005, rate_bytes_s=50e6)
            await stream(a, b, chunks=256, timeout_s=30)  # 4 MiB in 16 KiB frames
            assert dropped >= 3 and max(sizes) > 8192, (dropped, max(sizes))

    run(scenario(), timeout_s=60)


def test_a_link_keeps_aiortcs_packets_when_the_other_side_does_not_say() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            sizes = record_data_packet_sizes(a)
            a.pc.peer_reads_packets("16384")  # not a number: as if unsaid
            chunks = enqueue_chunks(a, 2)
            await b.wait_frames(len(chunks), timeout_s=20)
            assert max(sizes) <= 1189 and a.pc.stats()["sctp_packet_bytes"] == 1189

    run(scenario())


def test_an_answer_on_a_link_of_large_packets_carries_the_sack_of_its_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on any link (test_gateway_tuning), but with messages too large to share one of
    # aiortc's 1,189-byte packets with a SACK: the link's own size decides.
    monkeypatch.setattr(_sctp, "QUIET_GAP_S", 60.0)  # every packet is part of a burst
    monkeypatch.setattr(_sctp, "SACK_DELAY_S", 0.5)  # and answered before the SACK timer

    async def scenario() -> None:
        async with connected_pair(NO_KEEPALIVES) as (a, b):
            a.pc.peer_reads_packets(16384)
            b.pc.peer_reads_packets(16384)
            await asyncio.sleep(0.1)  # let the opening exchange settle
            sent_a, sent_b = record_packets(a), record_packets(b)
            for i in range(50):
                a.pc.enqueue(PayloadType.RPC_RELIABLE, bytes([i]) * 4096)
                await b.wait_frames(i + 1)
                b.pc.enqueue(PayloadType.RPC_RELIABLE, bytes([i]) * 4096)
                await a.wait_frames(i + 1)
            assert [d for _l, d in a.frames] == [bytes([i]) * 4096 for i in range(50)]
            assert sent_a["sack+data"] >= 45 and sent_b["sack+data"] >= 45, (sent_a, sent_b)
            assert sent_a["sack"] + sent_b["sack"] <= 10, (sent_a, sent_b)

    run(scenario())


def test_the_patch_refuses_to_go_under_the_other_sctp_patches() -> None:
    # Its copies of aiortc's methods would run our wrappers' code over aiortc's globals.
    code = (
        "from actrhost.gateway import _sctp_loss, _sctp_packets\n"
        "_sctp_loss.install()\n"
        "_sctp_packets.install()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "must come before the other SCTP patches" in done.stderr
    assert _sctp_packets.installed()  # (here, by the fixture, first)


# -- between hosts: a probe first, aiortc's size again after losses (_sctp_path) ----------


def test_a_probe_that_comes_back_brings_large_packets() -> None:
    # Between two hosts (here called directly: the pair is on loopback) a HEARTBEAT as
    # large as a packet goes first; its answer, as large, shows the path carries them.
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            sizes = record_data_packet_sizes(a)
            assert await _sctp_path.enlarge_if_carried(sctp_of(a), 16384) is CARRIED
            assert a.pc.stats()["sctp_packet_bytes"] == 16384
            chunks = enqueue_chunks(a, 8)  # 2 MiB
            await b.wait_frames(len(chunks), timeout_s=20)
            assert [data for _lane, data in b.frames] == chunks
            assert max(sizes) > 8192

    run(scenario())


def test_a_path_that_drops_large_packets_keeps_aiortcs_size() -> None:
    # As a firewall that drops IP fragments: the probe gets no answer, nothing changes.
    def drop_large(packet: bytes) -> bool:
        return len(packet) > 1500

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            impair(a, delay_s=0.001, rate_bytes_s=50e6, drop=drop_large)
            sizes = record_data_packet_sizes(a)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await _sctp_path.enlarge_if_carried(sctp_of(a), 16384) is NO_ANSWER
            patience_s = _sctp_path.PROBE_ATTEMPTS * _sctp_path.PROBE_TIMEOUT_S
            assert loop.time() - started < patience_s + 0.5
            assert a.pc.stats()["sctp_packet_bytes"] == 1189
            chunks = enqueue_chunks(a, 2)
            await b.wait_frames(len(chunks), timeout_s=20)
            assert [data for _lane, data in b.frames] == chunks
            assert max(sizes) <= 1189

    run(scenario(), timeout_s=30)


def test_a_slow_link_keeps_aiortcs_size() -> None:
    # At 1 MB/s a 16 KiB packet holds the link 16 ms: large packets would gain nothing
    # (the link bounds the stream) and hold calls behind them. The large probe's answer
    # comes that much after the small one's.
    async def scenario() -> None:
        async with connected_pair() as (a, _b):
            impair(a, delay_s=0.001, rate_bytes_s=1e6)
            found = await _sctp_path.enlarge_if_carried(sctp_of(a), 16384)
            assert found is _sctp_path.Probe.SLOW
            assert a.pc.stats()["sctp_packet_bytes"] == 1189
            line = status_line_of(a)
            assert "candidate host (packets of 1,189 bytes: a slow link)," in line, line

    run(scenario(), timeout_s=30)


def test_losses_with_large_packets_bring_aiortcs_size_back_until_a_probe_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One lost fragment loses a whole 16 KiB packet: on a lossy path, after a few losses
    # the link cuts small packets again; what was cut large still arrives, in order. An
    # outage looks the same: a while later a probe goes again, and large packets return.
    monkeypatch.setattr(_sctp_path, "REPROBE_AFTER_S", 2.0)
    rng = random.Random(3)
    lossy = True

    def drop_some_data(packet: bytes) -> bool:
        data = any(isinstance(c, DataChunk) for c in parse_packet(packet)[3])
        return lossy and data and rng.random() < 0.05

    async def status_once_small(a: Side) -> str:
        # Seen while the stream goes: on a busy machine it can take longer than the
        # probe's 2 s, and the size be large again by its end (a flaky check, QA).
        while a.pc.stats()["sctp_packet_bytes"] != 1189:
            await asyncio.sleep(0.01)
        return status_line_of(a)

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            assert await _sctp_path.enlarge_if_carried(sctp_of(a), 16384) is CARRIED
            impair(a, delay_s=0.005, rate_bytes_s=50e6, drop=drop_some_data)
            impair(b, delay_s=0.005, rate_bytes_s=50e6)
            small = asyncio.ensure_future(status_once_small(a))
            try:
                await stream(a, b, chunks=256, timeout_s=30)  # 4 MiB in 16 KiB frames
                line = await asyncio.wait_for(small, timeout=5)
            finally:
                small.cancel()
            assert "(packets of 1,189 bytes: 3 losses, probing again later)" in line, line
            nonlocal lossy
            lossy = False
            async with asyncio.timeout(20):  # the last fallback's probe: within 8 s
                while a.pc.stats()["sctp_packet_bytes"] != 16384:
                    await asyncio.sleep(0.05)
            assert "candidate host (packets of 16 KiB)," in status_line_of(a)

    run(scenario(), timeout_s=60)


@pytest.mark.parametrize(("window_s", "packet_bytes"), [(0.6, 16384), (60.0, 1189)])
def test_only_losses_close_together_bring_aiortcs_size_back(
    monkeypatch: pytest.MonkeyPatch, window_s: float, packet_bytes: int
) -> None:
    # Three lone messages lost on the way, about a second apart: the odd losses of a
    # good path when they fall in separate windows (the link keeps 16 KiB), a lossy one
    # when they fall in one.
    monkeypatch.setattr(_sctp_path, "LOSS_WINDOW_S", window_s)
    drop_next = False

    def drop_one(packet: bytes) -> bool:
        nonlocal drop_next
        if drop_next and any(isinstance(c, DataChunk) for c in parse_packet(packet)[3]):
            drop_next = False
            return True
        return False

    async def scenario() -> None:
        nonlocal drop_next
        async with connected_pair() as (a, b):
            assert await _sctp_path.enlarge_if_carried(sctp_of(a), 16384) is CARRIED
            impair(a, delay_s=0.001, rate_bytes_s=50e6, drop=drop_one)
            for i in range(3):
                drop_next = True
                a.pc.enqueue(PayloadType.RPC_RELIABLE, b"lost once %d" % i)
                await b.wait_frames(i + 1, timeout_s=5)
                await asyncio.sleep(0.7)
            assert not drop_next and [d for _l, d in b.frames][-1] == b"lost once 2"
            sctp = a.pc.stats()["sctp"]
            assert sctp["outage_retransmits"] + sctp["fast_recoveries"] >= 3, sctp
            assert a.pc.stats()["sctp_packet_bytes"] == packet_bytes

    run(scenario(), timeout_s=30)
