"""The gateway's tuning of aiortc and aioice.

SCTP (``actrhost/gateway/_sctp.py``), on two real aiortc connections in one process: under
load SACKs ride on answers and one-way traffic is still acknowledged in time, a packet
that finds the association quiet is acknowledged at once, large frames arrive intact,
and an eager send that has to wait finishes in a task. Every packet each side puts on
the wire is parsed with aiortc's own parser. STUN (``_ice.py``): datagrams are told apart
by their first byte (RFC 7983) before aioice tries to parse them, and a link's UDP socket
can queue what SCTP lets the other side have in flight, and what the kernel dropped shows
in the link's status. DTLS (``_dtls.py``):
received datagrams are handled in the socket callback, in order, and a close from the
other side still ends the link."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiortc")

from aiortc.rtcsctptransport import DataChunk, SackChunk, parse_packet

from actrhost._payload_type import PayloadType
from actrhost._status_text import _udp_lines
from actrhost.gateway import _dtls, _sctp, _sctp_scan
from actrhost.gateway._ice import UDP_RECEIVE_BUFFER_BYTES

from .test_gateway_peer import TUNING, Side, connected_pair
from .utils import run

pytestmark = pytest.mark.usefixtures("gateway_process_setup")


#: Links that send no keepalive of their own while a test counts their packets.
NO_KEEPALIVES = dataclasses.replace(TUNING, keepalive_interval_s=60.0, keepalive_timeout_s=120.0)


def sctp_of(side: Side) -> Any:
    pc = side.pc._pc
    assert pc is not None
    return pc.sctp  # the RTCSctpTransport (its .transport is the DTLS transport)


async def wait_acknowledged(sctp: Any, timeout_s: float) -> None:
    """Until every DATA chunk ``sctp`` sent is acknowledged (TimeoutError after that)."""
    async with asyncio.timeout(timeout_s):
        while sctp._sent_queue:
            await asyncio.sleep(0.002)


def record_packets(side: Side) -> Counter[str]:
    """Count the packets this side sends by content: "sack", "sack+data", "data", "other"."""
    dtls = sctp_of(side).transport
    kinds: Counter[str] = Counter()
    send = dtls._send_data

    async def counting_send(data: bytes) -> None:
        chunks = parse_packet(data)[3]
        types = [type(c) for c in chunks]
        if types == [SackChunk]:
            kinds["sack"] += 1
        elif types == [SackChunk, DataChunk]:
            kinds["sack+data"] += 1
        elif types == [DataChunk]:
            kinds["data"] += 1
        else:
            kinds["other"] += 1
        await send(data)

    dtls._send_data = counting_send
    return kinds


def test_a_ping_pong_under_load_sends_no_sack_packets_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every packet counts as part of a burst, however far apart the test's ping-pong is;
    # no SACK timer fires before an answer and no keepalive comes between, however busy
    # the machine (with two busy loops beside four test workers on 2 CPUs, the test took
    # seconds and each side's keepalive every 0.2 s had SACKs of their own: a flaky count).
    monkeypatch.setattr(_sctp, "QUIET_GAP_S", 60.0)
    monkeypatch.setattr(_sctp, "SACK_DELAY_S", 0.5)

    async def scenario() -> None:
        async with connected_pair(NO_KEEPALIVES) as (a, b):
            await asyncio.sleep(0.1)  # let the opening exchange settle
            sent_a, sent_b = record_packets(a), record_packets(b)
            acked_by_the_answer = 0
            for i in range(100):
                a.pc.enqueue(PayloadType.RPC_RELIABLE, b"ping %d" % i)
                await b.wait_frames(i + 1)
                b.pc.enqueue(PayloadType.RPC_RELIABLE, b"pong %d" % i)
                await a.wait_frames(i + 1)
                # The pong's bundle carried the SACK of the ping, taken after its DATA.
                acked_by_the_answer += not sctp_of(a)._sent_queue
            assert acked_by_the_answer >= 90
            assert [d for _l, d in a.frames] == [b"pong %d" % i for i in range(100)]
            # Each answer carries the SACK of its request and each request that of the
            # previous answer; aiortc alone sends a SACK packet per DATA packet (200).
            assert sent_a["sack+data"] >= 90 and sent_b["sack+data"] >= 90, (sent_a, sent_b)
            assert sent_a["sack"] + sent_b["sack"] <= 20, (sent_a, sent_b)

    run(scenario())


def test_one_way_traffic_under_load_is_acknowledged_within_the_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_sctp, "QUIET_GAP_S", 60.0)

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            await asyncio.sleep(0.1)
            sent_b = record_packets(b)
            a.pc.enqueue(PayloadType.RPC_RELIABLE, b"tell")
            await b.wait_frames(1)
            sctp = sctp_of(a)
            assert sctp._sent_queue, "the tell is in flight until acknowledged"
            await wait_acknowledged(sctp, timeout_s=1)
            assert sent_b["sack"] >= 1

    run(scenario())


def test_a_packet_on_a_quiet_association_is_acknowledged_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Were the SACK delayed, the tell would stay in flight for a minute.
    monkeypatch.setattr(_sctp, "SACK_DELAY_S", 60.0)

    # No keepalive pings meanwhile: one in flight from B would make the association
    # busy, not quiet, and B's SACK would ride on its next ping.
    async def scenario() -> None:
        async with connected_pair(NO_KEEPALIVES) as (a, b):
            await asyncio.sleep(0.1)
            sent_b = record_packets(b)
            sctp = sctp_of(a)
            for i in range(5):
                await asyncio.sleep(2 * _sctp.QUIET_GAP_S)
                a.pc.enqueue(PayloadType.RPC_RELIABLE, b"tell %d" % i)
                await b.wait_frames(i + 1)
                await wait_acknowledged(sctp, timeout_s=5)
            assert sent_b["sack"] >= 5 and sent_b["sack+data"] == 0, sent_b

    run(scenario())


def test_a_large_stream_arrives_intact_with_every_second_packet_acknowledged() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            sent_a, sent_b = record_packets(a), record_packets(b)
            chunks = [bytes([i]) * (256 * 1024) for i in range(16)]  # 4 MiB, ~3,600 packets
            for chunk in chunks:
                a.pc.enqueue(PayloadType.STREAM_RELIABLE, chunk)
            await b.wait_frames(len(chunks), timeout_s=20)
            got = [data for _lane, data in b.frames]
            assert [hashlib.sha256(x).digest() for x in got] == [
                hashlib.sha256(x).digest() for x in chunks
            ]
            data_packets = sent_a["data"] + sent_a["sack+data"]
            # In order, one SACK per two DATA packets (aiortc alone: 0.88 here). Both
            # ends share this process's loop, so the socket buffer overflows now and then:
            # each gap and duplicate is acknowledged at once, as it must be.
            assert sent_b["sack"] < 0.75 * data_packets, (sent_a, sent_b)

    run(scenario())


def test_a_chunks_mark_to_go_again_is_counted_while_it_is_set_and_the_chunk_lives() -> None:
    # aiortc walks every chunk in flight for marked ones on each SACK; the walk is skipped
    # while no chunk is marked (_sctp_scan), so the count must follow every change.
    before = _sctp_scan.marked_chunks()
    chunk = DataChunk()
    assert chunk._retransmit is False
    chunk._retransmit = True
    chunk._retransmit = True  # (once)
    assert chunk._retransmit is True and _sctp_scan.marked_chunks() == before + 1
    chunk._retransmit = False
    assert _sctp_scan.marked_chunks() == before
    chunk._retransmit = True  # and then acknowledged after all, and dropped
    del chunk
    gc.collect()
    assert _sctp_scan.marked_chunks() == before


def test_the_next_walk_over_a_sent_queue_can_be_made_empty() -> None:
    queue = _sctp_scan.SentQueue([1, 2, 3])
    queue.skip_next_walk = True
    assert list(queue) == [] and list(queue) == [1, 2, 3]  # one walk only
    assert queue[0] == 1 and len(queue) == 3 and queue.index(3) == 2


def test_a_stream_skips_the_walks_that_would_find_nothing() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            skipped = _sctp_scan.SentQueue.walks_skipped
            chunks = [bytes([i]) * (256 * 1024) for i in range(4)]
            for chunk in chunks:
                a.pc.enqueue(PayloadType.STREAM_RELIABLE, chunk)
            await b.wait_frames(len(chunks), timeout_s=20)
            assert [data for _lane, data in b.frames] == chunks
            assert isinstance(sctp_of(a)._sent_queue, _sctp_scan.SentQueue)
            assert _sctp_scan.SentQueue.walks_skipped > skipped + 100  # (≈ 1 per SACK)

    run(scenario())


def test_an_eager_send_that_must_wait_finishes_in_a_task() -> None:
    async def scenario() -> None:
        steps: list[str] = []
        release: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def send_path() -> None:
            steps.append("started")
            steps.append(await release)
            await asyncio.sleep(0)
            steps.append("done")

        _sctp.run_eagerly(send_path())
        assert steps == ["started"]  # ran at once, up to its first real wait
        release.set_result("resumed")
        async with asyncio.timeout(1):
            while "done" not in steps:
                await asyncio.sleep(0.001)
        assert steps == ["started", "resumed", "done"]

        finished: list[str] = []

        async def no_wait() -> None:
            finished.append("sent")

        _sctp.run_eagerly(no_wait())
        assert finished == ["sent"]  # nothing to wait for: done before run_eagerly returns

    run(scenario())


def test_datagrams_are_told_apart_by_their_first_byte() -> None:
    async def scenario() -> None:
        import aioice.ice
        import aioice.stun

        class Receiver:
            def __init__(self) -> None:
                self.data: list[bytes] = []
                self.requests: list[Any] = []

            def data_received(self, data: bytes, component: int) -> None:
                self.data.append(data)

            def request_received(self, message: Any, addr: Any, protocol: Any) -> None:
                self.requests.append(message)

        receiver = Receiver()
        protocol = aioice.ice.StunProtocol(receiver)  # type: ignore[arg-type]
        protocol.local_candidate = aioice.Candidate(
            foundation="1",
            component=1,
            transport="udp",
            priority=1,
            host="127.0.0.1",
            port=9,
            type="host",
        )
        dtls_record = bytes([23, 0xFE, 0xFD]) + bytes(40)  # application data, DTLS 1.2
        protocol.datagram_received(dtls_record, ("127.0.0.1", 9))
        request = aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
        )
        protocol.datagram_received(bytes(request), ("127.0.0.1", 9))
        protocol.datagram_received(b"\x01 not stun", ("127.0.0.1", 9))  # aioice's own path
        assert receiver.data == [dtls_record, b"\x01 not stun"]
        assert [m.transaction_id for m in receiver.requests] == [request.transaction_id]

    run(scenario())  # aioice's protocol wants a running loop


def test_a_links_udp_socket_can_queue_what_sctp_lets_the_other_side_send() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, _b):
            sockets = [
                protocol.transport.get_extra_info("socket")
                for protocol in dtls_connection(a)._protocols
            ]
            assert sockets  # the link's host candidate
            cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
            wanted = min(UDP_RECEIVE_BUFFER_BYTES, cap)
            for sock in sockets:
                # Linux reports twice what it was asked (its bookkeeping share).
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * wanted
            # aioice's own 256 KiB held ~220 datagrams of a 1 MiB SCTP window.
            assert UDP_RECEIVE_BUFFER_BYTES >= 4 * 1024 * 1024

    run(scenario())


def test_datagrams_the_kernel_drops_show_in_the_links_status() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, _b):
            assert a.pc.stats()["udp_drops"] == 0 and _udp_lines(a.pc.stats()) == []
            link = dtls_connection(a)._protocols[0].transport.get_extra_info("socket")
            # The smallest buffer the kernel allows, and no loop turn to read it: datagrams
            # sent meanwhile cannot all be queued. Their first byte says STUN and they are
            # not: aioice hands them on, and DTLS ignores them.
            link.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for _ in range(100):
                    sender.sendto(b"\x01" * 1000, link.getsockname())
            drops = a.pc.stats()["udp_drops"]
            assert drops > 50
            (line,) = _udp_lines(a.pc.stats())
            assert f"udp: the kernel dropped {drops} datagram(s) of this link" in line

    run(scenario())


# -- DTLS: datagrams handled in the socket callback (_dtls.py) ------------------------


def dtls_connection(side: Side) -> Any:
    """The aioice connection under this side's data channels."""
    return sctp_of(side).transport.transport._connection


