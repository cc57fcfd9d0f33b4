"""``actrhost restart``: the supervisor's rolling restart of actors and of the gateway.

The steps, each of which can refuse the restart before anything stops: the config file
is read again (``_reload``), then a fresh forkserver imports the handler modules from
disk. Then each instance in turn is announced as stopping, stopped gracefully and
started again, the next one once it runs; last the gateway, if asked for, if the edited
config changes what it was built from, or if a ``.proto`` file it registered changed.
docs/node.md, "Supervision".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from . import _control as control
from . import _rundir as rundir
from ._config import Config
from ._directory import ActorState
from ._reload import gateway_needs_restart, read_edited_config
from ._slot import KILL_AFTER_S, RestartRefused, Slot, stop_limit_s
from ._worker_start import reimport_handlers

if TYPE_CHECKING:
    from ._supervisor import Supervisor

log = logging.getLogger(__name__)

#: How long a rolling restart waits for each successor to run (its on_start included).
RESTART_START_TIMEOUT_S = 30.0
#: Between announcing an instance as stopping and stopping it: callers that pick an
#: instance by type (``ctx.discover``, Shell calls by type or name) hear of it and move on
#: to the others, while the instance still answers what reaches it meanwhile.
RESTART_DRAIN_S = 0.25
#: What ``restarted`` names the gateway by.
GATEWAY_LABEL = "gateway"


async def rolling_restart(
    supervisor: Supervisor, names: list[str], *, gateway_only: bool = False
) -> list[str]:
    """Restart the instances of the actors ``names`` (all when empty; none with
    ``gateway_only``) one at a time, then the gateway if ``gateway_only`` or if the
    edited config needs it. Returns the labels restarted (``["echo#0", "gateway"]``).
    Raises ``RestartRefused``."""
    sup = supervisor
    slots = [s for s in sup._slots if not names or s.config.name in names]
    if gateway_only:
        if sup.gateway is None:
            raise RestartRefused(400, "this node has no gateway (its config has no [signaling])")
        slots = []
    current = sup.config
    # Children the reaper does not know start here (`actrhost check`, a throwaway or a
    # new forkserver, a new gateway): it must not reap them (asyncio would then see exit
    # code 255), so orphans wait until the restart is done.
    sup._checking_config = True
    try:
        edited = await read_edited_config(current, {s.config.name for s in slots})
        if edited is not None:
            use_config(sup, edited)
        if slots:
            await _import_handlers_again(sup, current if edited is not None else None)
        try:
            for slot in slots:
                await _restart_one(sup, slot)
        except RestartRefused as exc:
            await _roll_back(sup, current if edited is not None else None, exc)
        if sup._forkserver is not None:
            await sup._forkserver.settle()  # the new code runs everywhere now
        restarted = [slot.label for slot in slots]
        if sup.gateway is not None and (
            gateway_only
            or (edited is not None and gateway_needs_restart(current, edited))
            or sup.gateway.schemas_changed()
        ):
            await _restart_gateway(sup)
            restarted.append(GATEWAY_LABEL)
        return restarted
    finally:
        sup._checking_config = False
        sup._reap_orphans()


def use_config(supervisor: Supervisor, config: Config) -> None:
    """Switch to ``config`` (checked by ``_reload``): the snapshot that workers, the
    forkserver and the gateway read, and each slot's actor table."""
    rundir.write_config_snapshot(supervisor.run_dir, config.text)
    supervisor.config = config
    for slot in supervisor._slots:
        slot.config = config.actor(slot.config.name)
    log.info("node %r: config %s read again", config.node.name, config.path)


