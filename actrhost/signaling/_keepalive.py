"""Keeping a :class:`SignalingClient`'s registrations alive: heartbeats and renewals.

One task per client sends the heartbeats of all its actors, batched into a few
PingBatch frames per interval, renews each credential when it is due, and registers an
actor again when the server refused its heartbeat. The client owns the connection; this
module only decides when to send what.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .._errors import ActrError, ClosedResourceError, DeadlineExceeded, ErrorCode, Unavailable
from . import _wire as wire

if TYPE_CHECKING:
    from ._client import SignalingClient
    from ._registration import Registration

__all__ = ["Keepalive"]

# The client's logger: these lines are about the client's connection and actors.
log = logging.getLogger("actrhost.signaling._client")

# Heartbeats per PingBatch frame: ~100 bytes each, so a frame stays far below the
# server's default 256 KiB frame limit.
_PING_BATCH = 500


class Keepalive:
    """Heartbeats and credential renewals for every registration of one client.

    ``interval_s`` is the heartbeat interval the server asked for at the last
    registration; :meth:`wake` tells the task that it or a renewal time moved.
    """

    def __init__(self, client: SignalingClient, interval_s: float = 5.0) -> None:
        self._client = client
        self.interval_s = interval_s
        self._wake = asyncio.Event()  # wakes the task early

    def wake(self) -> None:
        """Re-plan now: a registration, credential or the interval changed."""
        self._wake.set()

    async def run(self) -> None:
        """Heartbeats every interval (batched per wake-up) and renewals when due.

        Wakes at most every interval / 8 and sends, in one PingBatch frame per
        ``_PING_BATCH`` actors, every heartbeat due within that slack: a node's actors,
        registered at different moments, share a few frames per interval instead of one
        frame each (see scripts/bench_signaling.py).
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._client._ready.wait()
            try:
                await self._run_once(loop)
            except Exception:  # a bug must not end heartbeats for good
                log.exception("%r: heartbeat task failed; going on", self._client)
                await asyncio.sleep(self.interval_s / 8)

    async def _run_once(self, loop: asyncio.AbstractEventLoop) -> None:
        """One round: due renewals, due heartbeats, then sleep until the next."""
        now = loop.time()
        slack = self.interval_s / 8
        regs = [r for r in self._client._registrations if not r.closed]
        due = [r for r in regs if r._renew_at <= now]
        if due:
            await asyncio.gather(*(self._renew(r) for r in due))
        beats = [r for r in regs if r._next_beat <= now + slack and r.actr_id is not None]
        if beats:
            for reg in beats:
                reg._next_beat = now + self.interval_s
            chunks = [beats[i : i + _PING_BATCH] for i in range(0, len(beats), _PING_BATCH)]
            await asyncio.gather(*(self._beat_batch(chunk) for chunk in chunks))
        wake = min(
            [now + self.interval_s]
            + [r._renew_at for r in regs]
            + [r._next_beat - slack for r in regs]
        )
        # A new registration or credential calls wake(): the interval or the next
        # renewal may have moved earlier.
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(wake - loop.time(), slack)):
                await self._wake.wait()

    async def _beat_batch(self, regs: list[Registration]) -> None:
        client = self._client
        env = wire.new_envelope()
        batch = env.ping_batch
        sent: list[Registration] = []
        for reg in regs:
            if not reg.closed:
                reg._fill_ping(batch.pings.add())
                sent.append(reg)
        try:
            reply = await client._request(env)
        except ActrError as exc:
            log.info("%r: heartbeats failed: %s", client, exc)
            ws = client._ws
            if isinstance(exc, DeadlineExceeded) and ws is not None:
                # No answer: the server is gone or the path is down while TCP retries
                # with backoff (the server forgets us meanwhile). Connect anew instead of
                # waiting for TCP: traffic came back ≈ 10 s after a 20 s outage (QA).
                log.info("%r: no answer to heartbeats: connecting anew", client)
                ws.transport.abort()
            return
        for index, error in zip(reply.pong.refused, reply.pong.errors, strict=False):
            reg = sent[index]
            if error.code == ErrorCode.UNAUTHORIZED and not reg.closed:
                # Dropped as silent, or its credential lapsed: register again, same id.
                log.info("%r: heartbeat refused (%s): registering again", reg, error.message)
                client._spawn(reg._reregister(reg._generation))
            else:
                log.warning("%r: heartbeat refused: %d %s", reg, error.code, error.message)

    async def _renew(self, reg: Registration) -> None:
        reg._renew_at = float("inf")  # not again until this attempt settles
        try:
            await reg.renew_credential()
        except (ClosedResourceError, Unavailable, DeadlineExceeded) as exc:
            log.info("%r: credential renewal deferred: %s", reg, exc)
            reg._renew_at = asyncio.get_running_loop().time() + self.interval_s
        except ActrError as exc:
            log.warning("%r: credential renewal failed: %s", reg, exc)
