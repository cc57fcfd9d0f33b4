"""Loss detection for aiortc's SCTP that tolerates reordering (RACK, RFC 8985, in part).

aiortc counts a DATA chunk lost when three SACKs report later chunks but not it, and then
halves its congestion window (RFC 9260 §7.2.4). On a path that reorders packets (jitter:
each packet delayed differently) nearly every chunk is overtaken by three others before
it arrives, so every window ends in a spurious retransmission and a halving: the window
stays at its floor of ≈ 4.8 KB and a stream moves ≈ 0.1 MB/s on a 50 ± 20 ms path that
carries 4.5 MB/s without the jitter (QA, 2026-12-03).

Instead, as TCP's RACK: a chunk is lost when a chunk *sent* more than a reordering
window after it has been delivered (and, when that news is old, when as much time has
passed since). Counting time instead of SACKs makes the rule independent of the sending
rate. The window starts at a quarter of the lowest round trip of the last 10 s and doubles (at most
once a round trip) each time a retransmission proves spurious: the peer reports the chunk
received twice (duplicate TSNs in its SACK, RFC 9260 §3.3.4). It is at most one smoothed
round trip, and falls back to its start after 16 recoveries without a spurious one. A spurious
retransmission also undoes the window reduction of its recovery (as TCP's Eifel/DSACK
undo, RFC 4015): the path did not lose anything.

How: before aiortc handles a SACK that reports gaps, each outstanding chunk's miss count
is set so that aiortc's own "third miss" rule fires for exactly the chunks this rule
finds lost, and for no other. aiortc keeps doing everything else (retransmission, fast
recovery, the window arithmetic); a chunk lost at the tail, with nothing sent after it,
is still found by the retransmission timer and the probes of :mod:`._sctp`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from ._aiortc_parts import require

log = logging.getLogger(__name__)

#: The reordering window is a multiple of a quarter of the lowest round trip.
REORDER_STEP_OF_MIN_RTT = 0.25
#: After this many recoveries without a spurious retransmission the window is reset.
RECOVERIES_BEFORE_RESET = 16
#: The lowest round trip is taken over this long (the path may change).
MIN_RTT_WINDOW_S = 10.0
#: Retransmissions remembered (to recognise spurious ones), at most.
RETRANSMITS_KEPT = 4096
#: The attribute of a DATA chunk with the time it was last sent again.
RESENT_AT = "_actrhost_resent_at"

_installed = False
_TSN_MODULO = 1 << 32
#: A miss count that aiortc's "+= 1, lost at 3" never brings to 3.
_NEVER = -(1 << 30)
#: aiortc counts a chunk lost on its third miss; this many makes the next one the third.
_LOST_AT_NEXT = 2


def _tsn_after(a: int, b: int) -> bool:
    """Serial number arithmetic (RFC 1982): TSN ``a`` comes after ``b``."""
    return a != b and (a - b) % _TSN_MODULO < _TSN_MODULO // 2


class LossState:
    """What the rule keeps per association (an attribute of the transport)."""

    __slots__ = (
        "delivered_rtt",
        "delivered_xmit",
        "min_rtt",
        "recoveries",
        "recovery",
        "reorder_steps",
        "retransmitted",
        "rtt_minima",
        "spurious",
        "undo",
        "widened_at",
    )

    def __init__(self) -> None:
        self.delivered_xmit = 0.0  # send time of the latest-sent chunk delivered so far
        self.delivered_rtt = 0.0  # its round trip, measured when its delivery was learnt
        self.min_rtt = 0.0  # the lowest round trip of the last MIN_RTT_WINDOW_S
        # The lowest of each second of that window, oldest first: (second, round trip).
        self.rtt_minima: deque[tuple[int, float]] = deque()
        self.reorder_steps = 1  # the window in quarters of min_rtt
        self.recovery = 0  # the number of the latest recovery (fast retransmit)
        self.recoveries = 0  # since the last spurious retransmission
        self.retransmitted: dict[int, int] = {}  # TSN -> the recovery that sent it again
        # The window before the latest recovery cut it: (cwnd, ssthresh), or None.
        self.undo: tuple[int, int] | None = None
        self.spurious = 0  # retransmissions the peer reported as duplicates
        self.widened_at = 0.0  # when the window last grew: at most once a round trip

    def reorder_window(self, srtt: float | None) -> float:
        window = self.reorder_steps * REORDER_STEP_OF_MIN_RTT * self.min_rtt
        return min(window, srtt) if srtt else window


def describe(transport: Any) -> dict[str, Any]:
    """What ``actrhost status`` shows of an association's sending: round trips, window,
    recoveries (fast retransmits) and how many proved spurious, the reordering window."""
    state = transport.__dict__.get("_actrhost_loss") or LossState()
    srtt = transport._srtt
    return {
        "srtt_ms": round(1000 * srtt, 1) if srtt else None,
        "min_rtt_ms": round(1000 * state.min_rtt, 1),
        "cwnd_bytes": int(transport._cwnd),
        "fast_recoveries": state.recovery,
        "spurious_retransmits": state.spurious,
        "reorder_window_ms": round(1000 * state.reorder_window(srtt), 1),
    }


def _loss_state(transport: Any) -> LossState:
    state = transport.__dict__.get("_actrhost_loss")
    if state is None:
        state = transport.__dict__["_actrhost_loss"] = LossState()
    return state


def _xmit_time(chunk: Any) -> float:
    """When ``chunk`` was last sent (aiortc keeps only the first time)."""
    return chunk.__dict__.get(RESENT_AT) or chunk._sent_time or 0.0


def install() -> None:
    """Patch aiortc's SCTP transport in this process (idempotent). Every gateway does,
    also with ``ACTRHOST_GATEWAY_AIORTC=plain``: it is a fix, not a tuning."""
    global _installed
    if _installed:
        return
    from aiortc import rtcsctptransport as sctp

    cls: Any = sctp.RTCSctpTransport
    needed = ("_receive_sack_chunk", "_send_chunk", "_update_rto")
    require("aiortc's SCTP transport changed", (cls, needed), (sctp, ("DataChunk",)))
    original_receive_sack_chunk = cls._receive_sack_chunk
    original_send_chunk = cls._send_chunk
    original_update_rto = cls._update_rto
    data_chunk = sctp.DataChunk

    async def _send_chunk(self: Any, chunk: Any) -> None:
        if chunk.__class__ is data_chunk and chunk._sent_count > 1:
            setattr(chunk, RESENT_AT, time.time())
        await original_send_chunk(self, chunk)

    def _update_rto(self: Any, rtt: float) -> None:
        # aiortc measures a round trip on each SACK that acknowledges new data.
        original_update_rto(self, rtt)
        if rtt > 0:
            _note_rtt(_loss_state(self), rtt)

    async def _receive_sack_chunk(self: Any, sack: Any) -> None:
        if sack.duplicates:
            _note_duplicates(self, _loss_state(self), sack.duplicates)
        if (
            not sack.gaps
            or not self._sent_queue
            or _tsn_after(self._last_sacked_tsn, sack.cumulative_tsn)
        ):
            await original_receive_sack_chunk(self, sack)  # aiortc finds no loss in it
            return
        state = _loss_state(self)
        seen = set()
        for start, end in sack.gaps:
            for offset in range(start, end + 1):
                seen.add((sack.cumulative_tsn + offset) % _TSN_MODULO)
        judged = _judge_missing(self, state, sack.cumulative_tsn, seen)
        in_recovery = self._fast_recovery_exit is not None
        window = (self._cwnd, self._ssthresh)
        await original_receive_sack_chunk(self, sack)
        _note_retransmits(self, state, judged, in_recovery, window)

    patched = {
        "_send_chunk": _send_chunk,
        "_update_rto": _update_rto,
        "_receive_sack_chunk": _receive_sack_chunk,
    }
    for name, method in patched.items():
        setattr(cls, name, method)
    _installed = True


def _note_rtt(state: LossState, rtt: float) -> None:
    """Keep the lowest round trip of the last MIN_RTT_WINDOW_S, by the second: a path
    whose round trip grows (queues, a route change) gets a window from what it is now,
    not from when the association was set up (QA: 0.5 ms kept on a 20 ms path)."""
    second = int(time.monotonic())
    minima = state.rtt_minima
    if minima and minima[-1][0] == second:
        if rtt >= minima[-1][1]:
            return
        minima[-1] = (second, rtt)
    else:
        minima.append((second, rtt))
        while minima[0][0] <= second - MIN_RTT_WINDOW_S:
            minima.popleft()
    state.min_rtt = min(lowest for _second, lowest in minima)


def _judge_missing(
    transport: Any, state: LossState, cumulative_tsn: int, seen: set[int]
) -> list[Any]:
    """Set each missing chunk's miss count so that aiortc finds lost exactly those sent
    a reordering window or more before the latest-sent delivered one; return those."""
    now = time.time()
    highest_seen = max(seen, key=lambda tsn: (tsn - cumulative_tsn) % _TSN_MODULO)
    # The send time of the latest-sent chunk known delivered, and how long that took.
    newest = state.delivered_xmit
    missing = []
    for chunk in transport._sent_queue:
        if _tsn_after(chunk.tsn, highest_seen):
            break
        if _tsn_after(chunk.tsn, cumulative_tsn) and chunk.tsn not in seen:
            missing.append(chunk)
            continue
        sent_at = _xmit_time(chunk)
        if chunk._sent_count > 1 and now - sent_at < state.min_rtt:
            continue  # too soon to be the retransmission's arrival: the first's, maybe
        newest = max(newest, sent_at)
    if newest > state.delivered_xmit:
        state.delivered_xmit, state.delivered_rtt = newest, now - newest
    wait = state.delivered_rtt + state.reorder_window(transport._srtt)
    lost = []
    for chunk in missing:
        if chunk._retransmit:  # found lost already, waiting for room to go again
            chunk._misses = _NEVER
            continue
        sent_at = _xmit_time(chunk)
        if sent_at < state.delivered_xmit and now - sent_at >= wait:
            chunk._misses = _LOST_AT_NEXT
            lost.append(chunk)
        else:
            chunk._misses = _NEVER
    return lost


def _note_retransmits(
    transport: Any,
    state: LossState,
    judged_lost: list[Any],
    was_in_recovery: bool,
    window: tuple[int, int],
) -> None:
    """Remember what aiortc just marked for retransmission, and the window it had before
    a recovery that starts now, to undo it if the retransmission proves spurious."""
    if not was_in_recovery and transport._fast_recovery_exit is not None:
        state.recovery += 1
        state.recoveries += 1
        state.undo = window
        if state.recoveries >= RECOVERIES_BEFORE_RESET:
            state.recoveries, state.reorder_steps = 0, 1
    for chunk in judged_lost:
        # aiortc resets the count of a chunk it finds lost (and has sent it again by now).
        if chunk._misses != _LOST_AT_NEXT:
            if len(state.retransmitted) >= RETRANSMITS_KEPT:
                del state.retransmitted[next(iter(state.retransmitted))]
            state.retransmitted[chunk.tsn] = state.recovery


def _note_duplicates(transport: Any, state: LossState, duplicates: list[int]) -> None:
    """The peer got some chunks twice: if we retransmitted them after judging them lost,
    they were only late. Widen the window; undo the current recovery's cut."""
    recoveries = [state.retransmitted.pop(tsn, None) for tsn in duplicates]
    spurious = [recovery for recovery in recoveries if recovery is not None]
    if not spurious:
        return
    state.spurious += len(spurious)
    now = time.time()
    if now - state.widened_at >= (transport._srtt or 0.0):
        state.widened_at = now
        state.reorder_steps *= 2
    state.recoveries = 0
    undo = state.undo
    if undo is not None and state.recovery in spurious:  # not an earlier one's
        state.undo = None
        cwnd, ssthresh = undo
        transport._cwnd = max(transport._cwnd, cwnd)
        transport._ssthresh = max(transport._ssthresh, ssthresh)
        transport._fast_recovery_exit = None
    log.debug(
        "%r: %d retransmission(s) were spurious; reordering window now %.1f ms",
        transport,
        len(spurious),
        1000 * state.reorder_window(transport._srtt),
    )
