"""Signal-lane priority, backpressure, one-at-a-time handlers and the deadlock they allow,
through real workers (docs/node.md, "Ordering, concurrency and deadlocks")."""

from __future__ import annotations

import asyncio
import time

import pytest

import actrhost
from actrhost.workers._mailbox import Mailbox

from .utils import RECORDER, run


def test_signal_lane_is_served_before_a_reliable_backlog(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "rec"
        type = "test+Recorder"
        handler = "actors:Recorder"
        max_concurrency = 1
        """
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            # One handler slot: Block holds it while the backlog queues up behind it.
            blocked = asyncio.ensure_future(shell.call("rec", "test.Recorder.Block", b"0.6"))
            await asyncio.sleep(0.1)
            backlog = [
                asyncio.ensure_future(shell.call("rec", "test.Recorder.Note", str(n).encode()))
                for n in range(20)
            ]
            await asyncio.sleep(0.1)
            # Urgent's route is declared on the signal lane; Note sent on it jumps too.
            urgent = asyncio.ensure_future(shell.call("rec", "test.Recorder.Urgent", b"u"))
            jumper = asyncio.ensure_future(
                shell.call(
                    "rec", "test.Recorder.Note", b"j", payload_type=actrhost.PayloadType.RPC_SIGNAL
                )
            )
            await asyncio.gather(blocked, urgent, jumper, *backlog)
            seen = (await shell.call("rec", "test.Recorder.Seen", b"")).decode().split(",")
            assert seen == ["block", "urgent:u", "j"] + [str(n) for n in range(20)]

    run(go())


def test_signal_lane_overtakes_a_backlog_of_handlers_that_never_await(node_factory):
    # Runners yielded every 32 handlers each: 64 of them started 2,048 handlers between
    # two reads of the socket, and the signal-lane tell waited unread behind them all
    # (QA: 3.9 s behind 3,000 calls of 1 ms). Now the worker reads after 10 ms of them.
    node = node_factory(RECORDER)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            for _ in range(600):
                await shell.tell("rec", "test.Recorder.Busy", b"3")
            await shell.tell("rec", "test.Recorder.Urgent", b"u")
            seen = (await shell.call("rec", "test.Recorder.Seen", b"", timeout=30)).decode()
            order = seen.split(",")
            assert len(order) == 601
            # Served once read: the 600 are read within a few polls, 10 ms of handlers apart.
            assert order.index("urgent:u") < 128, order.index("urgent:u")

    run(go())


def test_a_stop_reaches_a_worker_behind_a_backlog_of_handlers_that_never_await(node_factory):
    # Only the actor's sockets were polled: the supervisor's stop waited behind the whole
    # backlog, and the calls queued behind it, which a stop refuses at once, ran (QA).
    node = node_factory(RECORDER)

    async def go() -> float:
        async with actrhost.connect(node.config_path) as shell:
            for _ in range(1000):  # 3 s of handlers that never await
                await shell.tell("rec", "test.Recorder.Busy", b"3")
            calls = [
                asyncio.ensure_future(shell.call("rec", "test.Recorder.Note", b"q", timeout=20))
                for _ in range(5)
            ]
            await asyncio.sleep(0.3)
            restart = asyncio.ensure_future(shell.restart_actors("rec"))
            asked = time.monotonic()
            for call in calls:
                with pytest.raises(actrhost.Unavailable, match="stopping"):
                    await call
            refused_after = time.monotonic() - asked
            await restart
            return refused_after

    assert run(go(), 60) < 1.5


def test_one_senders_burst_starts_in_order_with_many_handler_slots(node_factory):
    # The default max_concurrency (64): handlers that finish at once must still start in
    # the order sent, and a call after tells must find every tell handled.
    node = node_factory(RECORDER)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            for n in range(300):
                await shell.tell("rec", "test.Recorder.Note", str(n).encode())
            calls = [shell.call("rec", "test.Recorder.Note", b"c%d" % n) for n in range(100)]
            await asyncio.gather(*calls)
            seen = (await shell.call("rec", "test.Recorder.Seen", b"")).decode().split(",")
            assert seen == [str(n) for n in range(300)] + [f"c{n}" for n in range(100)]

    run(go())


def test_mailbox_starts_items_in_queue_order():
    async def go():
        started: list[int] = []

        async def job(item: int) -> None:
            started.append(item)
            if item % 3 == 0:
                await asyncio.sleep(0)  # some suspend, most finish at once

        mailbox = Mailbox(
            job, capacity=1000, max_concurrency=64, on_full=lambda: None, on_space=lambda: None
        )
        for n in range(500):
            mailbox.put(n, signal=False)
        assert await mailbox.wait_idle(5)
        assert started == list(range(500))
        assert mailbox.running == 0

    asyncio.run(go())


def test_a_stop_cancelling_runners_not_yet_started_leaves_the_mailbox_idle():
    async def go():
        async def job(item: int) -> None:
            await asyncio.sleep(10)

        mailbox = Mailbox(
            job, capacity=100, max_concurrency=4, on_full=lambda: None, on_space=lambda: None
        )
        for n in range(8):
            mailbox.put(n, signal=False)
        mailbox.cancel_running()  # before any runner ran
        assert mailbox.running == 0
        assert mailbox.drop_queued() == list(range(8))
        assert await mailbox.wait_idle(1)

    asyncio.run(go())


def test_full_mailbox_pushes_back_without_losing_messages(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "rec"
        type = "test+Recorder"
        handler = "actors:Recorder"
        max_concurrency = 1
        mailbox_capacity = 10
        """
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            for n in range(2000):
                await shell.tell("rec", "test.Recorder.Note", str(n).encode())
            seen = (
                (await shell.call("rec", "test.Recorder.Seen", b"", timeout=20)).decode().split(",")
            )
            assert seen == [str(n) for n in range(2000)]
            stats = (await shell.status())["actors"][0]["stats"]
            assert stats["mailbox_peak"] == 10  # bounded: reading pauses when full

    run(go())


def test_a_call_that_waits_for_room_past_its_deadline_gets_504(node_factory):
    # The actor is up, only busy: its queue full, a call or tell that cannot get in
    # before its deadline fails as a late answer would, 504, not 503 "peer down" (QA).
    node = node_factory(
        """
        [[actor]]
        name = "rec"
        type = "test+Recorder"
        handler = "actors:Recorder"
        max_concurrency = 1
        mailbox_capacity = 2
        """,
        "hwm_messages = 2\n",
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            blocked = asyncio.ensure_future(
                shell.call("rec", "test.Recorder.Block", b"6", timeout=20)
            )
            await asyncio.sleep(0.3)
            with pytest.raises(actrhost.DeadlineExceeded, match="queue is full"):
                for n in range(100_000):  # until the queues between us are full
                    await shell.tell("rec", "test.Recorder.Note", b"%d" % n, timeout=0.5)
            started = time.monotonic()
            with pytest.raises(actrhost.DeadlineExceeded, match="queue is full"):
                await shell.call("rec", "test.Recorder.Seen", b"", timeout=1)
            assert time.monotonic() - started < 2
            assert await blocked == b"ok"

    run(go(), 60)


def relays(node_factory, slots_of_a: int):
    """Relay A (``slots_of_a`` handler slots) and relay B, for A -> B -> A."""
    return node_factory(
        f"""
        [[actor]]
        name = "a"
        type = "test+RelayA"
        handler = "actors:Relay"
        max_concurrency = {slots_of_a}

        [[actor]]
        name = "b"
        type = "test+RelayB"
        handler = "actors:Relay"
        """
    )


def test_a_call_cycle_into_a_busy_actor_fails_at_the_first_deadline(node_factory):
    node = relays(node_factory, 1)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            # A's only slot waits for B, and B's call back into A waits for that slot.
            started = time.monotonic()
            with pytest.raises(actrhost.DeadlineExceeded):
                await shell.call("a", "test.Relay.PingPong", b"test+RelayB", timeout=1)
            assert time.monotonic() - started < 1.8  # no nested call waits past 1 s
            # A is free again afterwards: the stuck nested calls ended at the same deadline.
            assert await shell.call("a", "test.Relay.Leaf", b"x", timeout=5) == b"leaf:x"

    run(go())


def test_a_call_cycle_works_with_a_free_slot(node_factory):
    node = relays(node_factory, 2)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            answer = await shell.call("a", "test.Relay.PingPong", b"test+RelayB", timeout=5)
            assert answer == b"leaf:x"

    run(go())


def test_stream_callbacks_run_beside_a_one_at_a_time_handler(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "sink"
        type = "test+Sink"
        handler = "actors:StreamSink"
        max_concurrency = 1
        """
    )

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            hold = asyncio.ensure_future(shell.call("sink", "test.Sink.Hold", b"0.8", timeout=5))
            await asyncio.sleep(0.2)  # the handler holds the only slot
            for n in range(3):
                await shell.send_data_stream("sink", actrhost.DataStream("s0", n, b"chunk"))
            # The chunks were handled while the slot was taken.
            assert await hold == b"3"

    run(go())
