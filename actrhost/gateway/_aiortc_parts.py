"""The private parts of aiortc and aioice that the gateway's patches reach into.

Any release may rename them (``pyproject.toml`` pins the releases the suite ran with); a
patch checks for what it wraps before it installs, so that a renamed method fails the
gateway's start loudly instead of being skipped in silence.
"""

from __future__ import annotations

from collections.abc import Iterable


def require(changed: str, *parts: tuple[object, Iterable[str]]) -> None:
    """Raise ``RuntimeError("<changed>: no a, b")`` unless each object in ``parts`` has
    each of the attributes named beside it."""
    missing = [name for owner, names in parts for name in names if not hasattr(owner, name)]
    if missing:
        raise RuntimeError(f"{changed}: no {', '.join(missing)}")