async def _import_handlers_again(supervisor: Supervisor, previous: Config | None) -> None:
    """A fresh forkserver (or a throwaway one, with ``spawn``) imports the handler modules
    from disk; if they do not import, go back to ``previous`` (when the config was edited)
    and refuse the restart."""
    try:
        renewed = await reimport_handlers(
            supervisor.config, supervisor._forkserver, supervisor._reap_orphans
        )
    except OSError as exc:
        if previous is not None:
            use_config(supervisor, previous)
        raise RestartRefused(500, f"nothing restarted: {exc}") from None
    if renewed:
        log.info(
            "node %r: forkserver renewed, handlers imported again", supervisor.config.node.name
        )


async def _roll_back(
    supervisor: Supervisor, previous: Config | None, failure: RestartRefused
) -> None:
    """An instance did not come back: go back to the config before the edit
    (``previous``, when it was edited) and to the forkserver that imported the code
    before it, so that the instances not reached yet, and the one that failed, start as
    they were when they restart (after a crash, say), not with the edit that just
    failed. With ``start_method = "spawn"`` each worker imports from disk: the code
    edit stays until the files are edited back."""
    if supervisor._stopping:
        raise failure  # nothing will be restarted again: nothing to go back to
    went_back = False
    if supervisor._forkserver is not None:
        went_back = await supervisor._forkserver.go_back()
    if previous is not None:
        use_config(supervisor, previous)
    what = (
        "config and code"
        if previous is not None and went_back
        else ("config" if previous is not None else "code" if went_back else "")
    )
    if not what:
        raise failure
    raise RestartRefused(
        failure.code, f"{failure.message}; back to the {what} from before the restart"
    ) from None


async def _restart_one(supervisor: Supervisor, slot: Slot) -> None:
    sup = supervisor
    old_pid = slot.pid
    process = slot.process
    if process is not None and process.returncode is None:
        slot.restart_requested = True  # the supervisor's watch starts it again when it exits
        sup._set_state(slot, ActorState.STOPPING)
        await asyncio.sleep(RESTART_DRAIN_S)
        if slot.routing_id is not None:
            sup._send(slot.routing_id, {"op": control.STOP})
        else:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), stop_limit_s(sup.config.node.shutdown_grace_s))
        except TimeoutError:
            log.warning("%s did not stop in time: killing it", slot.label)
            process.kill()
    elif slot.given_up:
        # Stopped for good, or given up on after too many restarts: a restart revives it.
        slot.restart_times.clear()
        await sup._spawn(slot)
    # Else its process is gone and the supervisor's watch is about to start it again
    # (a crash restart's backoff): that one is the successor to wait for. Starting one
    # here too made two workers of one instance, and the instance never came back.

    def back() -> bool:
        return slot.state is ActorState.RUNNING and slot.pid != old_pid

    deadline = asyncio.get_running_loop().time() + RESTART_START_TIMEOUT_S
    while not back():
        if slot.state is ActorState.FAILED or sup._stopping:
            break
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sup._state_changed.wait(), remaining)
    if not back() and sup._stopping:
        raise RestartRefused(503, f"the node is stopping: the restart ended at {slot.label}")
    if not back():
        why = slot.error or f"it is {slot.state.value}"
        if slot.state is ActorState.STARTING and slot.process is not None:
            # Stuck in on_start: killed, it is restarted as after a crash (policy and
            # limits apply), not left starting for ever.
            why = f"still starting after {RESTART_START_TIMEOUT_S:g} s: killed"
            slot.process.kill()
        raise RestartRefused(500, f"{slot.label} did not come back ({why}); stopped there")
    log.info("%s: running again (pid %s)", slot.label, slot.pid)


async def _restart_gateway(supervisor: Supervisor) -> None:
    gateway = supervisor.gateway
    assert gateway is not None
    old_pid = gateway.pid
    try:
        await gateway.restart(
            supervisor.config, supervisor.config.node.shutdown_grace_s + KILL_AFTER_S
        )
    except RuntimeError as exc:
        raise RestartRefused(500, f"{exc}; it is restarted as after a crash") from None
    log.info("gateway: running again (pid %s, was %s)", gateway.pid, old_pid)
