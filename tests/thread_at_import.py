"""A handler module that starts a thread when imported (tests/test_worker_start.py)."""

from __future__ import annotations

import threading
import time

from actrhost import Actor, Context, rpc

HEARTBEAT = threading.Thread(target=time.sleep, args=(3600,), name="heartbeat", daemon=True)
HEARTBEAT.start()


class ThreadCounter(Actor):
    """Says whether the module's thread is alive in this process."""

    @rpc("test.Threads.Alive")
    async def alive(self, ctx: Context, request: bytes) -> bytes:
        return str(HEARTBEAT.is_alive()).encode()
