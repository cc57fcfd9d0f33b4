"""The gateway's stream hold (actrhost/gateway/_stream_hold.py) on its own: which frames
it keeps for a node, and when they go on."""

from __future__ import annotations

import asyncio

from actrhost import ActrId
from actrhost._envelope import STREAM, StreamFrame
from actrhost.gateway._stream_hold import RELEASED_PER_TURN, StreamHold

from .utils import run

SLOW, FAST = ActrId.parse("1@1:t+Slow"), ActrId.parse("2@1:t+Fast")


def frame(n: int, shm: bool = False, target: ActrId | None = None) -> StreamFrame:
    """A reliable stream chunk: in a ring (``shm``: its descriptor only) or inline."""
    if shm:
        return StreamFrame(STREAM, "s", sequence=n, shm=b"descriptor", target=target)
    return StreamFrame(STREAM, "s", sequence=n, payload=bytes(1000), target=target)


def send(hold: StreamHold, node_id: str, sf: StreamFrame, sent: list[int]) -> None:
    """What the gateway does with a frame: keep it if the hold says so, else send it."""
    if hold.holds(node_id, sf.target):
        hold.hold(node_id, sf, sf.payload)  # (inline: its bytes as they came, near enough)
    else:
        sent.append(sf.sequence)


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


def test_a_slow_target_waits_alone_and_its_frames_go_on_in_order_when_it_has_room() -> None:
    # Before "full" and "room", a slow actor filled the link's window, and every stream
    # to its node waited with it.
    async def scenario() -> None:
        sent: list[int] = []
        hold = StreamHold(lambda f, data: sent.append(f.sequence), lambda full: None, 4096)
        link = object()
        hold.target_full("b", SLOW, link)
        send(hold, "b", frame(0, True, SLOW), sent)
        send(hold, "b", frame(1, True, FAST), sent)
        send(hold, "b", frame(2, True, SLOW), sent)
        assert sent == [1] and hold.frames == 2
        hold.target_room(SLOW, object())  # not the connection that said "full": no news
        await asyncio.sleep(0.01)
        assert sent == [1]
        hold.target_room(SLOW, link)
        await asyncio.sleep(0.01)
        assert sent == [1, 0, 2] and hold.frames == 0 and not hold.holds("b", SLOW)

    run(scenario())


def test_a_slow_targets_frames_stay_behind_its_older_ones_held_for_a_full_link() -> None:
    async def scenario() -> None:
        sent: list[int] = []
        hold = StreamHold(lambda f, data: sent.append(f.sequence), lambda full: None, 4096)
        link = object()
        hold.link_full("b", link, True, True)
        send(hold, "b", frame(0, True, SLOW), sent)  # kept for the node
        hold.target_full("b", SLOW, link)
        send(hold, "b", frame(1, True, SLOW), sent)  # kept for the target
        send(hold, "b", frame(2, True, FAST), sent)  # kept for the node
        hold.target_room(SLOW, link)  # the link is still full: 1 goes behind 0 and 2
        await asyncio.sleep(0.01)
        send(hold, "b", frame(3, True, SLOW), sent)
        assert sent == [] and hold.frames == 4
        hold.link_full("b", link, False, True)
        await asyncio.sleep(0.01)
        assert sent == [0, 2, 1, 3] and hold.frames == 0

    run(scenario())


def test_what_a_connection_said_of_its_targets_ends_with_it() -> None:
    # The next connection's side says "full" again if the target is still slow; a stale
    # "full" would keep its frames forever.
    async def scenario() -> None:
        sent: list[int] = []
        hold = StreamHold(lambda f, data: sent.append(f.sequence), lambda full: None, 4096)
        link = object()
        hold.target_full("b", SLOW, link)
        send(hold, "b", frame(0, False, SLOW), sent)
        assert hold.inline_bytes == 1000 and sent == []
        hold.link_ended(link)
        await asyncio.sleep(0.01)
        assert sent == [0] and hold.inline_bytes == 0 and hold.frames == 0

    run(scenario())


def test_many_kept_frames_go_on_a_slice_per_loop_turn_in_order() -> None:
    # Tens of thousands of small chunks released at once blocked the gateway's loop for
    # seconds, past its links' keepalive (QA).
    async def scenario() -> None:
        sent: list[int] = []
        hold = StreamHold(lambda f, data: sent.append(f.sequence), lambda full: None, 4096)
        link = object()
        count = RELEASED_PER_TURN * 2 + 500
        hold.link_full("b", link, True, True)
        for n in range(count):
            hold.hold("b", frame(n, shm=True), b"")
        hold.link_full("b", link, False, True)  # room again
        hold.link_full("b", link, False, True)  # (said twice: still one release)
        await asyncio.sleep(0)
        assert len(sent) == RELEASED_PER_TURN and hold.holds("b")
        hold.hold("b", frame(count, shm=True), b"")  # a newer one waits behind the rest
        for _ in range(5):
            await asyncio.sleep(0)
        assert sent == list(range(count + 1)) and not hold.holds("b") and hold.frames == 0

    run(scenario())
