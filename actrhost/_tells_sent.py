"""A process's tells to other nodes: stamped with their origin, kept a while, and sent
again, in doubt, to the gateway that takes over when the node's gateway dies.

The tells a gateway held when it died (taken from their senders, not yet confirmed by the
other node), and those still waiting in a sender's socket for it, die with it, and
nobody can say which ones those were. So each sender (a worker or a Shell) keeps the
newest of its tells to other nodes (:data:`TELLS_KEPT`) and, once the directory shows
another gateway process, sends them all again, in order, marked in doubt, before any new
one. The receiving workers drop those they had read (module ``_tell_origin``,
:class:`~._tell_origin.TellsRead`), and the new gateway drops the ones stamped for the
dead one that it still finds in its socket: ZeroMQ hands those over on reconnect, ahead
of the ones sent again, and would put them past the receivers' marks
(``stale_tells_dropped``, ``gateway/_outbound.py``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from ._errors import ActrError, DeadlineExceeded
from ._tell_origin import origin_field

log = logging.getLogger(__name__)

#: The tells to other nodes a process keeps: the newest, at most this many, bytes and
#: seconds old. A tell is in doubt only while some gateway holds it: at most the
#: reconnect window, 60 s (docs/gateway.md).
TELLS_KEPT = 16_384
TELLS_KEPT_BYTES = 16 * 1024 * 1024
TELLS_KEPT_S = 60.0

#: How long the tells sent again may take to go to the next gateway (they wait for room
#: in its socket like any send).
SEND_AGAIN_S = 10.0

Send = Callable[[str, bytes, float], Awaitable[None]]


class _Kept(NamedTuple):
    frame: bytes  # as encoded, without its origin
    channel: int  # the lane
    number: int  # its count: the origin's index
    sent_at: float


class KeptTells:
    """The bookkeeping of :class:`TellsSent`: each tell stamped with its origin (this
    process's key, the lane, a count, the gateway's pid) and the newest kept."""

    def __init__(
        self,
        clock: Callable[[], float],
        kept: int = TELLS_KEPT,
        kept_bytes: int = TELLS_KEPT_BYTES,
        kept_s: float = TELLS_KEPT_S,
    ) -> None:
        #: This process's key: random, so that a restarted process is a new sender.
        self.key = secrets.randbits(64)
        self._clock = clock
        self._limits = (kept, kept_bytes, kept_s)
        self._next_index = 0
        self._gateway = 0  # the pid stamped on tells; 0: none runs
        self._owed = False  # a gateway that had our tells died: send them again
        self._kept: deque[_Kept] = deque()
        self._bytes = 0

    def stamp(self, frame: bytes, channel: int) -> tuple[bytes, int]:
        """``frame`` (a tell for the gateway, serialized) with its origin appended, and
        its index for :meth:`unsent`. It is kept."""
        index = self._next_index
        self._next_index += 1
        now = self._clock()
        self._kept.append(_Kept(frame, channel, index, now))
        self._bytes += len(frame)
        self._forget_old(now)
        return frame + origin_field(self.key, channel, index, 0, False, self._gateway), index

    def unsent(self, index: int) -> None:
        """The tell stamped with ``index`` did not go (its send failed): forget it."""
        for position in range(len(self._kept) - 1, -1, -1):  # it is one of the last
            kept = self._kept[position]
            if kept.number == index:
                del self._kept[position]
                self._bytes -= len(kept.frame)
                return

    def gateway_is(self, pid: int | None) -> list[bytes]:
        """The node's gateway is the process ``pid`` now (None: none runs). Returns the
        tells to send to it first, in order, marked in doubt: every one kept, when the
        gateway they went to is gone; else none."""
        pid = pid or 0
        if pid == self._gateway:
            return []
        if self._gateway:
            self._owed = True
        self._gateway = pid
        if not pid or not self._owed:
            return []
        self._owed = False
        self._forget_old(self._clock())
        key = self.key
        return [k.frame + origin_field(key, k.channel, k.number, 0, True, pid) for k in self._kept]

    def _forget_old(self, now: float) -> None:
        kept, (most, most_bytes, most_s) = self._kept, self._limits
        while kept and (
            len(kept) > most or self._bytes > most_bytes or now - kept[0].sent_at > most_s
        ):
            self._bytes -= len(kept.popleft().frame)


class TellsSent:
    """A process's tells to other nodes (module docstring), sent with ``send`` (the
    process's :meth:`~._rpc.RpcEndpoint.send`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        self.kept = KeptTells(loop.time)
        self._loop = loop
        self._send = send
        #: The gateway's endpoint while one runs: tells sent there are to other nodes.
        self.gateway: str | None = None
        self._sending_again: asyncio.Task[None] | None = None

    async def send(self, endpoint: str, frame: bytes, channel: int, deadline: float) -> None:
        """Send a tell to another node through the gateway at ``endpoint``: stamped and
        kept, behind those sent again."""
        while (again := self._sending_again) is not None and not again.done():
            remaining = deadline - self._loop.time()  # what a dead gateway held goes first
            if remaining <= 0:
                raise DeadlineExceeded(
                    "the tells sent again after the node's gateway died were still going"
                )
            await asyncio.wait([again], timeout=remaining)
        data, index = self.kept.stamp(frame, channel)
        try:
            await self._send(endpoint, data, deadline)
        except BaseException:
            self.kept.unsent(index)
            raise

    def gateway_is(self, endpoint: str | None, pid: int | None) -> None:
        """The node's gateway at ``endpoint`` is the process ``pid`` now (None: none
        runs); after one died, what it may have held goes to this one first. Called with
        each directory."""
        self.gateway = endpoint if pid is not None else None
        again = self.kept.gateway_is(pid)
        if again and endpoint is not None:
            previous = self._sending_again
            self._sending_again = self._loop.create_task(
                self._send_again(endpoint, again, previous)
            )

    def close(self) -> None:
        """Stop sending again (the process stops)."""
        if self._sending_again is not None:
            self._sending_again.cancel()

    async def _send_again(
        self, endpoint: str, frames: list[bytes], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:  # (the gateway before died as soon as it came)
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        deadline = self._loop.time() + SEND_AGAIN_S
        for sent, frame in enumerate(frames):
            try:
                await self._send(endpoint, frame, deadline)
            except ActrError as exc:
                log.warning(
                    "%d of %d tells to other nodes not sent again after the gateway died: %s",
                    len(frames) - sent,
                    len(frames),
                    exc.message,
                )
                break
        else:
            log.info("%d tells to other nodes sent again, in doubt", len(frames))
        if self._sending_again is asyncio.current_task():
            self._sending_again = None
