"""The sending half of a process's data streams and media samples (the receiving half
and what both share: :mod:`._streams`).

Chunks at or above ``[shm] threshold_bytes`` are written into a ring shared with the
receiving process and only their descriptors go over ZeroMQ, several per message when
they are sent back to back. Reliable chunks for another node's actor go through the
gateway's ring whatever their size: a full ring holds up only the streams to that one
target (inline, the gateway would have to keep them, docs/gateway.md Backpressure).

Frames to one endpoint leave in the order they were sent, also while that endpoint's
socket is full: a batch ZeroMQ would not take waits, and every later frame to that
endpoint queues behind it (a later batch slipping past a waiting one reordered a reliable
stream in blocks of 64 chunks, docs/history.md 2026-12-03).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from . import _envelope as wire
from ._directory import SHELL_READER_SERIAL
from ._envelope import MEDIA, StreamFrame
from ._errors import BadRequest, ClosedResourceError, DeadlineExceeded, Unavailable
from ._ids import ActrId
from ._kept_frames import Kept, KeptFrames, Resender
from ._rpc import RpcEndpoint
from ._streams import LOSSY_LANES, StreamCounters, nbytes_of, payload_buffer, ring_name
from ._tell_origin import origin_field
from .shm import Descriptor, RingWriter, WouldBlock

log = logging.getLogger(__name__)

#: How a reliable sender polls a full ring: the ring has no wake-up of its own, and the
#: consumer frees space within one callback, so a short capped backoff is enough.
RING_POLL_MIN_S = 0.0002
RING_POLL_MAX_S = 0.005
#: Ring descriptors sent as one ZeroMQ message at most (they are ~100 bytes each).
MAX_BATCH_FRAMES = 64
#: The reliable chunks to other nodes a process keeps, to send them again after the
#: node's gateway died (module _kept_frames): the newest, at most this many, bytes and
#: seconds old. More than a gateway holds of one sender's chunks when the other node
#: keeps up (its queues, aiortc's buffer and what is in flight: a few MiB).
CHUNKS_KEPT = 16_384
CHUNKS_KEPT_BYTES = 32 * 1024 * 1024
CHUNKS_KEPT_S = 60.0
#: A reliable chunk to another node waits while the rings to the gateway hold this many
#: bytes: with what the gateway holds itself (its queues, aiortc's buffer: a few MiB),
#: less than the sender keeps, so that every chunk a killed gateway held or left in a
#: ring is one it can send again. Behind a slow link the rings (64 MiB each) used to fill:
#: 544 chunks of 64 KiB lost to one SIGKILL (scripts/chaos_remote.py, session 34).
GATEWAY_RINGS_MAX_BYTES = CHUNKS_KEPT_BYTES - 8 * 1024 * 1024
#: The same in chunks: half of what the sender keeps. Small chunks reach the byte bound
#: only by the hundred thousand: 600,000 chunks of 64 bytes waited unread (more than
#: the sender could send again), and the gateway, working through them once the link
#: had room, blocked its loop for seconds and lost the link (QA, session 36).
GATEWAY_RINGS_MAX_CHUNKS = CHUNKS_KEPT // 2
#: How long frames may wait for a busy socket (without any of them leaving) before
#: they, and the rings their descriptors point into, are given up.
FLUSH_WAIT_S = 30.0


@dataclass
class _Batch:
    """Frames for one endpoint that go to ZeroMQ as one message."""

    frames: list[bytes] = field(default_factory=list)
    #: Reader serials of the rings the frames' descriptors point into: given up with
    #: the frames if those never leave (a ring cannot release records out of order).
    serials: set[int] = field(default_factory=set)


class StreamSender:
    """Sends chunks and samples for one process; owns the rings it writes."""

    def __init__(
        self,
        rpc: RpcEndpoint,
        *,
        node_prefix: str,
        self_tag: str,
        threshold_bytes: int,
        ring_bytes: int,
    ) -> None:
        self._rpc = rpc
        self._node_prefix = node_prefix
        self._self_tag = self_tag
        self.threshold_bytes = threshold_bytes
        self.ring_bytes = ring_bytes
        # By (reader serial, reader pid, media?): media samples have rings of their own, so
        # that a stream whose receiver is slow does not fill the ring they need too.
        self._writers: dict[tuple[int, int, bool], RingWriter] = {}
        self._ring_numbers = itertools.count()
        self._gateway_pid: int | None = None  # see set_gateway_pid
        # Endpoints a frame already went to: a lossy lane drops when one of those is busy,
        # but waits for a first connection instead of dropping everything until it is up.
        self._connected: set[str] = set()
        # Frames queued in this loop iteration, by endpoint (see _queue_frame).
        self._batches: dict[str, _Batch] = {}
        # Batches ZeroMQ would not take yet (the receiver's queue is full), in order, by
        # endpoint; one task per endpoint sends them (_send_stalled).
        self._stalled: dict[str, deque[_Batch]] = {}
        self._stall_tasks: dict[str, asyncio.Task[None]] = {}
        self.counters = StreamCounters()
        self._loop = asyncio.get_running_loop()
        #: Reliable chunks to other nodes, kept to go again after the gateway died.
        kept: KeptFrames[tuple[StreamFrame, Any]] = KeptFrames(
            self._loop.time, CHUNKS_KEPT, CHUNKS_KEPT_BYTES, CHUNKS_KEPT_S
        )
        self.to_other_nodes = Resender(
            self._loop, kept, self._send_kept, "reliable stream chunks", self._count_sent_again
        )
        self._key = kept.key  # the origin's session: this process as a sender

    def _writer(self, reader_serial: int, target_pid: int, media: bool) -> RingWriter:
        key = (reader_serial, target_pid, media)
        writer = self._writers.get(key)
        if writer is None:
            # The receiver's pid is part of the name: a restarted receiver gets a fresh
            # ring instead of one holding records its predecessor never released.
            # A number of its own too: a ring made again for the same reader (a Shell that
            # re-registered its stream) must not take the name the reader still knows.
            tag = f"{self._self_tag}.{next(self._ring_numbers):x}"
            name = ring_name(self._node_prefix, tag, reader_serial, target_pid)
            writer = RingWriter.create(name, self.ring_bytes)
            self._writers[key] = writer
        return writer

    def set_gateway_pid(self, pid: int | None, endpoints: tuple[str, ...] = ()) -> None:
        """The directory's gateway changed (restarted, stopped): its rings are dead, and
        so are the frames still waiting to reach it at ``endpoints`` (they point into
        those rings: the next gateway, at the same address, could not read them)."""
        old, self._gateway_pid = self._gateway_pid, pid
        # The reliable chunks it may have held go again to the next one, in doubt.
        self.to_other_nodes.gateway_is(endpoints[0] if endpoints else None, pid)
        if old is None or old == pid:
            return
        for key in [k for k in self._writers if k[1] == old]:
            writer = self._writers.pop(key)
            writer.unlink(missing_ok=True)
            writer.close()
        for endpoint in endpoints:
            batch = self._batches.pop(endpoint, None)
            stalled = self._stalled.pop(endpoint, deque())
            task = self._stall_tasks.pop(endpoint, None)
            if task is not None:
                task.cancel()
            lost = sum(len(b.frames) for b in [*stalled, *([batch] if batch else [])])
            if lost:
                # (Reliable chunks go again from the copies kept: _send_kept.)
                log.info("%d stream frame(s) to the gateway dropped: it went away", lost)

    def forget_target(self, serial: int, *, unlink: bool = True) -> None:
        """Close (and unlink) the rings to an instance that went away."""
        for reader_serial, pid, _media in [k for k in self._writers if k[0] == serial]:
            self.forget_reader(reader_serial, pid, unlink=unlink)

    def forget_reader(self, serial: int, pid: int, *, unlink: bool = True) -> None:
        """Close (and unlink) the rings to one reading process (a Shell that left)."""
        for media in (False, True):
            writer = self._writers.pop((serial, pid, media), None)
            if writer is not None:
                if unlink:
                    writer.unlink(missing_ok=True)
                writer.close()

    def close(self, *, unlink: bool = True) -> None:
        """Close every ring this process created.

        With ``unlink`` also remove the names of rings whose reader has not attached yet
        (a stopping worker: frames to it are lost anyway). A Shell closes without: its
        last frames may still be on their way, and the reader removes the name when it
        attaches (or the supervisor, at shutdown).
        """
        self.to_other_nodes.close()
        for endpoint in list(self._batches):
            self._flush(endpoint)
        for task in self._stall_tasks.values():
            task.cancel()
        for serial, _pid, _media in list(self._writers):
            self.forget_target(serial, unlink=unlink)

    async def send(
        self,
        frame: StreamFrame,
        payload: Any,
        *,
        endpoint: str,
        target: ActrId | None,
        target_pid: int | None,
        deadline: float,
    ) -> bool:
        """Send one chunk or sample; return False if a lossy lane dropped it.

        Raises ``DeadlineExceeded`` when a reliable send finds no room before ``deadline``,
        ``Unavailable`` when the receiver is gone, ``BadRequest`` for a payload larger than
        the ring.
        """
        buffer, array_meta = payload_buffer(payload)
        size = nbytes_of(buffer)
        lossy = frame.payload_type in LOSSY_LANES
        # Reliable chunks to another node use a ring even when small: the gateway leaves a
        # slow node's records unread there, so only the senders to that target wait (small
        # inline chunks it kept in memory, and past 4 MiB of them it stopped reading the
        # streams to *every* node, QA 2026-12-04).
        to_gateway = not lossy and target_pid == self._gateway_pid
        if target_pid is None or (size < self.threshold_bytes and not to_gateway):
            frame.payload = buffer.tobytes() if array_meta else bytes(buffer)
            frame.array_meta = array_meta
            sent = await self._send_frame(endpoint, wire.encode_stream(frame), deadline, lossy)
            if sent:
                self.counters.bytes_inline += size
            return sent
        if not to_gateway:
            return await self._via_ring(
                frame, buffer, array_meta, endpoint, target, target_pid, deadline
            )
        # To another node: behind those that went again after the node's gateway died,
        # then numbered and kept (module _kept_frames) once it is in the ring, so that the
        # numbers follow the order in which the chunks leave.
        await self.to_other_nodes.sent_again_first(deadline)

        def keep() -> bytes:
            number = self.to_other_nodes.keep((frame, _kept_copy(payload, buffer)), size)
            return origin_field(self._key, frame.payload_type, number, 0, False, target_pid)

        return await self._via_ring(
            frame, buffer, array_meta, endpoint, target, target_pid, deadline, keep
        )

    async def _send_kept(
        self, endpoint: str, kept: Kept[tuple[StreamFrame, Any]], pid: int, deadline: float
    ) -> None:
        """A reliable chunk to another node goes again, in doubt, to the gateway ``pid``."""
        frame, payload = kept.item
        frame.shm = frame.payload = frame.array_meta = b""
        buffer, array_meta = payload_buffer(payload)
        origin = origin_field(self._key, frame.payload_type, kept.number, 0, True, pid)
        target = frame.target
        await self._via_ring(
            frame, buffer, array_meta, endpoint, target, pid, deadline, lambda: origin
        )

    def _count_sent_again(self, sent: bool) -> None:
        if sent:
            self.counters.chunks_sent_again += 1
        else:
            self.counters.chunks_not_sent_again += 1

    async def _via_ring(
        self,
        frame: StreamFrame,
        buffer: Any,
        array_meta: bytes,
        endpoint: str,
        target: ActrId | None,
        target_pid: int,
        deadline: float,
        origin: Callable[[], bytes] | None = None,
    ) -> bool:
        """Send a chunk or sample through a ring to ``target``'s process ``target_pid``
        (its descriptor to ``endpoint``, with what ``origin()`` returns once it is in the
        ring appended); False if a lossy lane dropped it."""
        size = nbytes_of(buffer)
        lossy = frame.payload_type in LOSSY_LANES
        # A Shell (no target id) reads its rings as any process does (SHELL_READER_SERIAL).
        serial = target.serial_number if target is not None else SHELL_READER_SERIAL
        writer = self._writer(serial, target_pid, frame.kind == MEDIA)
        if size > writer.max_record_bytes:
            raise BadRequest(
                f"a {size}-byte payload never fits the {writer.capacity_bytes}-byte ring "
                f"(at most {writer.max_record_bytes} bytes): raise [shm] ring_bytes or send "
                "smaller chunks"
            )
        link = self._rpc.link(endpoint)
        # A committed record that never reaches the reader would block the ring's release
        # order for good. A lossy lane, which must not wait after writing, checks first
        # that the frame can go out; a reliable one waits for the socket after writing
        # (below) and only checks before its first frame (the link may still connect).
        busy = endpoint in self._stalled or not link.writable()
        if (lossy or endpoint not in self._connected) and busy:
            if lossy and endpoint in self._connected:
                self.counters.dropped_sender += 1
                return False
            if not await link.wait_writable(deadline):
                raise self._timeout_or_gone(deadline, endpoint)
        if origin is not None:  # kept: at most what the sender keeps may wait unread
            await self._room_in_gateway_rings(size, deadline)
        descriptor = await self._write_record(writer, buffer, array_meta, lossy, deadline)
        if descriptor is None:
            self.counters.dropped_sender += 1
            # The ring is full, maybe of records whose descriptors still wait here for the
            # end of this loop iteration: a sender that never yields (a lossy send does
            # not) would keep them from the receiver, which could free nothing, and drop
            # all that follows (5 of 100 samples went out). Send them now.
            if endpoint in self._batches:
                self._flush(endpoint)
            return False
        frame.shm = descriptor.to_bytes()
        data = wire.encode_stream(frame)
        self._queue_frame(endpoint, data if origin is None else data + origin(), serial)
        self._connected.add(endpoint)
        self.counters.chunks_sent += 1
        self.counters.bytes_via_shm += size
        return True

    def _queue_frame(self, endpoint: str, data: bytes, ring_serial: int | None) -> None:
        """Queue a frame (a ring descriptor, or an inline frame behind descriptors);
        frames queued in one loop iteration go out as one ZeroMQ message. A send wakes
        ZeroMQ's I/O thread, which at 1 MiB chunks cost more than the bookkeeping around
        the copy (scripts/bench_stream.py profile)."""
        batch = self._batches.get(endpoint)
        if batch is None:
            batch = self._batches[endpoint] = _Batch()
            self._loop.call_soon(self._flush, endpoint)
        batch.frames.append(data)
        if ring_serial is not None:
            batch.serials.add(ring_serial)
        if len(batch.frames) >= MAX_BATCH_FRAMES:
            self._flush(endpoint)

    def _flush(self, endpoint: str) -> None:
        batch = self._batches.pop(endpoint, None)
        if batch is None:
            return
        stalled = self._stalled.get(endpoint)
        if stalled is not None:
            stalled.append(batch)  # never past frames that wait already
            return
        try:
            self._rpc.link(endpoint).send_multipart_nowait(batch.frames)
        except zmq.Again:
            # The records are committed: the frames must reach the reader, or the ring
            # could never release them. Wait for the socket (bounded) in the background.
            self._stalled[endpoint] = deque([batch])
            self._stall_tasks[endpoint] = self._loop.create_task(self._send_stalled(endpoint))
        except zmq.ZMQError as exc:
            log.warning("stream frames to %s lost: %s", endpoint, exc)
            self._give_up(batch.serials)

    async def _send_stalled(self, endpoint: str) -> None:
        """Send the batches waiting for ``endpoint``, oldest first, as its socket takes
        them; give them up after FLUSH_WAIT_S without progress."""
        stalled = self._stalled[endpoint]
        link = self._rpc.link(endpoint)
        try:
            while stalled:
                if not await link.wait_writable(self._loop.time() + FLUSH_WAIT_S):
                    break
                try:
                    link.send_multipart_nowait(stalled[0].frames)
                except zmq.Again:
                    continue
                stalled.popleft()
        finally:
            # (Unless set_gateway_pid dropped them, and a new stall may have begun since.)
            if self._stalled.get(endpoint) is stalled:
                del self._stalled[endpoint]
                del self._stall_tasks[endpoint]
        if stalled:
            # The receiver is gone or stuck: these rings can never be released in order
            # again; the next send starts new ones (and the directory tells the sender if
            # the receiver died).
            frames = sum(len(batch.frames) for batch in stalled)
            log.warning(
                "%d stream frame(s) to %s not delivered in %.0fs", frames, endpoint, FLUSH_WAIT_S
            )
            self._give_up(set().union(*(batch.serials for batch in stalled)))

    def _give_up(self, serials: set[int]) -> None:
        for serial in serials:
            self.forget_target(serial)

    async def _wait_unstalled(self, endpoint: str, deadline: float) -> None:
        """Wait until no frame to ``endpoint`` waits for its socket (inline frames do not
        queue behind a stall without bound: they wait here, as they would for the
        socket)."""
        while (task := self._stall_tasks.get(endpoint)) is not None:
            timeout = deadline - self._loop.time()
            if timeout <= 0:
                raise self._timeout_or_gone(deadline, endpoint)
            await asyncio.wait([task], timeout=timeout)

    async def _room_in_gateway_rings(self, size: int, deadline: float) -> None:
        """Wait until one more chunk of ``size`` bytes in the rings to the gateway stays
        within :data:`GATEWAY_RINGS_MAX_BYTES` (or they are empty: a larger chunk goes
        alone) and :data:`GATEWAY_RINGS_MAX_CHUNKS`."""
        pause = RING_POLL_MIN_S
        gateway = self._gateway_pid
        while True:
            held = chunks = 0
            for (_serial, pid, media), writer in self._writers.items():
                if pid == gateway and not media:  # (media samples are never kept)
                    held += writer.capacity_bytes - writer.free_bytes()
                    chunks += writer.records_in_use()
            if not held or (
                held + size <= GATEWAY_RINGS_MAX_BYTES and chunks < GATEWAY_RINGS_MAX_CHUNKS
            ):
                return
            if self._loop.time() + pause > deadline:
                raise DeadlineExceeded(
                    f"{chunks} chunks ({held} bytes) for other nodes still waited for the "
                    "gateway at the deadline (a slow link or receiver)"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, RING_POLL_MAX_S)

    async def _write_record(
        self, writer: RingWriter, buffer: Any, array_meta: bytes, lossy: bool, deadline: float
    ) -> Descriptor | None:
        pause = RING_POLL_MIN_S
        while True:
            try:
                if array_meta:
                    return writer.write_array_nowait(buffer)
                return writer.write_nowait(buffer)
            except ClosedResourceError:
                # forget_target() closed it: the receiver went away while we waited.
                raise Unavailable(f"the receiver of ring {writer.name} went away") from None
            except WouldBlock:
                if lossy:
                    return None
                if self._loop.time() + pause > deadline:
                    raise DeadlineExceeded(
                        f"ring {writer.name} stayed full until the deadline (receiver too slow)"
                    ) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, RING_POLL_MAX_S)

    async def _send_frame(self, endpoint: str, data: bytes, deadline: float, lossy: bool) -> bool:
        if endpoint in self._stalled:
            if lossy:
                self.counters.dropped_sender += 1
                return False
            await self._wait_unstalled(endpoint, deadline)
        if endpoint in self._batches:
            # Descriptors are waiting to go out: queue behind them, or chunks of one
            # stream would overtake each other.
            self._queue_frame(endpoint, data, None)
            self.counters.chunks_sent += 1
            return True
        if lossy and endpoint in self._connected:
            try:
                self._rpc.link(endpoint).send_nowait(data)
            except zmq.Again:
                self.counters.dropped_sender += 1
                return False
        else:
            try:
                await self._rpc.send(endpoint, data, deadline)
            except Unavailable:
                raise self._timeout_or_gone(deadline, endpoint) from None
        self._connected.add(endpoint)
        self.counters.chunks_sent += 1
        return True

    def _timeout_or_gone(self, deadline: float, endpoint: str) -> Exception:
        if self._loop.time() >= deadline:
            return DeadlineExceeded(f"{endpoint} did not take the stream frame before the deadline")
        return Unavailable(f"{endpoint} is not accepting stream frames")


def _kept_copy(payload: Any, buffer: Any) -> Any:
    """What a kept chunk holds of its payload: the caller may change a buffer or array
    after the send, so those are copied; bytes are kept as they are."""
    if isinstance(payload, bytes):
        return payload
    if hasattr(payload, "__array_interface__") and hasattr(payload, "copy"):
        return payload.copy()
    return bytes(buffer)
