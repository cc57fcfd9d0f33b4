"""POSIX shared-memory segments without ``multiprocessing.shared_memory``.

Python 3.11's ``multiprocessing.shared_memory.SharedMemory`` registers every segment it
creates *or attaches* with ``multiprocessing.resource_tracker``. When the attaching process
exits, the tracker unlinks the segment (premature unlink: the creator's peers can no longer
attach) and prints "leaked shared_memory objects" warnings (bpo-38119 / gh-82300; the
``track=False`` switch only arrived in 3.13). This module therefore never imports
``multiprocessing``: a segment is a file in ``/dev/shm`` opened with :func:`os.open`
(``O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC``, mode ``0o600``, exactly what glibc's
``shm_open`` does), sized with ``ftruncate`` + ``posix_fallocate`` and mapped with
:mod:`mmap`. Nothing is unlinked implicitly: not on :meth:`Segment.close`, not on garbage
collection, not at exit. Names are removed only by :meth:`Segment.unlink` or
:func:`unlink_prefix` (the supervisor's sweep after a crash and at shutdown).

Linux only (``/dev/shm`` is a tmpfs there); :func:`unlink_prefix` needs to list the
directory anyway, which POSIX ``shm_open`` offers no way to do.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import stat
from types import TracebackType

from .._errors import ClosedResourceError

__all__ = [
    "SEGMENT_NAME_PREFIX",
    "SHM_DIR",
    "Segment",
    "list_prefix",
    "node_segment_prefix",
    "segment_name",
    "unlink_prefix",
]

logger = logging.getLogger(__name__)

#: Where POSIX shared memory lives on Linux.
SHM_DIR = "/dev/shm"

#: Every segment name actrhost makes starts with this; :func:`unlink_prefix` refuses any
#: prefix that does not, so a bug cannot sweep away other programs' segments.
SEGMENT_NAME_PREFIX = "actrh-"

# NAME_MAX on Linux: the longest single path component.
_NAME_MAX = 255
# A segment name is one path component of "safe" characters; it may not start with "."
# (hidden files, "." and ".."). Stricter than the kernel, on purpose: names are built
# from node prefixes and actor ids and show up in `ls /dev/shm` and in logs.
_NAME_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\Z")
# One part of a name built by segment_name(): no "-" (the separator), so parts never
# run into each other and "a" is never a prefix-match for "a-b".
_PART_RE = re.compile(r"[A-Za-z0-9_.+]+\Z")

_MODE = 0o600


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid segment name, else raise :class:`ValueError`.

    Valid: 1-255 characters of ``A-Z a-z 0-9 _ . + -``, not starting with ``.``; no ``/``,
    so it is a single path component.
    """
    if not isinstance(name, str):
        raise TypeError(f"segment name must be str, not {type(name).__name__}")
    if not name or len(name) > _NAME_MAX or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid shared-memory segment name {name!r}: need 1-{_NAME_MAX} characters "
            "of A-Z a-z 0-9 _ . + -, not starting with '.'"
        )
    return name


def _part(value: str | int) -> str:
    if isinstance(value, bool):  # bool is an int; "True" as a name part is surely a bug
        raise TypeError("segment name part must be str or int, not bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"segment name part must not be negative: {value}")
        return format(value, "x")
    if not isinstance(value, str) or not _PART_RE.match(value):
        raise ValueError(
            f"invalid segment name part {value!r}: need 1+ characters of A-Z a-z 0-9 _ . +"
        )
    return value


def node_segment_prefix(node_prefix: str) -> str:
    """The prefix shared by every segment of one node: ``"actrh-<node_prefix>-"``.

    Pass it to :func:`unlink_prefix` to remove exactly that node's segments (the trailing
    ``-`` keeps node ``"ab"`` from matching node ``"abc"``).
    """
    return f"{SEGMENT_NAME_PREFIX}{_part(node_prefix)}-"


def segment_name(node_prefix: str, *parts: str | int) -> str:
    """Build a segment name ``"actrh-<node_prefix>-<part>-<part>..."``.

    Parts are strings of ``A-Z a-z 0-9 _ . +`` (no ``-``, the separator) or non-negative
    ints, written in lowercase hex to keep names short (a 64-bit serial number takes at
    most 16 characters). Raises :class:`ValueError` when a part is invalid or the name
    would be longer than 255 characters.
    """
    if not parts:
        raise ValueError("segment_name needs at least one part after the node prefix")
    name = node_segment_prefix(node_prefix) + "-".join(_part(p) for p in parts)
    return validate_name(name)


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, validate_name(name))


