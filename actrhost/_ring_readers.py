"""The shared-memory rings one process reads, and when it lets them go.

A ring's reader attaches on the first descriptor and removes the ring's name at once:
both ends hold the mapping then and nobody else may open it, so the segment lives
exactly as long as its two processes, however they end (docs/node.md, "Shutdown and
cleanup"). The other half of that promise is here too: a reader must not keep the
mapping of a writer that is gone, or its memory (64 MiB by default) stays taken for as
long as the reader runs. Rings of a worker that exited are closed when the directory
says so (:meth:`RingReaders.forget_writer`); rings of a Shell (a `actrhost load`, a
script) are closed by a periodic sweep once the Shell closed its end or its process is
dead, and every record that got here has been released (records held behind a slow
callback keep their ring; see :meth:`RingReaders.arrived`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from ._errors import ActrError, BadRequest, Unavailable
from ._linux import process_gone
from .shm import Descriptor, RingReader, node_segment_prefix

log = logging.getLogger(__name__)

#: How often the rings of gone Shells are looked for. A ring whose writer is gone is
#: closed at the first sweep that finds every record released, or at the second one
#: that finds no progress (records whose descriptors were lost with the writer).
SWEEP_INTERVAL_S = 2.0


class RingOfAnotherProcess(BadRequest):
    """A descriptor for a ring made for another reader: mostly this instance's previous
    process (chunks sent to a worker that was killed reach its successor, which binds
    the same address)."""


class RingReaders:
    """The rings this process reads, by name (see the module docstring)."""

    def __init__(self, node_prefix: str) -> None:
        self._prefix = node_segment_prefix(node_prefix)
        # Every ring to us ends in our pid (``_streams.ring_name``): one that does not is
        # another reader's, which attaching would take from it (the name is removed).
        self._suffix = f"-{os.getpid():x}"
        self._readers: dict[str, RingReader] = {}
        # Ring name -> records released when a sweep first found its writer gone.
        self._stalled: dict[str, int] = {}
        # Ring name -> descriptors this process holds (arrived, not retired yet).
        self._held: dict[str, int] = {}
        # Rings whose writer is gone but with descriptors held: closed at the last retire.
        self._orphaned: set[str] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._sweeping = True  # see stop_sweeping

    def __len__(self) -> int:
        return len(self._readers)

    def get(self, ring: str) -> RingReader:
        """The reader of ``ring``, attached (and the name removed) on first use.

        Raises ``BadRequest`` for a ring of another node, ``Unavailable`` for one that
        does not exist (its writer is gone, or this process let it go already).
        """
        reader = self._readers.get(ring)
        if reader is not None:
            return reader
        self._check_node(ring)
        try:
            reader = RingReader.attach(ring)
        except OSError as exc:
            raise Unavailable(f"cannot attach ring {ring}: {exc}") from None
        except Unavailable as exc:
            raise Unavailable(f"cannot attach ring {ring}: {exc.message}") from None
        # The supervisor's clean-up by name then only has rings still in flight to do.
        reader.unlink(missing_ok=True)
        self._readers[ring] = reader
        if self._sweep is None and self._sweeping:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(SWEEP_INTERVAL_S, self._sweep_due)
        return reader

    def stop_sweeping(self) -> None:
        """Keep every ring open until :meth:`close`: a stopping gateway still reads the
        descriptors queued in its socket (it paused reading while its links were full),
        whose writers closed their end when the directory said it was stopping. The sweep
        took that for a writer gone and closed rings with those records unread: 255 chunks
        of a stream lost in one graceful `restart --gateway` (QA, 2026-12-03)."""
        self._sweeping = False
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def arrived(self, descriptor: Descriptor) -> None:
        """This process holds ``descriptor`` until :meth:`retire`: its ring stays open
        even if the writer is gone meanwhile (a slow callback still has it queued).

        Raises ``BadRequest`` for a ring of another node (before anything is held).
        """
        self._check_node(descriptor.ring)
        with contextlib.suppress(ActrError):
            self.get(descriptor.ring)  # attach (and drop the name) now, not when read
        self._held[descriptor.ring] = self._held.get(descriptor.ring, 0) + 1

    def retire(self, descriptor: Descriptor) -> None:
        """Release the record of a descriptor that :meth:`arrived` (in any order)."""
        held = self._held.get(descriptor.ring, 0)
        if held <= 1:
            self._held.pop(descriptor.ring, None)
        else:
            self._held[descriptor.ring] = held - 1
        reader = self.get(descriptor.ring)
        reader.retire(descriptor)
        if descriptor.ring in self._orphaned and descriptor.ring not in self._held:
            self._drop_if_drained(descriptor.ring, reader)

    def forget_writer(self, tag: str) -> None:
        """Let go of the rings written by ``tag`` (an instance's serial in hex): its
        process is gone. A ring with records not yet released stays open until they are:
        chunks queued behind a slow callback, or one running, and descriptors still in
        this process's socket (it stops reading while its backlog is full) are delivered,
        and a payload stays valid until its callback returns. Records whose descriptors
        never left the writer are given up by the sweep, which finds no progress."""
        for name, reader in list(self._readers.items()):
            if writer_serial(name[len(self._prefix) :]) != tag:
                continue
            self._orphaned.add(name)
            if name not in self._held:
                self._drop_if_drained(name, reader)

    def _drop_if_drained(self, name: str, reader: RingReader) -> None:
        stats = reader.statistics()
        if stats.records_released == stats.records_committed:
            self._drop(name)

    def close(self) -> None:
        """Close every ring (the process is stopping)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for name in list(self._readers):
            self._drop(name)

    def _check_node(self, ring: str) -> None:
        # Attaching unlinks the name: never do that to a ring not made for this process.
        if not ring.startswith(self._prefix):
            raise BadRequest(f"ring {ring!r} does not belong to this node")
        if not ring.endswith(self._suffix):
            raise RingOfAnotherProcess(f"ring {ring!r} is for another process")

    def _drop(self, name: str) -> None:
        self._orphaned.discard(name)
        self._stalled.pop(name, None)
        self._held.pop(name, None)
        self._readers.pop(name).close()

    def _sweep_due(self) -> None:
        self._sweep = None
        self.sweep()
        if self._readers and self._sweeping:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(SWEEP_INTERVAL_S, self._sweep_due)

    def sweep(self) -> None:
        """Close the rings whose writer is gone (every :data:`SWEEP_INTERVAL_S` while any
        ring is open): at once when every record is released, else when a second sweep
        finds no progress. Rings with a descriptor held here stay."""
        for name, reader in list(self._readers.items()):
            if name in self._held or not (
                name in self._orphaned or self._writer_gone(name, reader)
            ):
                self._stalled.pop(name, None)
                continue
            stats = reader.statistics()
            released = stats.records_released
            if released == stats.records_committed or self._stalled.get(name) == released:
                log.debug("closing ring %s: its writer is gone", name)
                self._drop(name)
            else:
                self._stalled[name] = released

    def _writer_gone(self, name: str, reader: RingReader) -> bool:
        """The writer closed its end, or it is a Shell whose process is dead.

        A worker's rings are left to :meth:`forget_writer`: the directory knows when a
        worker is gone.
        """
        return reader.writer_closed or shell_gone(name[len(self._prefix) :].split("-", 1)[0])


def writer_serial(ring_rest: str) -> str:
    """The writer's instance serial (hex) in a ring name after the node prefix: the
    writer part is ``<serial>.<pid>`` (``_streams.ring_name``); a Shell's, ``s<pid>.<token>``,
    never equals a serial."""
    return ring_rest.split("-", 1)[0].split(".", 1)[0]


def shell_gone(writer_tag: str) -> bool:
    """True for the tag of a Shell (``s<pid in hex>.<token>``) whose process is gone."""
    if not writer_tag.startswith("s"):
        return False
    with contextlib.suppress(ValueError):
        return process_gone(int(writer_tag[1:].split(".", 1)[0], 16))
    return False
