"""The two ``prctl`` calls that tie a node's processes to their supervisor (Linux only;
elsewhere they do nothing and say so by returning False), how a process tells that
another one (its supervisor, a ring's writer, a Shell's node) is gone, and how the
processes of a process group (an actor instance's) are found and ended."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies."""
    return _prctl(_PR_SET_PDEATHSIG, sig)


def set_child_subreaper() -> bool:
    """Make this process the parent of any descendant whose own parent exits.

    The supervisor sets it so that workers forked by the forkserver (which double-forks)
    become its children: it reaps them, reads their exit codes, and they can watch it.
    """
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def supervisor_gone(supervisor_pid: int) -> bool:
    """True once the supervisor is dead or dying.

    getppid() alone is not enough: SIGKILL ends the supervisor's threads one by one, its
    main thread first, and PR_SET_PDEATHSIG fires then, while we are reparented only once
    the last thread (ZeroMQ's I/O threads, asyncio's child watchers) is gone. Meanwhile
    the main thread is a zombie, which /proc shows.
    """
    return os.getppid() != supervisor_pid or process_gone(supervisor_pid)


def process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs: none exists, or it is a zombie (dead, not yet
    reaped by its parent, which may be a shell that never waits)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")


def child_pids() -> set[int]:
    """This process's children (``/proc/self/task/*/children``: adopted ones too)."""
    children: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                children.update(int(pid) for pid in f.read().split())
        except OSError:
            continue  # the thread ended meanwhile
    return children


def group_members(pgid: int) -> set[int]:
    """The live processes of process group ``pgid`` (from ``/proc``; zombies left out:
    they are dead, only not reaped yet)."""
    members: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.add(int(entry))
    return members


def end_group_members(pgid: int, grace_s: float, *, spare: int | None = None) -> list[int]:
    """SIGTERM every process of group ``pgid`` but ``spare``, and SIGKILL those left
    after ``grace_s``; return the pids found (see :func:`end_processes`)."""
    try:
        os.killpg(pgid, 0)  # the usual answer, and cheaper than reading /proc: none left
    except ProcessLookupError:
        return []
    return end_processes(lambda: group_members(pgid) - {spare}, grace_s)


def processes_with_environment(entry: str) -> set[int]:
    """The live processes (but this one) whose environment, as they started, holds
    ``entry`` (``NAME=value``): children inherit it. Only those whose environment we may
    read (our user's, or all as root)."""
    return {
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit() and int(name) != os.getpid() and environment_holds(int(name), entry)
    }


def environment_holds(pid: int, entry: str) -> bool:
    """Whether process ``pid``'s environment, as it started, holds ``entry``; False when
    it is gone, or is another user's (a zombie's is empty)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry.encode() in f.read().split(b"\0")
    except OSError:
        return False


def end_processes(find: Callable[[], set[int]], grace_s: float) -> list[int]:
    """SIGTERM the processes ``find()`` lists, and SIGKILL those it still lists after
    ``grace_s``; return the pids found. Blocks, looking every 20 ms meanwhile (one may
    start another as it ends)."""
    found = find()
    if not found:
        return []
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        left = find()
        for pid in left - found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        found |= left
        if not left:
            return sorted(found)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(found)
