"""What a rolling restart may take from an edited config file.

``actrhost restart`` reads the node's config file again, so that new code can come with
the settings it needs. It takes an actor's own table (handler, settings, restart policy,
concurrency, mailbox, ACL) for the actors it restarts. Everything that other processes
or other nodes were built from stays as the node started: the node-wide sections, the
actors' names, types and instance counts, and (with signaling) what the gateway
registered for each actor. An edit there refuses the restart, naming it; the node must
be restarted to apply it. docs/node.md, "Supervision", has the list.
"""

from __future__ import annotations

import asyncio
import sys

from ._config import Config, load_config
from ._errors import ConfigError
from ._slot import RestartRefused
from ._worker_start import child_environment

#: How long ``actrhost check`` of the edited file may take (it imports every handler).
CHECK_TIMEOUT_S = 60.0


async def read_edited_config(current: Config, names: list[str]) -> Config | None:
    """The node's config file as it is now, checked as ``actrhost check`` does (in a
    fresh interpreter: the handlers are imported, settings checked), or None when it
    says what ``current`` says. Raises ``RestartRefused`` (400) naming the first problem,
    or an edit that a restart of the actors ``names`` (all when empty) cannot apply."""
    try:
        edited = load_config(current.path)
    except ConfigError as exc:
        raise RestartRefused(400, f"nothing restarted: config error: {exc}") from None
    if edited == current:
        return None
    problem = await _check_in_subprocess(current)
    if problem is not None:
        raise RestartRefused(400, f"nothing restarted: {problem}")
    changes = unappliable_changes(current, edited, names)
    if changes:
        raise RestartRefused(
            400,
            f"nothing restarted: {current.path}: {'; '.join(changes)}: "
            "a rolling restart cannot apply this, restart the node (or undo the edit)",
        )
    return edited


def unappliable_changes(current: Config, edited: Config, names: list[str]) -> list[str]:
    """The edits from ``current`` to ``edited`` that restarting the actors ``names``
    (all when empty) cannot apply, each as a short phrase."""
    changes = []
    for section, before, after in (
        ("[node]", current.node, edited.node),
        ("[signaling]", current.signaling, edited.signaling),
        ("[webrtc]", current.webrtc, edited.webrtc),
        ("[shm]", current.shm, edited.shm),
        ("[dependencies]", current.dependencies, edited.dependencies),
    ):
        if before != after:
            changes.append(f"{section} changed")
    before_names = [a.name for a in current.actors]
    after_names = [a.name for a in edited.actors]
    if sorted(before_names) != sorted(after_names):
        added = sorted(set(after_names) - set(before_names))
        removed = sorted(set(before_names) - set(after_names))
        if added:
            changes.append(f"actor(s) added: {', '.join(added)}")
        if removed:
            changes.append(f"actor(s) removed: {', '.join(removed)}")
        return changes
    for old in current.actors:
        new = edited.actor(old.name)
        if new == old:
            continue
        where = f"actor {old.name!r}"
        if names and old.name not in names:
            changes.append(f"{where} changed but is not restarted")
        if new.type != old.type:
            changes.append(f"{where}: type changed")
        if new.instances != old.instances:
            changes.append(f"{where}: instances changed ({old.instances} -> {new.instances})")
        if current.signaling is not None:
            # The gateway registered both with signaling, which checks relays against them.
            if new.acl != old.acl:
                changes.append(f"{where}: acl changed on a node with signaling")
            if new.service_schema != old.service_schema:
                changes.append(f"{where}: service schema changed on a node with signaling")
    return changes


async def _check_in_subprocess(config: Config) -> str | None:
    """Run ``actrhost check`` on the config file; its error line, or None when it passes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actrhost",
        "check",
        str(config.path),
        env=child_environment(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), CHECK_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"`actrhost check {config.path}` did not finish in {CHECK_TIMEOUT_S:g} s"
    if process.returncode == 0:
        return None
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1].removeprefix("actrhost: ") if lines else f"exit code {process.returncode}"
