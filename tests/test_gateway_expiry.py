"""Pending-call entries forgotten by slot (actrhost.gateway._expiry)."""

from __future__ import annotations

import asyncio

from actrhost.gateway._expiry import SLOT_S, ExpiryWheel

from .utils import run


def test_entries_go_in_their_slot_unless_cancelled() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        table = {"a": 1, "b": 2, "c": 3}
        wheel = ExpiryWheel(loop, table)
        started = loop.time()
        wheel.add("a", 0.05)
        wheel.add("b", 0.05).cancel()  # answered: its entry stays the owner's business
        wheel.add("c", 0.3)
        while "a" in table:
            await asyncio.sleep(0.005)
        # Not before its time, and at most one slot after it (plus the loop's lateness).
        assert 0.05 <= loop.time() - started <= 0.05 + SLOT_S + 0.1
        assert table == {"b": 2, "c": 3}
        await asyncio.sleep(0.3 + SLOT_S + 0.05)
        assert table == {"b": 2}

    run(scenario(), timeout_s=5)
