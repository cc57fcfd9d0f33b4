"""What this gateway received of each sender's tells and reliable chunks: enough to say
that one sent again in doubt never reached the node before, so it is not in doubt.

A sender whose gateway died sends every tell it kept again, marked in doubt
(``actrhost/_tells_sent.py``): some of them died with that gateway, others had reached
this node, and the sender cannot tell which. The receiving *worker* judges each by its
mark for the sender (``actrhost/_tell_origin.py``), and drops one from a sender it does
not know unless it is the first process of its actor instance: a restarted worker may
have read it in its predecessor. So a sender new to a restarted worker, whose first
tells were all in the gateway that died, lost them (``tells_in_doubt_dropped``).

This gateway sees every tell and chunk that reaches its node's workers from other nodes.
If it is the first gateway process of its node (``GatewaySpec.incarnation`` 0), a tell
it never received was read by nobody here, whatever the worker knows. It keeps the
highest origin it received per sender, lane and target actor (a sender's items to one
target come in order: one lane is one ordered data channel, and chunks held for a
stalled target are held in order), and :meth:`TellsReceived.judge` says, for each that
arrives:

- ``True``: at or below that mark, received before: as the sender said (one it sent
  again stays in doubt, for the worker to judge).
- ``False``: above the mark, or a lane never seen, while this memory is complete: never
  received here, so never read; handed on as new even if the sender said "in doubt".
- ``None``: cannot say (a later gateway process, or a lane forgotten too early): as the
  sender said.

A tell the sender did not send again is never put in doubt here, even at or below the
mark: one sender's tells can leave it out of their numbered order (two of its tasks
waiting for room in a full socket), and the worker drops a tell in doubt below what it
read from that sender.

A lane is forgotten once idle for :data:`FORGET_AFTER_S`, longer than any sender keeps
a tell to send again (``_kept_frames``: 60 s), so no copy of one it received can come
after that. Beyond :data:`LANES_MAX` lanes, the oldest goes even if fresher, and the
memory is no longer complete.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

#: A lane idle this long is forgotten: twice what a sender keeps a tell to send again.
FORGET_AFTER_S = 120.0
#: At most this many (sender, lane, target) marks; beyond, the memory is incomplete.
LANES_MAX = 65_536

Lane = tuple[int, int, Hashable]  # (sender key as this node sees it, lane, target)
Origin = tuple[int, int]  # (index, position): a sender's count of such items, and 0


class TellsReceived:
    """The highest origin received per sender, lane and target (module docstring).

    ``complete``: no earlier gateway process of this node received anything (the first
    one, ``GatewaySpec.incarnation`` 0).
    """

    def __init__(
        self,
        complete: bool,
        *,
        forget_after_s: float = FORGET_AFTER_S,
        lanes_max: int = LANES_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.complete = complete
        self._forget_after_s = forget_after_s
        self._lanes_max = lanes_max
        self._clock = clock
        #: lane -> (highest origin received, when last received), oldest first.
        self._marks: OrderedDict[Lane, tuple[Origin, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._marks)

    def judge(self, lane: Lane, origin: Origin) -> bool | None:
        """Whether an item of ``lane`` at ``origin`` was received before (True), never
        (False), or unknown (None); notes it as received."""
        now = self._clock()
        entry = self._marks.get(lane)
        if entry is None:
            seen = False if self.complete else None
            self._marks[lane] = (origin, now)
            self._forget(now)
            return seen
        mark = entry[0]
        if origin <= mark:
            self._marks[lane] = (mark, now)
            self._marks.move_to_end(lane)
            return True
        self._marks[lane] = (origin, now)
        self._marks.move_to_end(lane)
        return False if self.complete else None

    def _forget(self, now: float) -> None:
        marks = self._marks
        while marks:
            lane, (_mark, last) = next(iter(marks.items()))
            if now - last < self._forget_after_s and len(marks) <= self._lanes_max:
                return
            if now - last < self._forget_after_s:
                self.complete = False  # a fresh lane forgotten: its copies may still come
            del marks[lane]
