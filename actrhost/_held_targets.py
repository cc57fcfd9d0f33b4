"""Telling an actor that its calls and tells to an actor on another node must wait: the
link to that node is full.

Workers send every call and tell for other nodes to one socket of their node's gateway.
When the link to one node cannot take more (a slow path, a peer that stopped reading),
the gateway keeps what comes for that node (``gateway/_call_hold.py``) and sends the
sender a **wait** notice for the target, back on the connection the frames came on (a
worker's or a Shell's: ``RpcEndpoint`` reads it there); a **room** notice follows once
the link has room. Meanwhile the sender's calls and tells to that target wait before
they are sent (``RpcEndpoint.call`` and ``tell``: up to their deadline, then
``DeadlineExceeded``), as they would for a busy local actor; calls and tells to actors
on other nodes go on.

A wait lasts :data:`WAIT_KEPT_S` at most without a room notice: the next frame then goes,
and is held and answered with another wait notice if the link is still full. A lost room
notice (the gateway died) costs a sender that long, never a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import _envelope as wire
from ._envelope import RESPONSE, Envelope
from ._errors import DeadlineExceeded
from ._ids import ActrId

#: The routes of the two notices: a RESPONSE without a request id, with its target.
WAIT_ROUTE = "actrhost.gateway.Wait"
ROOM_ROUTE = "actrhost.gateway.Room"
#: How long a sender holds its sends to a target after a wait notice with no room notice.
WAIT_KEPT_S = 1.0
#: Targets a sender keeps waits for at most (the oldest go first).
WAITS_MAX = 1024


def flow_notice(target: ActrId, wait: bool) -> bytes:
    """The encoded notice that sends to ``target`` must wait (``wait``) or may go on."""
    env = Envelope(RESPONSE, WAIT_ROUTE if wait else ROOM_ROUTE, target=target)
    return wire.encode(env)


def is_flow_notice(env: Envelope) -> bool:
    """Whether a RESPONSE that came on the feed is a wait or room notice."""
    return not env.request_id and env.route_key in (WAIT_ROUTE, ROOM_ROUTE)


class HeldTargets:
    """The targets a process's sends wait for (wait notices), until room or a while."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._waits: dict[ActrId, tuple[float, asyncio.Event]] = {}

    def learn(self, env: Envelope) -> bool:
        """Take a wait or room notice; False if it is malformed (no target)."""
        target = env.target
        if target is None:
            return False
        if env.route_key == ROOM_ROUTE:
            entry = self._waits.pop(target, None)
            if entry is not None:
                entry[1].set()
            return True
        if target not in self._waits and len(self._waits) >= WAITS_MAX:
            del self._waits[next(iter(self._waits))]
        entry = self._waits.get(target)
        event = entry[1] if entry is not None else asyncio.Event()
        self._waits[target] = (self._clock() + WAIT_KEPT_S, event)
        return True

    def holds(self, target: ActrId | None) -> bool:
        """Whether sends to ``target`` wait now (cheap: the common case is no waits)."""
        return bool(self._waits) and target in self._waits

    async def wait(self, target: ActrId | None, deadline: float) -> None:
        """Wait until sends to ``target`` may go: a room notice, or the wait's end.
        ``DeadlineExceeded`` if ``deadline`` (loop time) comes first."""
        if target is None:
            return
        while (entry := self._waits.get(target)) is not None:
            until, event = entry
            now = self._clock()
            if now >= until:
                if self._waits.get(target) is entry:
                    del self._waits[target]
                return
            if now >= deadline:
                raise DeadlineExceeded(
                    f"the node of {target} took nothing more before the deadline (its "
                    "link is full, or it is still being located)"
                )
            try:
                async with asyncio.timeout(min(until, deadline) - now):
                    await event.wait()
            except TimeoutError:
                continue
            return