def count_queued(side: Side) -> list[bytes]:
    """Record the datagrams that take aiortc's own way (aioice's queue, then a task)."""
    connection = dtls_connection(side)
    queued: list[bytes] = []
    put = connection._queue.put_nowait

    def counting_put(item: Any) -> None:
        if item is not None:
            queued.append(item[0])
        put(item)

    connection._queue.put_nowait = counting_put
    return queued


def test_a_connected_link_handles_each_datagram_in_the_socket_callback() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            assert _dtls.reader_of(a.pc._pc) is not None
            assert _dtls.reader_of(b.pc._pc) is not None
            queued_a, queued_b = count_queued(a), count_queued(b)
            for i in range(50):
                a.pc.enqueue(PayloadType.RPC_RELIABLE, b"call %d" % i)
                await b.wait_frames(i + 1)
                b.pc.enqueue(PayloadType.RPC_RELIABLE, b"answer %d" % i)
                await a.wait_frames(i + 1)
            assert [data for _lane, data in b.frames] == [b"call %d" % i for i in range(50)]
            assert [data for _lane, data in a.frames] == [b"answer %d" % i for i in range(50)]
            assert queued_a == [] and queued_b == []  # none waited for aiortc's task

    run(scenario())


def test_datagrams_that_come_while_one_is_held_follow_it_in_order() -> None:
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            sctp_b = sctp_of(b)
            reader = _dtls.reader_of(b.pc._pc)
            queued = count_queued(b)
            release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            handled: list[int] = []  # TSNs of DATA, in the order b's SCTP took them
            handle_data = sctp_b._handle_data

            async def held_handle_data(data: bytes) -> None:
                chunks = parse_packet(data)[3]
                handled.extend(c.tsn for c in chunks if isinstance(c, DataChunk))
                if len(handled) == 1:
                    await release  # the first packet's handling waits (as over TURN)
                await handle_data(data)

            sctp_b._handle_data = held_handle_data
            for i in range(8):
                a.pc.enqueue(PayloadType.RPC_RELIABLE, b"frame %d" % i)
            async with asyncio.timeout(5):
                while len(reader.backlog) < 3:
                    await asyncio.sleep(0.002)
            assert b.frames == []
            release.set_result(None)
            await b.wait_frames(8)
            assert [data for _lane, data in b.frames] == [b"frame %d" % i for i in range(8)]
            assert handled == sorted(handled) and len(handled) >= 8
            assert queued == [] and not reader.busy and not reader.backlog

    run(scenario())


def test_the_other_side_closing_ends_the_link_as_in_aiortc() -> None:
    async def scenario() -> None:
        async with connected_pair(dataclasses.replace(TUNING, keepalive_timeout_s=60.0)) as (a, b):
            assert _dtls.reader_of(b.pc._pc) is not None
            dtls_b = sctp_of(b).transport
            # DTLS close_notify alone (no SCTP ABORT first): b's eager receive sees it.
            await sctp_of(a).transport.stop()
            async with asyncio.timeout(10):  # the link's keepalive would take 60 s
                while dtls_b.state != "closed":
                    await asyncio.sleep(0.01)

    run(scenario())
