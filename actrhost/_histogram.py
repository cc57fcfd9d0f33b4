"""A log-bucketed latency histogram with bounded relative error (HdrHistogram's layout).

Values are non-negative integers (``actrhost load`` and the workers' per-route timings
record nanoseconds). Values below ``2 ** (precision_bits + 1)`` get a bucket each; above
that every power-of-two range is cut into ``2 ** precision_bits`` equal buckets, so a
bucket is never wider than ``1 / 2 ** precision_bits`` of its lower bound. Reported
values are bucket midpoints, clamped to the exact min and max, which bounds the relative
error by half of that: with the default 8 bits, 1/512 (about 0.2 %).

Why not the ``hdrhistogram`` package: it needs the value range fixed up front (a stall of
minutes would be clipped) and its encoded form is not JSON. A sparse ``{bucket: count}``
dict is unbounded, merges by addition, and serializes as it is — and at a few hundred
non-empty buckets per run it costs less than the call it measures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

DEFAULT_PRECISION_BITS = 8


class Histogram:
    """Counts of non-negative integer values in log-linear buckets.

    ``record`` is O(1); ``merge`` adds another histogram of the same precision; ``to_dict``
    and ``from_dict`` round-trip through JSON exactly. Not thread-safe (nothing here is
    shared between threads: each generator process has its own and sends a copy).
    """

    __slots__ = ("_counts", "_sub", "count", "max", "min", "precision_bits", "total")

    def __init__(self, precision_bits: int = DEFAULT_PRECISION_BITS) -> None:
        if not 1 <= precision_bits <= 16:
            raise ValueError(f"precision_bits must be 1..16, not {precision_bits}")
        self.precision_bits = precision_bits
        self._sub = precision_bits + 1  # bit length below which buckets are exact
        self._counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def __repr__(self) -> str:
        buckets = len(self._counts)
        return f"Histogram({self.count} values, {buckets} buckets, {self.precision_bits} bits)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    # -- buckets -------------------------------------------------------------------------

    def bucket_of(self, value: int) -> int:
        """Index of the bucket that holds ``value``."""
        shift = value.bit_length() - self._sub
        if shift <= 0:
            return value
        return (shift << self.precision_bits) + (value >> shift)

    def bucket_bounds(self, index: int) -> tuple[int, int]:
        """``(lowest, highest)`` value of bucket ``index``, both included."""
        shift = (index >> self.precision_bits) - 1
        if shift <= 0:
            return index, index
        low = (index - (shift << self.precision_bits)) << shift
        return low, low + (1 << shift) - 1

    def _representative(self, index: int) -> float:
        low, high = self.bucket_bounds(index)
        return min(max((low + high) / 2, self.min), self.max)

    # -- recording -----------------------------------------------------------------------

    def record(self, value: int, count: int = 1) -> None:
        """Add ``count`` occurrences of ``value`` (an int >= 0; negative values count as 0)."""
        if value < 0:
            value = 0  # a clock step backwards must not break the histogram
        shift = value.bit_length() - self._sub
        index = value if shift <= 0 else (shift << self.precision_bits) + (value >> shift)
        counts = self._counts
        counts[index] = counts.get(index, 0) + count
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += count
        self.total += value * count

    def merge(self, other: Histogram) -> None:
        """Add every value of ``other`` (same ``precision_bits``) to this histogram."""
        if other.precision_bits != self.precision_bits:
            raise ValueError(
                f"cannot merge a {other.precision_bits}-bit histogram "
                f"into a {self.precision_bits}-bit one"
            )
        if other.count == 0:
            return
        counts = self._counts
        for index, n in other._counts.items():
            counts[index] = counts.get(index, 0) + n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def since(self, earlier: Histogram) -> Histogram:
        """The values recorded after ``earlier`` was a copy of this histogram: counts and
        total subtracted bucket by bucket. ``min`` and ``max`` of the difference are not
        known exactly: they become the lowest and highest non-empty bucket's bounds,
        clamped to this histogram's own."""
        if earlier.precision_bits != self.precision_bits:
            raise ValueError("histograms of different precision")
        result = Histogram(self.precision_bits)
        for index, n in self._counts.items():
            left = n - earlier._counts.get(index, 0)
            if left > 0:
                result._counts[index] = left
        result.count = sum(result._counts.values())
        result.total = max(0, self.total - earlier.total) if result.count else 0
        if result.count:
            indexes = sorted(result._counts)
            result.min = max(self.min, self.bucket_bounds(indexes[0])[0])
            result.max = min(self.max, self.bucket_bounds(indexes[-1])[1])
        return result

    def copy(self) -> Histogram:
        """An independent copy."""
        clone = Histogram(self.precision_bits)
        clone.merge(self)
        return clone

    @classmethod
    def merged(
        cls, histograms: Iterable[Histogram], precision_bits: int | None = None
    ) -> Histogram:
        """One histogram holding the values of all ``histograms``."""
        items = list(histograms)
        result = cls(
            precision_bits or (items[0].precision_bits if items else DEFAULT_PRECISION_BITS)
        )
        for item in items:
            result.merge(item)
        return result

    # -- reading -------------------------------------------------------------------------

    @property
    def mean(self) -> float:
        """Exact mean of the recorded values (NaN when empty)."""
        return self.total / self.count if self.count else math.nan

    def buckets(self) -> Iterator[tuple[int, int]]:
        """``(bucket index, count)`` of non-empty buckets, in increasing value order."""
        return iter(sorted(self._counts.items()))

    def value_at_percentile(self, percentile: float) -> float:
        """The value below or at which ``percentile`` % of the values lie (NaN when empty).

        ``0`` gives the exact min and ``100`` the exact max; in between, the midpoint of the
        bucket holding the value of rank ``ceil(percentile / 100 * count)``.
        """
        if self.count == 0:
            return math.nan
        if percentile <= 0:
            return float(self.min)
        if percentile >= 100:
            return float(self.max)
        rank = max(1, math.ceil(percentile / 100 * self.count))
        seen = 0
        for index, n in self.buckets():
            seen += n
            if seen >= rank:
                return self._representative(index)
        return float(self.max)

    def values_at_percentiles(self, percentiles: Iterable[float]) -> list[float]:
        """``value_at_percentile`` for each of ``percentiles`` in one pass over the buckets."""
        wanted = list(percentiles)
        if self.count == 0:
            return [math.nan] * len(wanted)
        order = sorted(range(len(wanted)), key=lambda i: wanted[i])
        result = [math.nan] * len(wanted)
        pairs = self.buckets()
        seen = 0
        index = -1
        for i in order:
            p = wanted[i]
            if p <= 0:
                result[i] = float(self.min)
                continue
            if p >= 100:
                result[i] = float(self.max)
                continue
            rank = max(1, math.ceil(p / 100 * self.count))
            while seen < rank:
                index, n = next(pairs)
                seen += n
            result[i] = self._representative(index)
        return result

    def counts_at_or_below(self, bounds: Iterable[int]) -> list[int]:
        """For each of ``bounds`` (increasing), how many values lie in buckets that end at or
        below it: Prometheus' cumulative ``le`` buckets, exact to one bucket's width."""
        out = []
        pairs = self.buckets()
        pending: tuple[int, int] | None = next(pairs, None)
        seen = 0
        for bound in bounds:
            while pending is not None and self.bucket_bounds(pending[0])[1] <= bound:
                seen += pending[1]
                pending = next(pairs, None)
            out.append(seen)
        return out

    def percentile_curve(self, ticks_per_half: int = 5) -> list[tuple[float, float]]:
        """``(percentile, value)`` points for a latency-by-percentile plot.

        Points are spaced as HdrHistogram's percentile distribution is: ``ticks_per_half``
        points per halving of the remaining ``100 - percentile``, up to the last value.
        """
        if self.count == 0:
            return []
        percentiles = []
        k = 0
        while True:
            p = 100.0 * (1 - 0.5 ** (k / ticks_per_half))
            # Stop once the step resolves less than one value: the rest is the maximum.
            if (100.0 - p) / 100.0 * self.count < 1:
                break
            percentiles.append(p)
            k += 1
        percentiles.append(100.0)
        return list(zip(percentiles, self.values_at_percentiles(percentiles), strict=True))

    # -- serialization -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: ``precision_bits``, ``count``, ``total``, ``min``, ``max``,
        ``buckets`` (``[[index, count], ...]`` in increasing order)."""
        return {
            "precision_bits": self.precision_bits,
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "buckets": [[index, n] for index, n in self.buckets()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        """Rebuild a histogram from :meth:`to_dict`'s output; ``ValueError`` if inconsistent."""
        hist = cls(int(data["precision_bits"]))
        for index, n in data["buckets"]:
            if n <= 0 or index < 0:
                raise ValueError(f"bad bucket [{index}, {n}]")
            hist._counts[int(index)] = int(n)
        hist.count = int(data["count"])
        hist.total = int(data["total"])
        hist.min = int(data["min"])
        hist.max = int(data["max"])
        if sum(hist._counts.values()) != hist.count:
            raise ValueError("bucket counts do not add up to count")
        return hist
