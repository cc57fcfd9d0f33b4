"""The rings a process reads: names removed on attach, mappings let go once the writer is
gone (real shared memory; the last test on a real node with real Shell processes)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import actrhost
from actrhost import BadRequest, DataStream, Unavailable, _ring_readers
from actrhost._ring_readers import RingReaders
from actrhost.shm import RingWriter, list_prefix, node_segment_prefix, segment_name, unlink_prefix

from .utils import REPO, run, wait_until


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A node prefix of this test's own; its segments are removed afterwards. Sweeps
    happen when a test says so (the timer's are tested on a real node below)."""
    monkeypatch.setattr(_ring_readers, "SWEEP_INTERVAL_S", 3600.0)
    node = secrets.token_hex(6)
    yield node
    unlink_prefix(node_segment_prefix(node))


def ring(node: str, writer_tag: str, reader_pid: int | None = None) -> RingWriter:
    """A ring from ``writer_tag`` to this process (or the process ``reader_pid``)."""
    pid = os.getpid() if reader_pid is None else reader_pid
    return RingWriter.create(segment_name(node, writer_tag, "1", pid), 4096)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    return child.pid


def test_attaching_removes_the_name_and_keeps_the_ring_usable(prefix: str) -> None:
    async def go() -> None:
        writer = ring(prefix, "a")
        readers = RingReaders(prefix)
        desc = writer.write_nowait(b"payload")
        reader = readers.get(writer.name)
        assert list_prefix(node_segment_prefix(prefix)) == []
        assert bytes(reader.read(desc)) == b"payload"
        readers.retire(desc)
        assert readers.get(writer.name) is reader
        readers.close()
        writer.close()
        with pytest.raises(Unavailable, match="cannot attach ring"):
            readers.get(writer.name)  # let go: the name is gone, nothing re-attaches

    run(go())


def test_a_ring_for_another_process_is_refused_and_left_to_it(prefix: str) -> None:
    async def go() -> None:
        # A descriptor sent to the wrong reader: attaching would remove the name, and
        # the process the ring is for could never attach it (its next chunk lost).
        writer = ring(prefix, "a", reader_pid=os.getppid())
        try:
            readers = RingReaders(prefix)
            desc = writer.write_nowait(b"x")
            with pytest.raises(BadRequest, match="is for another process"):
                readers.arrived(desc)
            assert writer.is_linked()
        finally:
            writer.close()

    run(go())


def test_a_ring_of_another_node_is_refused_and_left_alone(prefix: str) -> None:
    async def go() -> None:
        other = secrets.token_hex(6)
        writer = ring(other, "a")
        try:
            readers = RingReaders(prefix)
            desc = writer.write_nowait(b"x")
            with pytest.raises(BadRequest, match="does not belong to this node"):
                readers.arrived(desc)
            with pytest.raises(BadRequest, match="does not belong to this node"):
                readers.get(writer.name)
            assert writer.is_linked()
        finally:
            writer.close()
            unlink_prefix(node_segment_prefix(other))

    run(go())


def test_a_closed_writers_ring_goes_once_every_record_is_released(prefix: str) -> None:
    async def go() -> None:
        writer = ring(prefix, "a")
        readers = RingReaders(prefix)
        first, second = writer.write_nowait(b"1"), writer.write_nowait(b"2")
        readers.arrived(first)
        readers.arrived(second)
        reader = readers.get(writer.name)
        writer.close()  # a Shell that closed: its last descriptors are still held here
        readers.retire(first)
        readers.sweep()
        readers.sweep()
        assert len(readers) == 1 and bytes(reader.read(second)) == b"2"
        readers.retire(second)
        readers.sweep()
        readers.sweep()
        assert len(readers) == 0 and reader.closed

    run(go())


def test_records_lost_with_their_writer_do_not_keep_the_ring(prefix: str) -> None:
    async def go() -> None:
        writer = ring(prefix, "a")
        readers = RingReaders(prefix)
        desc = writer.write_nowait(b"1")
        writer.write_nowait(b"2")  # its descriptor never arrives
        readers.arrived(desc)
        readers.get(writer.name)
        writer.close()
        readers.retire(desc)
        readers.sweep()
        assert len(readers) == 1  # a first sweep waits: the descriptor may be on its way
        readers.sweep()
        readers.sweep()
        assert len(readers) == 0

    run(go())


