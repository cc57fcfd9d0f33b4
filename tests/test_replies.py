"""Answers for a caller whose queue is full wait for room (actrhost._replies)."""

from __future__ import annotations

import asyncio

import zmq

from actrhost._replies import Replies
from actrhost._zmqloop import LoopSocket

from .utils import run


def test_answers_wait_for_room_and_arrive_in_order(tmp_path) -> None:
    async def scenario() -> None:
        ctx = zmq.Context()
        endpoint = f"ipc://{tmp_path}/callee.sock"
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.SNDHWM, 2)
        router.bind(endpoint)
        caller = ctx.socket(zmq.DEALER)
        caller.setsockopt(zmq.RCVHWM, 2)
        caller.setsockopt(zmq.ROUTING_ID, b"caller")
        caller.connect(endpoint)
        caller.send(b"hello")  # the router learns the caller's routing id
        loop_router = LoopSocket(router, lambda parts: None, "callee in")
        dropped: list[int] = []
        replies = Replies(loop_router, dropped.append)
        try:
            await asyncio.sleep(0.05)
            for n in range(200):  # far more than the caller's pipe holds
                replies.send(b"caller", b"%d" % n)
            assert replies.waiting > 0  # ZeroMQ took some, the rest waits here
            got = []
            async with asyncio.timeout(10):
                while len(got) < 200:
                    if caller.poll(0):
                        got.append(caller.recv())
                    else:
                        await asyncio.sleep(0.001)
            assert got == [b"%d" % n for n in range(200)]
            assert replies.waiting == 0 and dropped == []
            # A caller that is gone: dropped at once, and counted.
            replies.send(b"nobody", b"x")
            assert dropped == [1]
            # Closing gives up what still waits, counted.
            for n in range(50):
                replies.send(b"caller", b"late %d" % n)
            waiting = replies.waiting
            assert waiting > 0
            replies.close()
            assert dropped == [1, waiting]
        finally:
            loop_router.close()
            caller.close(linger=0)
            ctx.term()

    run(scenario(), timeout_s=30)
