"""The senders told to wait for a target, until what they wait for has room.

Two things make a gateway keep a node's calls and tells instead of sending them on: a
link whose RPC lanes are full (``_call_hold``), and a target whose node is still being
located (``_outbound``: the relay asks signaling, the target's gateway answers). Either
way each sender is told to wait for that target (a *wait* notice on the connection its
frames came on, module ``actrhost._held_targets``), so that what is kept is only what was
on its way, and told there is room once the cause ends. Reading the workers' socket stays
free for every other node.

A sender's wait ends on its own after ``WAIT_KEPT_S`` (a lost room notice must not make it
wait forever), so the senders told are told again every :data:`RENEW_S` while the cause
lasts: one that went on between two notices sent a burst each time (QA: ≈ 100 frames a
second, until the hold passed its bound).

A sender told to wait may still have what its credit allows on its way
(``actrhost._gateway_credit``), which the hold then takes: :meth:`SenderWaits.room_bytes`
is the room a hold keeps for that beyond its own bound, so that a flood from many senders
at once does not make it stop the socket for every node (QA: eight senders, session 44).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable

from .._gateway_credit import CREDIT_BYTES
from .._held_targets import WAIT_KEPT_S
from .._ids import ActrId

#: How often the senders still waiting are told again.
RENEW_S = WAIT_KEPT_S * 0.4
#: Senders told to wait whose credit a hold makes room for, at most: its memory stays
#: bounded (32 MiB more) whatever the number of connections.
ROOM_FOR_SENDERS_MAX = 32


class SenderWaits:
    """Per cause (a node, a target being located), the (sender, target) pairs told to wait.

    ``tell(sender, target, wait)`` sends the notice: ``sender`` is the routing id of the
    connection the frames came on, ``wait`` False says there is room.
    """

    def __init__(self, tell: Callable[[bytes, ActrId, bool], None]) -> None:
        self._tell = tell
        self._loop = asyncio.get_running_loop()
        self._told: dict[Hashable, set[tuple[bytes, ActrId]]] = {}
        #: Per sender told (a routing id), its (cause, target) pairs told.
        self._pairs_of: dict[bytes, int] = {}
        self._renewing: asyncio.TimerHandle | None = None

    def room_bytes(self) -> int:
        """What the senders told to wait may still have on their way (their credit), for
        at most :data:`ROOM_FOR_SENDERS_MAX` of them."""
        return CREDIT_BYTES * min(len(self._pairs_of), ROOM_FOR_SENDERS_MAX)

    def wait(self, cause: Hashable, sender: bytes, target: ActrId | None) -> None:
        """Tell ``sender`` to wait for ``target`` (once, then every RENEW_S) until
        :meth:`end` of ``cause``. Nothing for a frame without sender or target."""
        if not sender or target is None:
            return
        told = self._told.setdefault(cause, set())
        if (sender, target) in told:
            return
        told.add((sender, target))
        self._pairs_of[sender] = self._pairs_of.get(sender, 0) + 1
        self._tell(sender, target, True)
        if self._renewing is None:
            self._renewing = self._loop.call_later(RENEW_S, self._renew)

    def end(self, cause: Hashable) -> None:
        """``cause`` is over: the senders told for it may go on."""
        for sender, target in self._told.pop(cause, ()):
            pairs = self._pairs_of.pop(sender) - 1
            if pairs:
                self._pairs_of[sender] = pairs
            self._tell(sender, target, False)

    def _renew(self) -> None:
        self._renewing = None
        for told in self._told.values():
            for sender, target in told:
                self._tell(sender, target, True)
        if self._told:
            self._renewing = self._loop.call_later(RENEW_S, self._renew)
