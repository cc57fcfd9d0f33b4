"""The frames a process sent to other nodes through its gateway, kept a while so that they
can go again, in doubt, to the gateway that takes over when that one dies.

Used for tells (module ``_tells_sent``) and reliable stream chunks (module
``_chunks_sent``): what a gateway held when it died, and what still waited in the
sender's socket or ring for it, died with it, and nobody can say which frames those were.
So the sender numbers each such frame (its *origin*: this process's random key, the
lane, the number, the gateway's pid; module ``_tell_origin``), keeps the newest, and
once the directory shows another gateway process, owes them all to it. Receivers drop
those they had read.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

from ._errors import ActrError, DeadlineExceeded

log = logging.getLogger(__name__)

T = TypeVar("T")


class Kept(NamedTuple, Generic[T]):
    """One frame kept: what its sender needs to send it again, and its number."""

    item: T
    size: int  # what it counts against the kept bytes
    number: int  # the origin's index
    sent_at: float


class KeptFrames(Generic[T]):
    """The newest frames a process sent through its gateway: at most ``kept`` of them,
    ``kept_bytes`` and ``kept_s`` old (a frame is in doubt only while some gateway holds
    it: at most the reconnect window, 60 s, docs/gateway.md)."""

    def __init__(
        self, clock: Callable[[], float], kept: int, kept_bytes: int, kept_s: float
    ) -> None:
        #: This process's key: random, so that a restarted process is a new sender.
        self.key = secrets.randbits(64)
        #: The gateway the frames go to now (the pid stamped on them); 0: none runs.
        self.gateway = 0
        self._clock = clock
        self._limits = (kept, kept_bytes, kept_s)
        self._next_number = 0
        self._owed = False  # a gateway that had our frames died: send them again
        self._kept: deque[Kept[T]] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, item: T, size: int) -> int:
        """Keep a frame sent now; returns its number (its origin's index)."""
        number = self._next_number
        self._next_number += 1
        now = self._clock()
        self._kept.append(Kept(item, size, number, now))
        self._bytes += size
        self.forget_old(now)
        return number

    def unsent(self, number: int) -> None:
        """The frame numbered ``number`` did not go (its send failed): forget it."""
        for position in range(len(self._kept) - 1, -1, -1):  # it is one of the last
            kept = self._kept[position]
            if kept.number == number:
                del self._kept[position]
                self._bytes -= kept.size
                return

    def gateway_is(self, pid: int | None) -> list[Kept[T]]:
        """The node's gateway is the process ``pid`` now (None: none runs). Returns the
        frames to send to it first, in order, in doubt: every one kept, when the gateway
        they went to is gone; else none."""
        pid = pid or 0
        if pid == self.gateway:
            return []
        if self.gateway:
            self._owed = True
        self.gateway = pid
        if not pid or not self._owed:
            return []
        self._owed = False
        self.forget_old(self._clock())
        return list(self._kept)

    def forget_old(self, now: float) -> float | None:
        """Let go of what is beyond the limits at ``now``; returns when the oldest left
        is due to go (None: nothing kept)."""
        kept, (most, most_bytes, most_s) = self._kept, self._limits
        while kept and (
            len(kept) > most or self._bytes > most_bytes or now - kept[0].sent_at > most_s
        ):
            self._bytes -= kept.popleft().size
        return kept[0].sent_at + most_s if kept else None


#: (endpoint, kept frame, gateway pid, deadline): send it again, in doubt.
SendKept = Callable[[str, Kept[T], int, float], Awaitable[None]]


class Resender(Generic[T]):
    """Drives a :class:`KeptFrames` in a process: keeps what is sent, lets go of it when
    it is too old (also while nothing new is sent), and after the node's gateway died
    sends everything kept to the next one, before anything new."""

    #: How long the frames sent again may take to go to the next gateway (they wait for
    #: room like any send).
    send_again_s = 10.0

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        kept: KeptFrames[T],
        send_kept: SendKept[T],
        what: str,
        count: Callable[[bool], None],
    ) -> None:
        self.kept = kept
        self._loop = loop
        #: Sends one kept frame again, in doubt, to the gateway ``pid`` at ``endpoint``.
        self._send_one = send_kept
        #: Counts each frame sent again (True) or that could not go again (False).
        self._count = count
        self.what = what  # for the log: "tells", ...
        #: The gateway's endpoint while one runs.
        self.gateway: str | None = None
        self._sending_again: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    def keep(self, item: T, size: int) -> int:
        """Keep a frame sent now (:meth:`KeptFrames.keep`)."""
        number = self.kept.keep(item, size)
        self.watch_age()
        return number

    def watch_age(self) -> None:
        """Something was kept: let it go once it is too old, also if nothing new is sent
        (a stream's chunks are many bytes)."""
        if self._expiry is None:
            self._forget_old()

    async def sent_again_first(self, deadline: float) -> None:
        """Wait until what went again after a gateway died has gone (what it held goes
        before anything new); ``DeadlineExceeded`` at ``deadline``."""
        while (again := self._sending_again) is not None and not again.done():
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"the {self.what} sent again after the node's gateway died were still going"
                )
            await asyncio.wait([again], timeout=remaining)

    def gateway_is(self, endpoint: str | None, pid: int | None) -> None:
        """The node's gateway at ``endpoint`` is the process ``pid`` now (None: none
        runs); after one died, what it may have held goes to this one first. Called with
        each directory."""
        self.gateway = endpoint if pid is not None else None
        again = self.kept.gateway_is(pid)
        if again and endpoint is not None and pid is not None:
            previous = self._sending_again
            self._sending_again = self._loop.create_task(
                self._send_again(endpoint, pid, again, previous)
            )

    def close(self) -> None:
        """Stop sending again (the process stops)."""
        if self._sending_again is not None:
            self._sending_again.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _forget_old(self) -> None:
        self._expiry = None
        due = self.kept.forget_old(self._loop.time())
        if due is not None:
            self._expiry = self._loop.call_at(due, self._forget_old)

    async def _send_again(
        self, endpoint: str, pid: int, again: list[Kept[T]], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:  # (the gateway before died as soon as it came)
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        deadline = self._loop.time() + self.send_again_s
        failed: list[ActrError] = []
        for kept in again:
            try:
                await self._send_one(endpoint, kept, pid, deadline)
            except ActrError as exc:  # (its target gone, say: the others may still go)
                failed.append(exc)
                self._count(False)
            else:
                self._count(True)
        if failed:
            log.warning(
                "%d of %d %s to other nodes not sent again after the gateway died: %s",
                len(failed),
                len(again),
                self.what,
                failed[0].message,
            )
        else:
            log.info("%d %s to other nodes sent again, in doubt", len(again), self.what)
        if self._sending_again is asyncio.current_task():
            self._sending_again = None
