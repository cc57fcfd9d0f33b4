"""The server's table of registered actors: ids, presence (heartbeats) and load.

An actor is live while it heartbeats; one silent for ``missed_heartbeats`` intervals is
dropped from the table (and so from discovery). Its credential still verifies, so when
its next ping is refused it registers again and gets the same id back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from .._ids import ActrId, ActrType
from ._acl import AclRule
from ._types import Availability

__all__ = ["ActorEntry", "Registry", "SerialAllocator"]


class SerialAllocator:
    """Serial numbers unique per server, also across its restarts.

    A serial is ``(unix milliseconds << 16) | counter``, kept strictly increasing: a
    restarted server starts above every serial it issued before (given a clock that does
    not step back by more than the downtime), so an id it gives back to a re-registering
    actor can never also go to a new one. 65,536 ids per millisecond before the counter
    borrows from the next millisecond.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last = 0

    def next(self) -> int:
        """A new serial number."""
        self._last = max(self._last + 1, int(self._clock() * 1000) << 16)
        return self._last

    def observe(self, serial: int) -> None:
        """Note a serial issued earlier (a reclaimed id) so it is never issued again."""
        self._last = max(self._last, serial)


@dataclass(slots=True, eq=False)
class ActorEntry:
    """One registered actor. ``owner`` is the connection it registered on."""

    actr_id: ActrId
    owner: object
    fingerprint: str
    acl: tuple[AclRule, ...]
    availability: Availability
    mailbox_backlog: int
    last_seen: float  # monotonic seconds
    wire_id: object = None  # the protobuf ActrId, built once for discovery answers


class Registry:
    """Registered actors by serial number and by (realm, type); not thread-safe.

    Runs in the server's event loop only; every method is synchronous and O(1) except
    :meth:`expire` (O(actors)).
    """

    def __init__(
        self,
        *,
        heartbeat_interval_s: float,
        missed_heartbeats: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.silence_limit_s = heartbeat_interval_s * missed_heartbeats
        self._clock = clock
        self._by_serial: dict[int, ActorEntry] = {}
        self._by_type: dict[tuple[int, ActrType], dict[int, ActorEntry]] = {}

    def __len__(self) -> int:
        return len(self._by_serial)

    def __iter__(self) -> Iterator[ActorEntry]:
        return iter(list(self._by_serial.values()))

    def get(self, serial: int) -> ActorEntry | None:
        """The entry with this serial number, or None."""
        return self._by_serial.get(serial)

    def add(self, entry: ActorEntry) -> ActorEntry | None:
        """Insert ``entry``; return the entry it replaces (same serial), if any."""
        old = self.remove(entry.actr_id.serial_number)
        self._by_serial[entry.actr_id.serial_number] = entry
        key = (entry.actr_id.realm.realm_id, entry.actr_id.type)
        self._by_type.setdefault(key, {})[entry.actr_id.serial_number] = entry
        return old

    def remove(self, serial: int) -> ActorEntry | None:
        """Remove and return the entry with this serial number, if any."""
        entry = self._by_serial.pop(serial, None)
        if entry is None:
            return None
        key = (entry.actr_id.realm.realm_id, entry.actr_id.type)
        bucket = self._by_type.get(key)
        if bucket is not None:
            bucket.pop(serial, None)
            if not bucket:
                del self._by_type[key]
        return entry

    def touch(
        self, entry: ActorEntry, availability: Availability | None, mailbox_backlog: int | None
    ) -> None:
        """Record a sign of life, with the load a heartbeat reports."""
        entry.last_seen = self._clock()
        if availability is not None:
            entry.availability = availability
        if mailbox_backlog is not None:
            entry.mailbox_backlog = mailbox_backlog

    def is_silent(self, entry: ActorEntry) -> bool:
        """True when ``entry`` has been silent for longer than the limit."""
        return entry.last_seen < self._clock() - self.silence_limit_s

    def bucket(self, realm_id: int, actr_type: ActrType) -> Collection[ActorEntry]:
        """Every entry of one type in one realm, silent ones included (a live view:
        don't register or remove while iterating it)."""
        bucket = self._by_type.get((realm_id, actr_type))
        return bucket.values() if bucket else ()

    def horizon(self) -> float:
        """Entries last seen at or before this monotonic time count as silent."""
        return self._clock() - self.silence_limit_s

    def of_type(self, realm_id: int, actr_type: ActrType) -> list[ActorEntry]:
        """Live entries of one type in one realm (silent ones are skipped even before
        :meth:`expire` removes them)."""
        bucket = self._by_type.get((realm_id, actr_type))
        if not bucket:
            return []
        horizon = self._clock() - self.silence_limit_s
        return [e for e in bucket.values() if e.last_seen >= horizon]

    def expire(self) -> list[ActorEntry]:
        """Remove and return every entry silent for longer than the limit."""
        horizon = self._clock() - self.silence_limit_s
        dead = [e for e in self._by_serial.values() if e.last_seen < horizon]
        for entry in dead:
            self.remove(entry.actr_id.serial_number)
        return dead
