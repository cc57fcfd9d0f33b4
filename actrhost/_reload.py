"""What a rolling restart may take from an edited config file.

``actrhost restart`` reads the node's config file again, so that new code can come with
the settings it needs. It takes an actor's own table (handler, settings, restart policy,
concurrency, mailbox, ACL, service schema) for the actors it restarts, and what only the
gateway was built from (``[webrtc]``, ``[signaling] ca_file``), which a restart of the
gateway applies. Everything else that other processes or other nodes were built from
stays as the node started: the other node-wide sections, the actors' names, types and
instance counts. An edit there refuses the restart, naming it; the node must be
restarted to apply it. docs/node.md, "Supervision", has the list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Collection

from ._config import Config, load_config
from ._errors import ConfigError
from ._slot import RestartRefused
from ._worker_start import child_environment

#: How long ``actrhost check`` of the edited file may take (it imports every handler).
CHECK_TIMEOUT_S = 60.0


async def read_edited_config(current: Config, restarted: Collection[str]) -> Config | None:
    """The node's config file as it is now, checked as ``actrhost check`` does (in a
    fresh interpreter: the handlers are imported, settings checked), or None when it
    says what ``current`` says. Raises ``RestartRefused`` (400) naming the first problem,
    or an edit that a restart of the actors ``restarted`` (and of the gateway) cannot
    apply."""
    try:
        edited = load_config(current.path)
    except ConfigError as exc:
        raise RestartRefused(400, f"nothing restarted: config error: {exc}") from None
    if edited == current:
        return None
    problem = await _check_in_subprocess(current)
    if problem is not None:
        raise RestartRefused(400, f"nothing restarted: {problem}")
    changes = unappliable_changes(current, edited, restarted)
    if changes:
        raise RestartRefused(
            400,
            f"nothing restarted: {current.path}: {'; '.join(changes)}: "
            "a rolling restart cannot apply this, restart the node (or undo the edit)",
        )
    return edited


def _which_keys(before: object, after: object) -> str:
    """`` (key, key)`` naming the fields of two dataclass tables that differ, or ""."""
    if not (dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after)):
        return ""
    keys = [
        field.name
        for field in dataclasses.fields(before)
        if getattr(before, field.name) != getattr(after, field.name, None)
    ]
    return f" ({', '.join(keys)})" if keys else ""


def unappliable_changes(current: Config, edited: Config, restarted: Collection[str]) -> list[str]:
    """The edits from ``current`` to ``edited`` that restarting the actors ``restarted``
    and the gateway cannot apply, each as a short phrase."""
    changes = []
    for section, before, after in (
        ("[node]", current.node, edited.node),
        ("[signaling]", _without_ca_file(current), _without_ca_file(edited)),
        ("[shm]", current.shm, edited.shm),
        ("[dependencies]", current.dependencies, edited.dependencies),
    ):
        if before != after:
            changes.append(f"{section} changed{_which_keys(before, after)}")
    before_names = {a.name for a in current.actors}
    after_names = {a.name for a in edited.actors}
    if after_names - before_names:
        changes.append(f"actor(s) added: {', '.join(sorted(after_names - before_names))}")
    if before_names - after_names:
        changes.append(f"actor(s) removed: {', '.join(sorted(before_names - after_names))}")
    # Each one's own edits too, beside those: the user fixed one, ran the restart again,
    # and was refused for the next (QA).
    for old in current.actors:
        if old.name not in after_names:
            continue
        new = edited.actor(old.name)
        if new == old:
            continue
        where = f"actor {old.name!r}"
        if old.name not in restarted:
            changes.append(f"{where} changed but is not restarted")
        if new.type != old.type:
            changes.append(f"{where}: type changed")
        if new.instances != old.instances:
            changes.append(f"{where}: instances changed ({old.instances} -> {new.instances})")
    return changes


def gateway_needs_restart(current: Config, edited: Config) -> bool:
    """Whether applying ``edited`` needs a new gateway: it changes what the gateway was
    built from (``[webrtc]``, the CA file it trusts signaling with, what it registered
    for an actor: ACL and service schema; the gateway also checks callers against ACLs)."""
    if current.signaling is None:
        return False  # no gateway
    if current.webrtc != edited.webrtc or current.signaling != edited.signaling:
        return True
    return any(
        (a.acl, a.service_schema) != (edited.actor(a.name).acl, edited.actor(a.name).service_schema)
        for a in current.actors
    )


def _without_ca_file(config: Config) -> object:
    """``[signaling]`` without the one key a restart of the gateway can apply."""
    if config.signaling is None:
        return None
    return dataclasses.replace(config.signaling, ca_file=None)


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
