"""Signal-lane priority and backpressure, through a real worker."""

from __future__ import annotations

import asyncio

import actrhost

from .utils import run


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
