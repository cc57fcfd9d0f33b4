"""Random and truncated frames on a worker's socket: dropped, counted, process lives on."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import zmq

import actrhost
from actrhost import _envelope as wire
from actrhost._rundir import node_prefix
from actrhost.shm import Descriptor, encode_array_meta, segment_name

from .utils import actrhost_command, run, wait_until


def test_garbage_frames_are_dropped_and_counted(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "echo"
        type = "test+Echo"
        handler = "actors:Echo"
        """
    )
    info = node.actors()[0]
    endpoint = f"ipc://{node.run_dir / f'a-{info.actr_id.serial_number:x}.sock'}"
    good = wire.encode(wire.Envelope(wire.REQUEST, "test.Echo.Say", b"x" * 100, request_id="r"))
    rng = random.Random(1234)
    frames = [rng.randbytes(rng.randrange(1, 300)) for _ in range(200)]
    frames += [good[:cut] for cut in range(1, len(good))]  # every truncation of a real frame
    frames += [b"\xff" * 50, b"\x00" * 10, good + b"\xff"]

    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        for frame in frames:
            sock.send(frame)
        sock.send_multipart([b"two", b"parts"])  # two undecodable frames in one message
        sock.close()
    finally:
        ctx.term()

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            assert await shell.call("echo", "test.Echo.Say", b"still alive") == b"still alive"
            stats = (await shell.status())["actors"][0]["stats"]
            return stats

    stats = run(go())
    # Some truncations still parse as a valid (shorter) protobuf message; every frame that
    # does not decode into an RPC envelope is counted.
    undecodable = 0
    for frame in frames:
        try:
            wire.decode(frame)
        except actrhost.BadRequest:
            undecodable += 1
    assert stats["malformed_frames"] == undecodable + 2
    assert undecodable > 200
    assert node.actors()[0].pid == info.pid  # same process: nothing crashed
    # Logged: the first five, then every 100th (a peer sending garbage cannot flood it).
    logged = [line for line in node.log().splitlines() if "(malformed frame #" in line]
    numbers = [int(line.rsplit("#", 1)[1].rstrip(")")) for line in logged]
    assert numbers == [1, 2, 3, 4, 5, *range(100, stats["malformed_frames"] + 1, 100)]
    # And `actrhost status` names the count below its table.
    table = actrhost_command("status", str(node.config_path)).stdout.splitlines()
    assert f"  echo#0 refused or lost: malformed_frames {stats['malformed_frames']}" in table


def test_garbage_on_the_control_socket_is_counted_and_logged_sparingly(node_factory):
    # Used to be logged once per message, and counted nowhere.
    node = node_factory('[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n')
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(f"ipc://{node.run_dir / 'control.sock'}")
        for _ in range(250):
            sock.send(b"\xff\xff garbage")
        sock.send_multipart([b"{}", b"two parts"])
        sock.close()
    finally:
        ctx.term()
    # Another connection to the same socket: its requests may be read before the garbage.
    wait_until(lambda: node.status()["malformed_control"] >= 251, 10, "the garbage counted")
    assert node.status()["malformed_control"] == 251
    logged = [line for line in node.log().splitlines() if "malformed control message" in line]
    assert len(logged) == 7  # #1-5, #100, #200
    metrics = actrhost_command("status", str(node.config_path), "--json").stdout
    assert '"malformed_control": 251' in metrics


def test_stream_chunks_whose_description_does_not_hold_up_are_dropped_as_malformed(node_factory):
    node = node_factory(
        '[[actor]]\nname = "sink"\ntype = "test+StreamSink"\nhandler = "actors:StreamSink"\n'
    )
    info = node.actors()[0]
    endpoint = f"ipc://{node.run_dir / f'a-{info.actr_id.serial_number:x}.sock'}"
    good_meta = encode_array_meta(np.dtype("<f8"), (2,))
    frames = [
        # Array descriptions that cannot be built: not the callback's failure.
        wire.StreamFrame(wire.STREAM, "s0", payload=b"x" * 16, array_meta=b"\x01\x03|O8\x00"),
        wire.StreamFrame(wire.STREAM, "s0", payload=b"x" * 16, array_meta=b"\x07garbage"),
        wire.StreamFrame(wire.STREAM, "s0", payload=b"x" * 15, array_meta=good_meta),
        # A record in a ring that does not exist, claiming 4 GB.
        wire.StreamFrame(
            wire.STREAM,
            "s0",
            shm=Descriptor(
                segment_name(node_prefix(node.run_dir), "s1.abc", "1", f"{info.pid:x}"),
                offset=0,
                length=4_000_000_000,
                sequence=0,
            ).to_bytes(),
        ),
        # A ring made for this instance's previous process (frames sent to a worker that
        # was killed reach its successor at the same address: it killed that too, QA),
        # and one of another node.
        wire.StreamFrame(
            wire.STREAM,
            "s0",
            shm=Descriptor(
                segment_name(node_prefix(node.run_dir), "s1.abc", "1", f"{info.pid + 1:x}"),
                offset=0,
                length=16,
                sequence=0,
            ).to_bytes(),
        ),
        wire.StreamFrame(
            wire.STREAM,
            "s0",
            shm=Descriptor("actrh-elsewhere-s1.abc.0-1-1", 0, 16, 0).to_bytes(),
        ),
    ]
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.connect(endpoint)
        for frame in frames:
            sock.send(wire.encode_stream(frame))
    finally:
        ctx.destroy(linger=1000)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            for _ in range(100):
                stats = (await shell.status())["actors"][0]["stats"]["streams_in"]
                if stats["malformed"] + stats["previous_process"] + stats["ring_gone"] == len(
                    frames
                ):
                    return stats
                await asyncio.sleep(0.05)
            return stats

    stats = run(go())
    # The one for the previous process is counted as such: it is not corrupt (it was
    # counted "malformed", with a warning that suggested so, QA).
    assert stats["previous_process"] == 1
    # A ring that does not exist is one whose sender is gone (the receiver cannot tell
    # which, and the sender's fault it is not).
    assert stats["ring_gone"] == 1
    assert stats["malformed"] == len(frames) - 2
    assert "sent to this instance's previous process, which died" in node.log()
    assert stats["callback_errors"] == 0
    assert stats["bytes_via_shm"] == 0 and stats["bytes_inline"] == 0
    assert node.actors()[0].pid == info.pid