class Segment:
    """One mapped POSIX shared-memory segment.

    Use :meth:`create` (new name, fails if it exists) or :meth:`attach` (existing name);
    there is no public constructor. ``buf`` is a writable :class:`memoryview` over the whole
    segment. None of the methods block beyond the system calls they make.

    Lifetime: :meth:`close` unmaps (idempotent, never raises for views still in use),
    :meth:`unlink` removes the name. Closing never unlinks, and unlinking never unmaps:
    mappings of an unlinked segment stay valid until they are closed.
    """

    __slots__ = ("_buf", "_closed", "_inode", "_mmap", "name", "size_bytes")

    name: str
    size_bytes: int

    def __init__(self, name: str, size_bytes: int, mm: mmap.mmap, inode: int) -> None:
        # Private: use Segment.create() or Segment.attach().
        self.name = name
        self.size_bytes = size_bytes
        self._mmap: mmap.mmap | None = mm
        self._buf: memoryview | None = memoryview(mm)
        self._inode = inode
        self._closed = False

    @classmethod
    def create(cls, name: str, size_bytes: int) -> Segment:
        """Create segment ``name`` of ``size_bytes`` bytes, mode 0600, zero-filled, and map it.

        The memory is reserved up front with ``posix_fallocate``, so a full ``/dev/shm``
        fails here with :class:`OSError` (``ENOSPC``) instead of killing the process with
        ``SIGBUS`` on first touch. Raises :class:`FileExistsError` if the name exists,
        :class:`ValueError` for a bad name or size. On any failure nothing is left behind.
        """
        path = _path(name)
        if not isinstance(size_bytes, int) or size_bytes <= 0:
            raise ValueError(
                f"segment {name}: size_bytes must be a positive int, got {size_bytes!r}"
            )
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, _MODE)
        try:
            # os.open's mode is filtered by the umask; set it exactly (umask can only
            # remove bits, but an odd umask like 0o277 would make it read-only).
            os.fchmod(fd, _MODE)
            os.ftruncate(fd, size_bytes)
            try:
                os.posix_fallocate(fd, 0, size_bytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # A filesystem without fallocate: keep the sparse file.
            mm = mmap.mmap(fd, size_bytes, flags=mmap.MAP_SHARED)
            inode = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            raise
        os.close(fd)  # the mapping keeps the memory; the fd is no longer needed
        logger.debug("Segment(%s) created, %d bytes", name, size_bytes)
        return cls(name, size_bytes, mm, inode)

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map the existing segment ``name`` read-write.

        Raises :class:`FileNotFoundError` if it does not exist, :class:`PermissionError` if
        it is not a regular file owned by this user (someone else's file in the shared
        ``/dev/shm`` is never trusted), :class:`ValueError` if it is empty.
        """
        path = _path(name)
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise PermissionError(
                    errno.EPERM, f"segment {name} is not a regular file owned by uid {os.geteuid()}"
                )
            if st.st_size <= 0:
                raise ValueError(f"segment {name} is empty (size 0)")
            mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        logger.debug("Segment(%s) attached, %d bytes", name, st.st_size)
        return cls(name, st.st_size, mm, st.st_ino)

    @property
    def buf(self) -> memoryview:
        """Writable memoryview of the whole segment. Raises ClosedResourceError after close."""
        if self._buf is None:
            raise ClosedResourceError(f"Segment({self.name}) is closed")
        return self._buf

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def path(self) -> str:
        return os.path.join(SHM_DIR, self.name)

    def is_linked(self) -> bool:
        """True if the name still refers to this segment (not unlinked, not replaced).

        One ``stat`` call. Lets an owner notice that a sweep (:func:`unlink_prefix`) removed
        its segment while it still had it mapped.
        """
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return st.st_ino == self._inode

    def close(self) -> None:
        """Unmap. Idempotent; never unlinks; does not raise for views still in use.

        If memoryviews (or numpy arrays) derived from :attr:`buf` are still alive, the
        mapping cannot be removed yet (``mmap.close`` would raise :class:`BufferError`).
        Then the segment is marked closed, its own references are dropped, and the kernel
        mapping stays until the last such view is garbage collected: those views stay valid
        memory, never a dangling pointer. A later :meth:`close` is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        buf, self._buf = self._buf, None
        mm, self._mmap = self._mmap, None
        if buf is not None:
            try:
                buf.release()
            except BufferError:
                pass  # something holds a buffer export of buf itself: deferred, as below
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                logger.debug(
                    "Segment(%s) closed with views still exported; unmapped when they are freed",
                    self.name,
                )

    def unlink(self, *, missing_ok: bool = False) -> None:
        """Remove the name from ``/dev/shm``. Existing mappings (here and elsewhere) stay valid.

        Raises :class:`FileNotFoundError` if the name is gone, unless ``missing_ok``.
        Works after :meth:`close` too.
        """
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def __enter__(self) -> Segment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Segment ({self.name}) {self.size_bytes} bytes, {state}>"


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str) or not prefix.startswith(SEGMENT_NAME_PREFIX):
        raise ValueError(
            f"refusing prefix {prefix!r}: actrhost only sweeps names starting with "
            f"{SEGMENT_NAME_PREFIX!r}"
        )
    if "/" in prefix or "\0" in prefix or len(prefix) > _NAME_MAX:
        raise ValueError(f"invalid segment prefix {prefix!r}")


def list_prefix(prefix: str) -> list[str]:
    """Names in ``/dev/shm`` starting with ``prefix`` owned by this user, sorted.

    ``prefix`` must start with ``"actrh-"`` (:data:`SEGMENT_NAME_PREFIX`).
    """
    _check_prefix(prefix)
    uid = os.geteuid()
    names = []
    with os.scandir(SHM_DIR) as entries:
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid == uid:
                names.append(entry.name)
    return sorted(names)


def unlink_prefix(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; return how many were removed.

    The supervisor's sweep: at shutdown, after a worker died, and at the next start after a
    crash. Only regular files owned by this user are touched; a name that vanishes
    meanwhile (its owner unlinked it) is not counted. ``prefix`` must start with
    ``"actrh-"``; use :func:`node_segment_prefix` for one node's segments. Processes that
    still have a removed segment mapped keep using their memory until they unmap it.
    """
    removed = 0
    for name in list_prefix(prefix):
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            continue
        removed += 1
    if removed:
        logger.debug("unlink_prefix(%s): removed %d segment(s)", prefix, removed)
    return removed
