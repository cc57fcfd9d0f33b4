"""Hostile and broken peers: malformed envelopes, oversized frames, a peer that stops
reading. The server answers or disconnects the offender and keeps serving the others."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from actrhost._errors import BadRequest, ErrorCode, NotFound, Unavailable
from actrhost.signaling import SdpOffer, SignalingClient
from actrhost.signaling import _wire as wire
from actrhost.signaling._ranking import MAX_SCHEMA_CHARS, SchemaStore
from actrhost.signaling._testing import RawPeer, ServerProcess

from .utils import run

pytestmark = pytest.mark.timeout(60)

MAX_FRAME = 64 * 1024
QUEUE_SLOTS = 8


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(max_frame_bytes=MAX_FRAME, send_queue_slots=QUEUE_SLOTS) as proc:
        yield proc


async def _stats(peer: RawPeer) -> dict[str, int]:
    env = wire.new_envelope()
    env.stats_request.SetInParent()
    return dict((await peer.ask(env)).stats_response.counters)


def test_malformed_envelopes_get_400_and_the_connection_survives(server: ServerProcess) -> None:
    async def main() -> None:
        peer = await RawPeer.open(server.url)
        try:
            before = (await _stats(peer)).get("malformed", 0)
            no_flow = wire.new_envelope(envelope_id="e1")
            old_version = wire.new_envelope(envelope_id="e2")
            old_version.version = 99
            old_version.stats_request.SetInParent()
            server_only = wire.new_envelope(envelope_id="e3")
            server_only.pong.SetInParent()
            no_type = wire.new_envelope(envelope_id="e4")
            no_type.register_request.realm.realm_id = 1
            frames: list[tuple[bytes | str, str]] = [
                (b"\xff\xff\xff\xff garbage", "undecodable"),
                ("a text frame", "binary frames"),
                (no_flow.SerializeToString(), "unexpected message (none)"),
                (old_version.SerializeToString(), "unsupported protocol version 99"),
                (server_only.SerializeToString(), "unexpected message pong"),
                (no_type.SerializeToString(), "without actr_type"),
            ]
            for frame, message in frames:
                await peer.ws.send(frame)
                reply = await peer.recv()
                assert reply.error.code == ErrorCode.BAD_REQUEST
                assert message in reply.error.message
            # Replies to decodable requests name the envelope they answer.
            assert reply.reply_for == "e4"
            after = await _stats(peer)  # same connection, still served
            assert after["malformed"] - before == len(frames)
        finally:
            await peer.close()

    run(main())


def test_schemas_too_large_or_too_deep_are_refused_with_400(server: ServerProcess) -> None:
    # Any client may send a schema, unauthenticated: the server parses a bounded amount.
    with pytest.raises(BadRequest, match="at most 65536 are parsed"):
        SchemaStore().learn("", "message A { int32 a = 1; }" + " " * MAX_SCHEMA_CHARS)

    async def main() -> None:
        peer = await RawPeer.open(server.url)
        try:
            deep = "message A { " * 900 + "}" * 900  # recursion used to make it a 500
            with pytest.raises(BadRequest, match="nested more than 100 deep"):
                await peer.register("deep+Schema", 1, schema_text=deep)
            assert (await peer.register("fine+Schema", 1, schema_text="message A {}"))[0]
        finally:
            await peer.close()

    run(main())


def test_oversized_frame_disconnects_only_the_sender(server: ServerProcess) -> None:
    async def main() -> None:
        async with SignalingClient(server.url) as client:
            probe = await client.register("big+Probe", 90)
            before = (await client.server_stats()).get("oversized_frames", 0)
            peer = await RawPeer.open(server.url)
            await peer.ws.send(b"\x00" * (MAX_FRAME + 1))
            with pytest.raises(ConnectionClosed):
                await peer.recv()
            assert peer.ws.close_code == 1009  # "message too big"
            # Everyone else is still served; the server counts the offence.
            assert (await probe.discover("big+Probe")).candidates == ()
            while (await client.server_stats()).get("oversized_frames", 0) < before + 1:
                await asyncio.sleep(0.02)  # the count lands as the server closes; bounded
            # A frame just under the limit is fine (a large SDP, say).
            target = await client.register("big+Target", 90)
            assert target.actr_id is not None
            await probe.relay(target.actr_id, SdpOffer("x" * (MAX_FRAME - 1024)))

    run(main())


def test_peer_that_stops_reading_is_disconnected_without_stalling_others(
    server: ServerProcess,
) -> None:
    async def main() -> None:
        async with SignalingClient(server.url) as client:
            sender = await client.register("slow+Sender", 91)
            probe = await client.register("slow+Probe", 91)
            # The stuck peer registers, then never reads again: websockets stops reading
            # the socket once its 16-frame buffer is full, so the kernel buffers fill up,
            # then the server's send queue.
            stuck = await RawPeer.open(server.url, max_queue=16)
            stuck_id, _, _ = await stuck.register("slow+Stuck", 91)
            big = SdpOffer("x" * (MAX_FRAME - 1024))
            sent = 0
            with pytest.raises((NotFound, Unavailable)):
                for sent in range(1, 5000):  # bounded: ~300 MB at most, ends far earlier
                    await sender.relay(stuck_id, big)
                    if sent % 50 == 0:
                        # Others are served while the queue of the stuck peer fills.
                        assert (await probe.discover("slow+Sender")).best == sender.actr_id
            assert sent > QUEUE_SLOTS
            stats = await client.server_stats()
            assert stats["slow_consumers_disconnected"] >= 1
            assert (await probe.discover("slow+Stuck")).candidates == ()
            assert (await probe.discover("slow+Sender")).best == sender.actr_id
            stuck.ws.transport.abort()

    run(main())
