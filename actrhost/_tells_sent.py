"""A process's tells to other nodes: stamped with their origin, kept a while, and sent
again, in doubt, to the gateway that takes over when the node's gateway dies.

The tells a gateway held when it died (taken from their senders, not yet confirmed by the
other node), and those still waiting in a sender's socket for it, die with it, and
nobody can say which ones those were. So each sender (a worker or a Shell) keeps the
newest of its tells to other nodes (:data:`TELLS_KEPT`) and, once the directory shows
another gateway process, sends them all again, in order, marked in doubt, before any new
one. *In order*: a receiver drops a tell in doubt at or below the highest number it read
from that sender, so the numbers must follow the order in which tells leave. Two tasks
of a process whose tells waited for room in a full socket could leave in the other order
(the later one sent the moment room came, before the earlier one's task ran again), so
one tell at a time is stamped and handed over (until 2026-12-07, such a tell behind a
later one, lost with a dying gateway, was dropped when sent again).

The receiving workers drop those they had read (module ``_tell_origin``,
:class:`~._tell_origin.TellsRead`), and the new gateway drops the ones stamped for the
dead one that it still finds in its socket: ZeroMQ hands those over on reconnect, ahead
of the ones sent again, and would put them past the receivers' marks
(``stale_tells_dropped``, ``gateway/_outbound.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ._errors import DeadlineExceeded
from ._kept_frames import Kept, KeptFrames, Resender
from ._tell_origin import origin_field

#: The tells to other nodes a process keeps: the newest, at most this many, bytes and
#: seconds old. A tell is in doubt only while some gateway holds it: at most the
#: reconnect window, 60 s (docs/gateway.md).
TELLS_KEPT = 16_384
TELLS_KEPT_BYTES = 16 * 1024 * 1024
TELLS_KEPT_S = 60.0

Send = Callable[[str, bytes, float], Awaitable[None]]


class KeptTells(KeptFrames[tuple[bytes, int]]):
    """The bookkeeping of :class:`TellsSent`: each tell (as encoded, and its lane)
    stamped with its origin (this process's key, the lane, a count, the gateway's pid)
    and the newest kept."""

    def __init__(
        self,
        clock: Callable[[], float],
        kept: int = TELLS_KEPT,
        kept_bytes: int = TELLS_KEPT_BYTES,
        kept_s: float = TELLS_KEPT_S,
    ) -> None:
        super().__init__(clock, kept, kept_bytes, kept_s)

    def stamp(self, frame: bytes, channel: int) -> tuple[bytes, int]:
        """``frame`` (a tell for the gateway, serialized) with its origin appended, and
        its number for :meth:`unsent`. It is kept."""
        number = self.keep((frame, channel), len(frame))
        return frame + origin_field(self.key, channel, number, 0, False, self.gateway), number

    def stamped_again(self, kept: Kept[tuple[bytes, int]], pid: int) -> bytes:
        """A kept tell as it goes again, in doubt, to the gateway ``pid``."""
        frame, channel = kept.item
        return frame + origin_field(self.key, channel, kept.number, 0, True, pid)


class TellsSent(Resender[tuple[bytes, int]]):
    """A process's tells to other nodes (module docstring), sent with ``send`` (the
    process's :meth:`~._rpc.RpcEndpoint.send`)."""

    kept: KeptTells

    def __init__(
        self, loop: asyncio.AbstractEventLoop, send: Send, count: Callable[[bool], None]
    ) -> None:
        super().__init__(loop, KeptTells(loop.time), self._send_kept, "tells", count)
        self._send = send
        #: One tell at a time is stamped and handed over, so the numbers follow the order
        #: in which tells leave (module docstring, "in order").
        self._in_order = asyncio.Lock()

    async def send(self, endpoint: str, frame: bytes, channel: int, deadline: float) -> None:
        """Send a tell to another node through the gateway at ``endpoint``: stamped and
        kept, behind those sent again and those of this process's other tasks."""
        await self.sent_again_first(deadline)
        if self._in_order.locked():  # another task's tell waits for room: after it
            try:
                async with asyncio.timeout_at(deadline):
                    await self._in_order.acquire()
            except TimeoutError:
                raise DeadlineExceeded(
                    "this process's earlier tells to other nodes were still waiting for "
                    "room at the gateway"
                ) from None
        else:
            await self._in_order.acquire()  # (free: taken at once)
        try:
            data, number = self.kept.stamp(frame, channel)
            self.watch_age()
            try:
                await self._send(endpoint, data, deadline)
            except BaseException:
                self.kept.unsent(number)
                raise
        finally:
            self._in_order.release()

    async def _send_kept(
        self, endpoint: str, kept: Kept[tuple[bytes, int]], pid: int, deadline: float
    ) -> None:
        await self._send(endpoint, self.kept.stamped_again(kept, pid), deadline)
