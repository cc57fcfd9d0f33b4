"""Handing frames from other nodes to a local worker (actrhost/gateway/_to_workers.py) on
its own: a slow worker's reliable stream chunks, what is acknowledged to their sender and
when, and ``full`` / ``room``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import zmq

from actrhost import _envelope as wire
from actrhost._directory import gateway_feed_endpoint
from actrhost._envelope import Envelope
from actrhost._errors import BadRequest
from actrhost._rpc_receiving import FEED_SYNC_ROUTE
from actrhost.gateway._carry import HeldTells
from actrhost.gateway._confirming import WindowShare
from actrhost.gateway._counters import GatewayCounters
from actrhost.gateway._feed_reads import FEED_BYTES_MAX, FeedReads
from actrhost.gateway._to_workers import ToWorkers
from actrhost.gateway._types import LinkState, Tuning

from .utils import run

MIB = 1024 * 1024


class SendingNode:
    """The connection a chunk came on, as the hand-over sees it."""

    state = LinkState.CONNECTED

    def __init__(self) -> None:
        self.acknowledged_bytes = 0
        self.said: list[tuple[str, str]] = []

    def stream_delivered(self, size_bytes: int) -> None:
        self.acknowledged_bytes += size_bytes

    def send_control(self, message: dict[str, Any]) -> None:
        self.said.append((message["op"], message["t"]))


def is_sync(data: bytes) -> bool:
    try:
        env = wire.decode(data)
    except BadRequest:
        return False
    return isinstance(env, Envelope) and env.route_key == FEED_SYNC_ROUTE


class HandOver(ToWorkers):
    """Just the hand-over part of a gateway."""

    def __init__(self, zctx: zmq.Context, tuning: Tuning) -> None:
        self.counters = GatewayCounters()
        self.tuning = tuning
        self._loop = asyncio.get_running_loop()
        self._zctx = zctx
        self._hwm = 1
        self._dealers = {}
        self._overflow = {}
        self._feeds = {}
        self._syncs = {}
        self._sync_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.undeliverable = 0

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_dealer(self, frames: list[bytes]) -> None:
        if is_sync(frames[-1]):  # (Inbound._on_dealer)
            env = wire.decode(frames[-1])
            assert isinstance(env, Envelope)
            self._synced(env.request_id)

    def _flush_links(self) -> None:
        pass

    def _count_undeliverable(self) -> None:
        self.undeliverable += 1

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for dealer in self._dealers.values():
            dealer.sock.close(0)


def test_a_slow_workers_chunks_are_acknowledged_once_and_its_sender_told_full_then_room(
    tmp_path: Path,
) -> None:
    # Past stream_target_bytes waiting for one worker, chunks are acknowledged at once
    # (the sender's window stays open for the node's other actors) and the sender is told
    # "full"; past a window more, they are not (a sender that ignores "full" is bounded
    # by its window again). Every chunk is acknowledged exactly once, and "room" comes at
    # half.
    count = 20
    tuning = Tuning(stream_target_bytes=2 * MIB, stream_window_bytes=8 * MIB)
    zctx = zmq.Context()
    worker = zctx.socket(zmq.DEALER)  # a worker's feed (RpcEndpoint.open_feed)
    worker.setsockopt(zmq.RCVHWM, 1)
    endpoint = f"ipc://{tmp_path}/worker.sock"
    worker.connect(gateway_feed_endpoint(endpoint))

    async def scenario() -> tuple[SendingNode, int, list[int]]:
        hand_over = HandOver(zctx, tuning)
        sender = SendingNode()
        try:
            for n in range(count):
                chunk = n.to_bytes(4, "big") + bytes(MIB - 4)
                window = WindowShare(sender, len(chunk))  # type: ignore[arg-type]
                hand_over._deliver_reliable(endpoint, chunk, sender, "1@1:t+Slow", None, window)  # type: ignore[arg-type]
            await asyncio.sleep(0.2)
            assert sender.said == [("full", "1@1:t+Slow")]
            backlog = hand_over._overflow[endpoint]
            unacknowledged = sum(len(w.data) for w in backlog if w.window is not None)
            assert unacknowledged >= (count - 2) * MIB - tuning.stream_target_bytes - (
                tuning.stream_window_bytes
            ), "acknowledged early past the window"
            early = sender.acknowledged_bytes
            got: list[int] = []
            async with asyncio.timeout(10):
                while len(got) < count:
                    if worker.poll(0):
                        data = worker.recv()
                        if is_sync(data):  # (RpcEndpoint sends it back as it reads it)
                            worker.send(data)
                        else:
                            got.append(int.from_bytes(data[:4], "big"))
                    else:
                        await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            return sender, early, got
        finally:
            hand_over.close()

    try:
        sender, early, got = run(scenario(), 30)
    finally:
        worker.close(0)
        zctx.term()
    assert got == list(range(count))
    assert 0 < early < count * MIB
    assert sender.acknowledged_bytes == count * MIB  # each chunk once
    assert sender.said == [("full", "1@1:t+Slow"), ("room", "1@1:t+Slow")]


def test_feed_reads_keep_tells_receipts_until_a_sync_comes_back() -> None:
    # Each receipt stays until the worker sent back a sync handed over after its tell;
    # a sync from an earlier incarnation of the worker is ignored; bytes in flight are
    # bounded (FEED_BYTES_MAX) and counted read when the worker is replaced.
    released: list[int] = []
    held = HeldTells(lambda: released.append(1))

    async def scenario() -> None:
        feed = FeedReads()
        assert feed.handed(100, held.receipt(0, 0, b""))  # a tell waits: a sync is due
        feed.sync_sent("s1", 10)
        feed.handed(100, held.receipt(0, 1, b""))  # after the sync: not covered by it
        assert not feed.wants_sync()  # one outstanding at a time
        assert not feed.synced("s0")  # not the outstanding one
        assert feed.synced("s1")
        assert released == [1] and held.confirmed(0, 2) == 1
        assert feed.wants_sync()  # the second tell still waits
        feed.sync_sent("s2", 10)
        feed.worker_changed()  # it died: what it had not read went with it
        assert released == [1, 1] and held.confirmed(0, 2) == 2
        assert not feed.synced("s2")  # (its answer, if any, is from the dead one)
        feed.handed(FEED_BYTES_MAX, None)
        assert not feed.has_room() and feed.wants_sync()
        loop = asyncio.get_running_loop()
        assert not await feed.wait_room(loop.time() + 0.05)
        feed.sync_sent("s3", 10)
        waiting = asyncio.ensure_future(feed.wait_room(loop.time() + 5))
        await asyncio.sleep(0)
        assert feed.synced("s3") and await waiting

    run(scenario(), 10)
