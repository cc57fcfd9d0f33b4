"""The gateway's stream hold (actrhost/gateway/_stream_hold.py) on its own: which frames
it keeps for a node, and when they go on."""

from __future__ import annotations

import asyncio

from actrhost._envelope import STREAM, StreamFrame
from actrhost.gateway._stream_hold import StreamHold

from .utils import run


def frame(n: int, shm: bool = False) -> StreamFrame:
    """A reliable stream chunk: in a ring (``shm``: its descriptor only) or inline."""
    if shm:
        return StreamFrame(STREAM, "s", sequence=n, shm=b"descriptor")
    return StreamFrame(STREAM, "s", sequence=n, payload=bytes(1000))


def test_frames_for_a_node_whose_full_link_failed_wait_for_its_next_connection() -> None:
    # A full connection that failed released the node's frames into each reconnect
    # attempt's queue, and from there into memory (QA: 5 MB/s for the 60 s window after
    # the other node was killed, while its senders were told every chunk went).
    async def scenario() -> None:
        sent: list[int] = []
        paused: list[bool] = []
        hold = StreamHold(lambda f, data: sent.append(f.sequence), paused.append, 4096)
        link, attempt = object(), object()
        hold.link_full("b", link, True, True)
        for n in range(3):
            assert hold.holds("b") and not hold.holds("c")
            hold.hold("b", frame(n, shm=True), b"")
        hold.link_full("b", link, False, False)  # it failed
        await asyncio.sleep(0.01)
        assert sent == [] and hold.holds("b") and hold.frames == 3
        hold.link_full("b", attempt, False, False)  # an attempt that never filled: no news
        hold.link_up("b")  # the next connection is up
        await asyncio.sleep(0.01)
        assert sent == [0, 1, 2] and not hold.holds("b") and hold.frames == 0
        assert paused == []

    run(scenario())


def test_inline_frames_pause_the_socket_past_the_bound_and_resume_at_half() -> None:
    async def scenario() -> None:
        sent: list[int] = []
        paused: list[bool] = []
        hold = StreamHold(lambda f, data: sent.append(f.sequence), paused.append, 4096)
        link = object()
        hold.link_full("b", link, True, True)
        for n in range(5):  # 5 x 1000 bytes > 4096
            hold.hold("b", frame(n), bytes(1000))
        assert paused == [True] and hold.inline_bytes == 5000
        hold.link_full("b", link, False, True)  # room again
        await asyncio.sleep(0.01)
        assert sent == [0, 1, 2, 3, 4] and paused == [True, False]

    run(scenario())


def test_a_node_given_up_lets_its_frames_go_on_to_be_located_or_counted() -> None:
    async def scenario() -> None:
        sent: list[int] = []
        hold = StreamHold(lambda f, data: sent.append(f.sequence), lambda full: None, 4096)
        link = object()
        hold.link_full("b", link, True, True)
        hold.hold("b", frame(0, shm=True), b"")
        hold.link_full("b", link, False, False)
        hold.forget("b")
        await asyncio.sleep(0.01)
        assert sent == [0] and not hold.holds("b")

    run(scenario())
