"""Forgetting pending-call entries at (about) their expiry without a timer per call.

Every call through a gateway keeps a pending entry until its answer, and forgets it
after its deadline (+ 0.5 s) if none came. One ``loop.call_later`` per entry cost more
than the rest of the entry's bookkeeping (a libuv timer started, then stopped and closed
again almost always: in a gateway process, ≈ 5 µs of CPU per pass, measured). Entries
are grouped instead by when they expire, in slots of :data:`SLOT_S`; one timer per slot
forgets those of its entries still there. An entry thus goes at most one slot later
than it would have with its own timer.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

#: Width of a slot: an entry is forgotten up to this much later than asked.
SLOT_S = 0.1


class Expiring:
    """An entry's place in its slot: :meth:`cancel` (an answer came) takes it out."""

    __slots__ = ("key", "slot")

    def __init__(self, slot: dict[Any, None], key: Any) -> None:
        self.slot = slot
        self.key = key

    def cancel(self) -> None:
        """Don't forget the entry from the table (it was removed already)."""
        self.slot.pop(self.key, None)


class ExpiryWheel:
    """Removes keys from ``table`` once their time has come (see the module)."""

    __slots__ = ("_loop", "_slots", "_table")

    def __init__(self, loop: asyncio.AbstractEventLoop, table: dict[Any, Any]) -> None:
        self._loop = loop
        self._table = table
        self._slots: dict[int, dict[Any, None]] = {}

    def add(self, key: Any, after_s: float) -> Expiring:
        """Remove ``key`` from the table in ``after_s`` (at most :data:`SLOT_S` later)."""
        index = math.ceil((self._loop.time() + after_s) / SLOT_S)
        slot = self._slots.get(index)
        if slot is None:
            slot = self._slots[index] = {}
            self._loop.call_at(index * SLOT_S, self._expire, index)
        slot[key] = None
        return Expiring(slot, key)

    def _expire(self, index: int) -> None:
        table = self._table
        for key in self._slots.pop(index, ()):
            table.pop(key, None)
