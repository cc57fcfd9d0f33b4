"""Parsing and printing of durations, sizes and counts for ``actrhost load``."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m|min|h)?\s*$")
_DURATION_SCALE_S = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")
_SIZE_SCALE = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    # Too large for any message, but a size all the same: said so, not "not a size" (QA).
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_duration_s(text: str) -> float:
    """Seconds in ``text``: ``30s``, ``500ms``, ``2m``, ``1.5h`` or a plain number of seconds.

    Raises ``ValueError`` with a message naming the accepted forms.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 500ms, 2m)")
    return float(match.group(1)) * _DURATION_SCALE_S[match.group(2) or "s"]


def parse_size_bytes(text: str) -> int:
    """Bytes in ``text``: ``64``, ``64B``, ``16KiB``, ``1MiB``, ``1MB`` (powers of 1000).

    Raises ``ValueError`` for anything else, or for a fractional number of bytes.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 64, 16KiB, 1MiB)")
    value = float(match.group(1)) * _SIZE_SCALE[(match.group(2) or "").lower()]
    if value != int(value):
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def format_count(value: float) -> str:
    """``1234567`` -> ``1,234,567`` (rounded to an integer)."""
    return f"{round(value):,}"


def format_rate(value: float) -> str:
    """A per-second rate with a precision that suits its size."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def format_ms(value_ms: float | None) -> str:
    """Milliseconds with 3 significant digits, e.g. ``0.412``, ``12.3``, ``1,250``."""
    if value_ms is None or math.isnan(value_ms):
        return "-"
    if value_ms >= 100:
        return f"{value_ms:,.0f}"
    if value_ms >= 10:
        return f"{value_ms:.1f}"
    if value_ms >= 1:
        return f"{value_ms:.2f}"
    return f"{value_ms:.3f}"


def format_bytes(value: float) -> str:
    """``1048576`` -> ``1.0 MiB``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def format_duration(value_s: float) -> str:
    """``0.25`` -> ``250 ms``, ``12.5`` -> ``12.5 s``."""
    if value_s < 1:
        return f"{value_s * 1e3:.0f} ms"
    return f"{value_s:.3g} s" if value_s < 100 else f"{value_s:.0f} s"
