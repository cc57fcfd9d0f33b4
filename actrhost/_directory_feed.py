"""How the supervisor keeps every process's directory current: a whole snapshot once
(a worker's ``hello``, a Shell's ``attach``), then only what changed.

A node of N instances makes about N state changes while it starts and again while it
stops. Sending the whole directory (N entries) to every live process (N of them) on
each change was N³ entries to encode, send and parse: a node of 200 instances took 43 s
to start and 23 s to stop, and most of its workers were killed for not stopping in time
(measured 2026-12-02). A change now travels as the entries that changed (``"delta":
true``), encoded once for all recipients, and changes made within one turn of the event
loop go out together. Shells serving routes likewise: a change carries the Shells that
came or changed their routes (``shells_changed``) and the endpoints of those that left
(``shells_left``), not the whole list (each attach sent every Shell to every process:
646 MB for 300 Shells attaching, QA).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from . import _control as control

#: ``send(routing_id, frame) -> delivered``.
Send = Callable[[bytes, bytes], bool]


class DirectoryFeed:
    """Publishes snapshots from ``snapshot()`` to the ``recipients()`` through ``send``.

    A recipient must have had a whole snapshot before it gets changes: the supervisor
    sends one itself in answer to a ``hello`` or an ``attach``. Applying a change twice
    is harmless (entries are replaced by value), so one sent to a process that already
    had it in its snapshot does no harm. A recipient a change could not reach gets the
    whole snapshot next time, not a change it could not apply.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        recipients: Callable[[], Iterable[bytes]],
        send: Send,
    ) -> None:
        self._snapshot = snapshot
        self._recipients = recipients
        self._send = send
        self._last_actors: list[dict[str, Any]] = []
        self._last_shells: dict[str, dict[str, Any]] = {}
        self._missed: set[bytes] = set()
        self._scheduled: asyncio.Handle | None = None

    def changed(self) -> None:
        """Something in the directory changed: publish it at the end of this loop turn."""
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self.publish)

    def publish(self) -> None:
        """Send what changed since the last publication, now."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        full = self._snapshot()
        actors = full["actors"]
        shells = {shell["endpoint"]: shell for shell in full["shells"]}
        before, shells_before = self._last_actors, self._last_shells
        if len(before) == len(actors) and all(
            a["id"] == b["id"] for a, b in zip(actors, before, strict=True)
        ):
            changed = [a for a, b in zip(actors, before, strict=True) if a != b]
            rest = {key: value for key, value in full.items() if key != "shells"}
            change = {
                **rest,
                "actors": changed,
                "delta": True,
                "shells_changed": [s for e, s in shells.items() if shells_before.get(e) != s],
                "shells_left": [endpoint for endpoint in shells_before if endpoint not in shells],
            }
            delta = control.encode(change)
        else:  # the first publication, or ids given anew: whole snapshots for all
            delta = control.encode(full)
        self._last_actors, self._last_shells = actors, shells
        whole: bytes | None = None
        for routing_id in self._recipients():
            if routing_id in self._missed:
                whole = whole or control.encode(full)
                if self._send(routing_id, whole):
                    self._missed.discard(routing_id)
            elif not self._send(routing_id, delta):
                self._missed.add(routing_id)

    def forget(self, routing_id: bytes) -> None:
        """``routing_id`` is gone (or will start afresh with a whole snapshot)."""
        self._missed.discard(routing_id)
