"""What each route of an actor did: messages served, outcomes, and how long they took.

A worker keeps one :class:`RouteStats` per route key it served and reports them with its
other counters (``actrhost status``, the node's Prometheus endpoint). Two timings per
message, both in nanoseconds of the monotonic clock:

- *queued*: from the frame's arrival at the worker to the start of its handler (the
  mailbox wait: the part of the latency that grows with load);
- *handled*: from the start of the handler to the reply handed to ZeroMQ (decoding,
  the handler itself, encoding).

Histograms have 5 bits of precision (each value within ≈ 1.6 % of its bucket's midpoint):
a route's report stays a few hundred bytes, and recording costs well under a microsecond
against the ≈ 100 µs of a local call.
"""

from __future__ import annotations

from typing import Any

from .._histogram import Histogram

#: Bits of precision of the per-route histograms (docstring above).
PRECISION_BITS = 5
_EXACT_BITS = PRECISION_BITS + 1  # values below 2 ** this get a bucket each
#: Values are clamped to about 78 hours, which bounds the bucket array.
_MAX_VALUE = (1 << 48) - 1
_BUCKETS = ((48 - _EXACT_BITS) << PRECISION_BITS) + (_MAX_VALUE >> (48 - _EXACT_BITS)) + 1


class Timings:
    """A :class:`~actrhost._histogram.Histogram` of 5 bits reduced to what the hot path
    needs: a dense bucket list, count, total and max, updated inline by
    ``RouteStats.record`` (about half the cost of two ``Histogram.record`` calls, per
    ``scripts/bench_route_stats.py``).
    ``to_dict()`` gives ``Histogram``'s own format, so readers use ``Histogram.from_dict``;
    its ``min`` is the lowest non-empty bucket's lower bound."""

    __slots__ = ("count", "counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0
        self.max = 0

    def to_dict(self) -> dict[str, Any]:
        """``Histogram.to_dict()``'s format (5 bits of precision)."""
        buckets = [[i, n] for i, n in enumerate(self.counts) if n]
        lowest = Histogram(PRECISION_BITS).bucket_bounds(buckets[0][0])[0] if buckets else 0
        return {
            "precision_bits": PRECISION_BITS,
            "count": self.count,
            "total": self.total,
            "min": lowest,
            "max": self.max,
            "buckets": buckets,
        }


class RouteStats:
    """Counters and timings of one route of one actor instance."""

    __slots__ = ("calls", "errors", "expired", "handled_ns", "queued_ns", "tells", "timed")

    def __init__(self, timed: bool = True) -> None:
        self.timed = timed  # False: ``count`` only, no timings reported
        self.calls = 0  # requests answered with a result
        self.tells = 0  # tells handled without an error
        self.expired = 0  # requests skipped: their deadline passed while they waited
        self.errors: dict[int, int] = {}  # wire error code -> requests and tells that failed
        self.queued_ns = Timings()
        self.handled_ns = Timings()

    def record(self, queued_ns: int, handled_ns: int, request: bool, error_code: int) -> None:
        """One message served: its outcome (``error_code`` 0 for success) and timings
        (ns; values above ≈ 78 hours count as ≈ 78 hours).

        The count is ``count``'s, and the same update is written out for both timings: on
        this hot path a method call or a loop costs as much as the update itself."""
        if error_code:
            self.errors[error_code] = self.errors.get(error_code, 0) + 1
        elif request:
            self.calls += 1
        else:
            self.tells += 1
        timings = self.queued_ns
        value = queued_ns if queued_ns < _MAX_VALUE else _MAX_VALUE
        shift = value.bit_length() - _EXACT_BITS
        timings.counts[value if shift <= 0 else (shift << PRECISION_BITS) + (value >> shift)] += 1
        timings.count += 1
        timings.total += value
        if value > timings.max:
            timings.max = value
        timings = self.handled_ns
        value = handled_ns if handled_ns < _MAX_VALUE else _MAX_VALUE
        shift = value.bit_length() - _EXACT_BITS
        timings.counts[value if shift <= 0 else (shift << PRECISION_BITS) + (value >> shift)] += 1
        timings.count += 1
        timings.total += value
        if value > timings.max:
            timings.max = value

    def count(self, request: bool, error_code: int) -> None:
        """One message served, untimed (``[node] route_timings = false``)."""
        if error_code:
            self.errors[error_code] = self.errors.get(error_code, 0) + 1
        elif request:
            self.calls += 1
        else:
            self.tells += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (error codes as strings: JSON object keys); the timings only
        when they are taken."""
        out: dict[str, Any] = {
            "calls": self.calls,
            "tells": self.tells,
            "expired": self.expired,
            "errors": {str(code): n for code, n in sorted(self.errors.items())},
        }
        if self.timed:
            out["queued_ns"] = self.queued_ns.to_dict()
            out["handled_ns"] = self.handled_ns.to_dict()
        return out
