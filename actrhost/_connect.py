"""Finding a running node and attaching a :class:`~._shell.Shell` to it: from a config
file (even one that does not parse while someone edits it) or a control endpoint, at once
(:func:`connect`) or once every actor runs (:func:`connect_when_running`)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._directory import ActorState
from ._errors import ConfigError, Unavailable
from ._linux import process_gone
from ._rundir import PID_FILE
from ._shell import Shell

if TYPE_CHECKING:
    from ._config import Config


def connect(config_or_endpoint: str | os.PathLike[str]) -> Shell:
    """A Shell for the node of a config file, or at a control endpoint (``ipc://…``).

    Use as ``async with actrhost.connect("node.toml") as shell:``. Entering raises
    ``Unavailable`` when no node answers. A config file that does not parse (being
    edited, say) still finds a node that runs from it, which then goes by the copy it
    started with; with no such node it raises ``ConfigError``.
    """
    text = os.fspath(config_or_endpoint)
    if text.startswith("ipc://"):
        return Shell(text)
    if "://" in text:
        raise ValueError(f"unsupported control endpoint {text!r}: use a config path or ipc://")
    from ._config import load_config
    from ._rundir import control_endpoint, is_live, run_dir_for

    try:
        config = load_config(text)
    except ConfigError:
        started = _as_started(text)
        if started is None:
            raise
        config = started
    else:
        if config.node.run_dir is None and not is_live(run_dir_for(config)):
            # Its [node] name was edited while the node ran: the node's run dir has the
            # name it started with (the CLI lost the node: QA).
            config = _as_started(text) or config
    return Shell(
        control_endpoint(run_dir_for(config)),
        threshold_bytes=config.shm.threshold_bytes,
        ring_bytes=config.shm.ring_bytes,
        max_message_bytes=config.node.max_message_bytes,
    )


def _as_started(config_path: str) -> Config | None:
    """The config that the running node started from ``config_path`` goes by (a copy
    of the file as it was then), or None when no node of that file runs."""
    from ._config import load_config
    from ._rundir import CONFIG_SNAPSHOT, live_run_dir_of_file

    run_dir = live_run_dir_of_file(config_path)
    try:
        snapshot = (run_dir / CONFIG_SNAPSHOT).read_bytes() if run_dir else None
    except OSError:
        snapshot = None  # it stopped meanwhile
    return None if snapshot is None else load_config(config_path, data=snapshot)


async def connect_when_running(
    config_or_endpoint: str | os.PathLike[str],
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    supervisor_pid: int | None = None,
) -> Shell:
    """An attached Shell once the node runs every actor instance, waiting for the node
    to start if need be (``actrhost wait``, ``actrhost.testing``).

    Raises ``Unavailable`` when that takes longer than ``timeout`` seconds, and at once
    when ``alive()`` (the caller's check on the node's process, if it has one) turns
    false or an instance has failed for good. The caller closes the Shell.
    With ``supervisor_pid``, only the node that process supervises counts: another node
    already running from the config (which the caller's will refuse to replace) is not
    attached to, so the caller learns of its own node's exit instead.
    """
    deadline = time.monotonic() + timeout
    first = connect(config_or_endpoint)  # reads the config once
    socket_path = Path(first.control_endpoint.removeprefix("ipc://"))
    shell: Shell | None = None
    seen_alive: int | None = None  # a supervisor seen running while we waited
    try:
        while alive is None or alive():
            if shell is None:
                pid = _supervisor_of(socket_path.parent)
                if supervisor_pid is not None and pid != supervisor_pid:
                    # Another node's (the caller's will refuse to start beside it): its
                    # exit is not our node's (QA: "its supervisor exited", of the other).
                    pid = None
                if pid is not None and not process_gone(pid):
                    seen_alive = pid
                elif seen_alive is not None and process_gone(seen_alive):
                    # It died before we could attach (starting): it will not run.
                    raise Unavailable(
                        f"node at {config_or_endpoint} is gone: its supervisor "
                        f"(pid {seen_alive}) exited"
                    )
            # Attach only once the supervisor listens: else each try waits for it.
            if shell is None and socket_path.exists():
                candidate = Shell(
                    first.control_endpoint,
                    threshold_bytes=first.threshold_bytes,
                    ring_bytes=first.ring_bytes,
                    max_message_bytes=first.max_message_bytes,
                )
                try:
                    await candidate.open()
                    shell = candidate
                except Unavailable:
                    pass  # not listening yet (open() closed what it made)
                if shell is not None and supervisor_pid not in (None, shell.supervisor_pid):
                    await shell.aclose()  # another node's: wait for ours (or its exit)
                    shell = None
            if shell is not None and shell.node_gone is not None:
                raise Unavailable(f"{shell.node_gone.message}, at {config_or_endpoint}")
            if shell is not None:
                entries = shell.directory.entries()  # kept up to date by the supervisor
                # Given up on after a clean exit (a one-shot job, transient or temporary,
                # done): finished, not failed, as /readyz counts it.
                done = [e for e in entries if e.given_up and e.state is ActorState.STOPPED]
                ended = [
                    f"{e.name} ({e.actr_id}) {e.state.value}"
                    for e in entries
                    if e.given_up and e not in done
                ]
                if ended:  # given up on (restart limit or policy): it will never run
                    raise Unavailable(
                        f"{', '.join(ended)} and will not be restarted, at "
                        f"{config_or_endpoint} (the node's log says why)"
                    )
                if entries and all(e.state is ActorState.RUNNING or e in done for e in entries):
                    ready, shell = shell, None
                    return ready
            if time.monotonic() >= deadline:
                what = "no node answering"
                if shell is not None:  # say which (QA: "not all" alone)
                    waiting = [
                        f"{e.name}#{e.index} {e.state.value}"
                        for e in shell.directory.entries()
                        if e.state is not ActorState.RUNNING and not e.given_up
                    ]
                    what = f"not all its actors running ({', '.join(waiting) or 'none listed'})"
                raise Unavailable(f"{what} after {timeout:g} s at {config_or_endpoint}")
            await asyncio.sleep(0.05)
        raise Unavailable(f"the node of {config_or_endpoint} exited before it ran")
    finally:
        if shell is not None:
            await shell.aclose()


def _supervisor_of(run_dir: Path) -> int | None:
    """The pid in a run dir's pid file (None while there is none, or it is being written)."""
    try:
        return int((run_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
