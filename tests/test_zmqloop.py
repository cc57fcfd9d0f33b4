"""LoopSocket: ZeroMQ sockets on the asyncio loop (actrhost._zmqloop)."""

from __future__ import annotations

import asyncio
import time

import zmq

from actrhost._zmqloop import LoopSocket

from .utils import run


def test_input_that_came_while_a_sender_polled_for_room_is_read(tmp_path) -> None:
    # ZeroMQ's FD signals edges; reading EVENTS (writable()) can take the edge of input
    # that arrived meanwhile. A caller polling for room to send then never read its
    # answers (QA: thousands of remote calls out at once, 504 at their deadline).
    async def scenario() -> None:
        ctx = zmq.Context()
        endpoint = f"ipc://{tmp_path}/peer.sock"
        peer = ctx.socket(zmq.ROUTER)
        peer.bind(endpoint)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, b"me")
        sock.connect(endpoint)
        got: list[list[bytes]] = []
        loop_sock = LoopSocket(sock, got.append, "me")
        try:
            loop_sock.send_nowait(b"hello")
            async with asyncio.timeout(5):
                while not peer.poll(0):
                    await asyncio.sleep(0.01)
            peer.recv_multipart()
            await asyncio.sleep(0.05)  # the loop is idle: no drain pending
            peer.send_multipart([b"me", b"answer"])
            time.sleep(0.1)  # ZeroMQ's I/O thread delivers it and signals the FD
            assert loop_sock.writable()  # reads EVENTS: the edge is taken here
            async with asyncio.timeout(2):
                while not got:
                    await asyncio.sleep(0.01)
            assert got == [[b"answer"]]
        finally:
            loop_sock.close()
            peer.close(linger=0)
            ctx.term()

    run(scenario(), timeout_s=10)