def test_a_stopping_reader_keeps_its_rings_for_descriptors_still_queued(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stopping gateway: writers closed their end, descriptors wait in its socket. Its
    # sweeps (every 20 ms here) stop, so the records can still be read, until close().
    monkeypatch.setattr(_ring_readers, "SWEEP_INTERVAL_S", 0.02)

    async def go() -> None:
        writer = ring(prefix, "a")
        readers = RingReaders(prefix)
        writer.write_nowait(b"queued")  # its descriptor is still in the socket
        readers.get(writer.name)
        writer.close()
        await asyncio.sleep(0.2)  # ten sweeps
        assert len(readers) == 0  # without stop_sweeping: gone with a record unread
        readers.close()

        writer = ring(prefix, "c")
        readers = RingReaders(prefix)
        desc = writer.write_nowait(b"first")
        queued = writer.write_nowait(b"queued")  # its descriptor is still in the socket
        readers.get(writer.name)
        readers.stop_sweeping()
        writer.close()
        await asyncio.sleep(0.2)
        assert len(readers) == 1
        for d in (desc, queued):
            readers.arrived(d)
            reader = readers.get(writer.name)
            assert bytes(reader.read(d)) in (b"first", b"queued")
            readers.retire(d)
        readers.close()
        assert len(readers) == 0

    run(go())


def test_rings_of_a_dead_shell_go_and_those_of_a_live_one_stay(prefix: str) -> None:
    async def go() -> None:
        dead = ring(prefix, f"s{dead_pid():x}.abc123")
        live = ring(prefix, f"s{os.getpid():x}.def456")
        worker = ring(prefix, "1f")  # an instance: the directory says when it is gone
        readers = RingReaders(prefix)
        for writer in (dead, live, worker):
            readers.get(writer.name)
        readers.sweep()
        readers.sweep()
        assert len(readers) == 2
        readers.forget_writer("1f")
        assert len(readers) == 1
        readers.close()
        for writer in (dead, live, worker):
            writer.close()

    run(go())


SHELL = """
import asyncio, os, signal, sys
import actrhost
from actrhost import DataStream

async def main(config, how):
    async with actrhost.connect(config) as shell:
        for seq in range(3):
            await shell.send_data_stream("sink", DataStream("s0", seq, os.urandom(200_000)))
        await shell.call("sink", "test.Sink.Results", b"")  # the chunks arrived
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def ring_mappings(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split()[-2] for line in maps if "/dev/shm/actrh-" in line}


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_worker_lets_go_of_the_rings_of_a_shell_that_is_gone(node_factory, how: str) -> None:
    node = node_factory(
        """
        [[actor]]
        name = "sink"
        type = "test+Sink"
        handler = "actors:StreamSink"
        """,
        "[shm]\nthreshold_bytes = 4096\nring_bytes = 1048576\n",
    )
    sink = node.pid_of("sink")
    script = textwrap.dedent(SHELL)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(2):  # each Shell process writes its own ring
        done = subprocess.run(
            [sys.executable, "-c", script, str(node.config_path), how],
            env=env,
            timeout=60,
            capture_output=True,
        )
        assert done.returncode == (-signal.SIGKILL if how == "kill" else 0), done.stderr
    # Every chunk went through a ring of the Shell. The worker removed its name when the
    # first descriptor arrived (or, for one still on its way when the Shell was killed,
    # the supervisor does, once the sink had 10 s to read it: WRITER_GONE_GRACE_S), and
    # lets go of the mapping within two sweeps of the Shell's end.
    wait_until(lambda: node.segments() == [], 20, "the Shells' ring names to be removed")
    wait_until(lambda: not ring_mappings(sink), 10, "the sink to unmap the Shells' rings")

    async def still_serves() -> None:
        async with actrhost.connect(node.config_path) as shell:
            await shell.send_data_stream("sink", DataStream("s1", 0, os.urandom(200_000)))
            assert await shell.call("sink", "test.Sink.Results", b"")

    run(still_serves())
