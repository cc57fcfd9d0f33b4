"""How much of a connection's traffic may wait in aiortc's send FIFO, by how fast the
link takes it.

aiortc's FIFO is shared by every channel of a connection and served in order: a call
sent behind 256 KiB of stream waits until all of it has moved on into SCTP. On loopback
that is ≈ 15 ms; on a 1 Mbit/s link it was 2.5 s, so calls beside a stream missed 2 s
deadlines and video control messages came too late for their frames (QA, 2026-12-03).

So the sender keeps at most :attr:`Tuning.fifo_target_s` of what the link takes waiting
there, between :data:`LIMIT_FLOOR_BYTES` and :attr:`Tuning.buffer_high_bytes`, and cuts
messages of reliable lanes to the same size on a slow link, since a message moves on
into SCTP whole: one 64 KiB part is half a second at 1 Mbit/s. What the link takes is
SCTP's congestion window per round trip (smoothed, plus four times its variation, as
SCTP's own timeout): the bytes it lets into flight per round trip, where the round trip
includes the queues of the path. (Measuring how fast the FIFO drains does not work: it
drains in whole messages, only when SCTP's own queue is empty, so a small FIFO is empty
at most of the sender's wake-ups and a measurement hardly ever spans one.) On a fast link
neither limit changes anything: it stays at its ceiling. So does it until SCTP has
measured a round trip, which it does as the channels open, before any traffic.
"""

from __future__ import annotations

import time
from typing import Any

from ._types import Tuning

#: The FIFO limit and message size never go below these: a smaller FIFO than a few
#: messages could run empty between two wake-ups of the sender.
LIMIT_FLOOR_BYTES = 16 * 1024
PART_FLOOR_BYTES = 8 * 1024


class FifoPace:
    """How much may wait in one connection's FIFO, and how large a message may be."""

    __slots__ = (
        "_ceiling",
        "_max_part",
        "_target_s",
        "held_back",
        "held_back_at",
        "limit_bytes",
        "part_bytes",
    )

    def __init__(self, tuning: Tuning) -> None:
        self._ceiling = tuning.buffer_high_bytes
        self._max_part = tuning.max_message_bytes
        self._target_s = tuning.fifo_target_s
        #: Bytes the FIFO may hold before the sender waits.
        self.limit_bytes = self._ceiling
        #: Largest message of a reliable lane.
        self.part_bytes = self._max_part
        #: Times the sender waited for room in the FIFO while the limit was below its
        #: ceiling, and when it last did (``time.monotonic()``): whether the limit holds
        #: anything back. An idle link's limit alone says little: SCTP's window grows
        #: only with traffic, so a link that carried a few calls keeps its first one (on
        #: loopback 133 KiB of 256), and `actrhost status` called it slow (QA).
        self.held_back = 0
        self.held_back_at: float | None = None

    def follow(self, sctp: Any) -> bool:
        """Set the limits from aiortc's ``RTCSctpTransport`` now; returns whether they
        changed."""
        srtt = sctp._srtt
        if not srtt or not self._target_s:
            return False  # no round trip measured yet, or a fixed limit
        # The smoothed round trip lags behind while a queue builds up on the path (a
        # stream's start): with its variation added, the estimate stays on the safe side.
        rate = sctp._cwnd / (srtt + 4 * sctp._rttvar)
        limit = min(self._ceiling, max(LIMIT_FLOOR_BYTES, int(rate * self._target_s)))
        if limit == self.limit_bytes:
            return False
        self.limit_bytes = limit
        self.part_bytes = min(self._max_part, max(PART_FLOOR_BYTES, limit))
        return True

    def waited(self) -> None:
        """The sender waits for room in the FIFO: counted if this pace held it back."""
        if self.limit_bytes < self._ceiling:
            self.held_back += 1
            self.held_back_at = time.monotonic()

    def held_back_s_ago(self) -> float | None:
        """Seconds since the sender last waited for this pace (None: never)."""
        if self.held_back_at is None:
            return None
        return round(time.monotonic() - self.held_back_at, 1)
