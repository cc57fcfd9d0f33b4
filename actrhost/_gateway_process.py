"""The supervisor's side of the gateway process (docs/gateway.md has the contract).

When a config has ``[signaling]`` the supervisor starts one gateway before any worker:
the gateway registers every actor instance with signaling, and the ids it gets back are
the instances' ActrIds, so an actor has the same id on its node and everywhere else. A
gateway that dies is restarted with the ids and credentials it had, so re-registration
keeps them; the workers keep running meanwhile. ``actrhost restart`` restarts it the same
way, after a graceful stop, to apply an edited config.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _control as control
from ._config import Config
from ._directory import ActorState
from ._ids import ActrId
from ._rundir import NODE_IDENTITY, node_prefix
from ._worker_start import child_environment

log = logging.getLogger(__name__)

SPEC_ENV = "ACTRHOST_GATEWAY_SPEC"
#: How long the first registration of every instance may take before the node gives up.
REGISTER_TIMEOUT_S = 20.0
RESTART_DELAY_S = 0.2


class GatewayProcess:
    """Spawns, watches and restarts the gateway; relays its registration to the supervisor."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        control_endpoint: str,
        instances: list[tuple[str, int, str]],
        send: Callable[[bytes, dict[str, Any]], None],
        on_change: Callable[[], None],
    ) -> None:
        self.config = config
        self.endpoint = f"ipc://{run_dir / 'gateway.sock'}"
        self.identity_path = run_dir / NODE_IDENTITY
        self._shm_prefix = node_prefix(run_dir)
        self.node_id = ""  # derived from the node's certificate, made by start()
        self.state = ActorState.STARTING
        self.pid: int | None = None
        self.restarts = 0
        self.routing_id: bytes | None = None
        self.signaling_url = ""
        self._control_endpoint = control_endpoint
        self._instances = instances  # (name, index, "manufacturer+name")
        self._send = send
        self._on_change = on_change
        self._credentials: dict[tuple[str, int], tuple[str, str]] = {}
        self._registered: asyncio.Future[dict[tuple[str, int], ActrId]] | None = None
        self._registration_error = ""  # why the last registration failed, as the gateway said
        self._stats_waiter: tuple[int, asyncio.Future[dict[str, Any]]] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        #: Set when the node begins to stop (before the gateway's turn): an exit now (a
        #: SIGTERM to the whole process group, as systemd or `timeout` send) is not a
        #: crash to restart from.
        self.node_stopping = False
        self._restart_requested = False  # restart() stops it: start the next one at once
        self._schemas = ""  # what the running gateway registered: see schemas_changed()
        self._started = False  # it registered once: the node runs, later failures retry

    async def start(self, signaling_url: str) -> dict[tuple[str, int], ActrId]:
        """Spawn the gateway; return the ActrId signaling gave each (name, index)."""
        self.signaling_url = signaling_url
        from .gateway._identity import create_identity  # cryptography: only with signaling

        # In a thread: importing cryptography and making the key take ≈ 70 ms.
        self.node_id = await asyncio.to_thread(create_identity, self.identity_path)
        self._registered = asyncio.get_running_loop().create_future()
        await self._spawn()
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT_S):
                return await self._registered
        except TimeoutError:
            raise RuntimeError(
                f"the gateway did not register the node's actors with {signaling_url} "
                f"within {REGISTER_TIMEOUT_S:.0f}s"
            ) from None

    async def _spawn(self) -> None:
        spec = {
            "config_path": str(self.config.path),
            "signaling_url": self.signaling_url,
            "endpoint": self.endpoint,
            "control_endpoint": self._control_endpoint,
            "supervisor_pid": os.getpid(),
            "identity_path": str(self.identity_path),
            "shm_prefix": self._shm_prefix,
            # Restarted or not, each process of the gateway is a new incarnation.
            "incarnation": self.restarts,
            "instances": [
                {
                    "name": name,
                    "index": index,
                    "type": actr_type,
                    "previous_id": self._credentials.get((name, index), (None, None))[0],
                    "previous_credential_hex": self._credentials.get((name, index), (None, None))[
                        1
                    ],
                }
                for name, index, actr_type in self._instances
            ],
        }
        env = child_environment(self.config)
        env[SPEC_ENV] = json.dumps(spec)
        self._schemas = schema_files_digest(self.config)
        self.routing_id = None
        self._set_state(ActorState.STARTING)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actrhost.gateway", env=env, stdin=asyncio.subprocess.DEVNULL
        )
        self.pid = self._process.pid
        self._watcher = asyncio.ensure_future(self._watch(self._process))

    @property
    def live_pid(self) -> int | None:
        """The gateway's pid while its process runs (``pid`` keeps the last one)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping or self.node_stopping:
            if not self._stopping:
                log.info("gateway (pid %s) exited with %s as the node stops", process.pid, code)
            self._set_state(ActorState.STOPPED)
            return
        if self._restart_requested:
            self._restart_requested = False
            self._set_state(ActorState.STOPPED)
            self.restarts += 1
            log.info("gateway (pid %s) stopped; starting it again (rolling restart)", process.pid)
            await self._spawn()
            return
        self._set_state(ActorState.DEAD)
        if self._registered is not None and not self._registered.done():
            why = self._registration_error or f"no answer from {self.signaling_url}"
            self._registered.set_exception(
                RuntimeError(
                    f"the gateway could not register the node's actors: {why} "
                    f"(it exited with {code})"
                )
            )
            if not self._started:
                return  # the node does not start
        log.error("gateway (pid %s) exited with %s; restarting it", process.pid, code)
        await asyncio.sleep(RESTART_DELAY_S)
        if not (self._stopping or self.node_stopping):
            self.restarts += 1
            await self._spawn()

    def _set_state(self, state: ActorState) -> None:
        if state is not self.state:
            self.state = state
            self._on_change()

    def on_message(
        self, routing_id: bytes, op: str, message: dict[str, Any], snapshot: dict[str, Any]
    ) -> bool:
        """A control message from the gateway; False if it is not the gateway's."""
        # One hello per gateway process: another connection naming its pid afterwards
        # took its place, and the supervisor's stats requests and stop went to it (QA).
        first = self.routing_id in (None, routing_id)
        if op == control.HELLO and message.get("pid") == self.live_pid and first:
            self.routing_id = routing_id
            self._send(routing_id, snapshot)
        elif routing_id != self.routing_id:
            return False
        elif op == "registered":
            ids: dict[tuple[str, int], ActrId] = {}
            for item in message.get("ids", []):
                key = (str(item["name"]), int(item["index"]))
                ids[key] = ActrId.parse(item["id"])
                self._credentials[key] = (item["id"], item.get("credential_hex") or "")
            self._started = True
            if self._registered is not None and not self._registered.done():
                self._registered.set_result(ids)
        elif op == "registration_failed":
            self._registration_error = str(message.get("error") or "")
        elif op == control.STATE:
            try:
                self._set_state(ActorState(str(message.get("state"))))
            except ValueError:
                log.warning("gateway reported an unknown state %r", message.get("state"))
        elif op == control.STATS and self._stats_waiter is not None:
            req, future = self._stats_waiter
            if message.get("req") == req and not future.done():
                future.set_result(message.get("stats") or {})
        return True

    async def stats(self, req: int, timeout_s: float) -> dict[str, Any]:
        """The gateway's counters (remote nodes, lanes, drops), or {} if it does not answer."""
        if self.routing_id is None or self.state is not ActorState.RUNNING:
            return {}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._stats_waiter = (req, future)
        self._send(self.routing_id, {"op": control.STATS_REQUEST, "req": req})
        # Not past its exit: a status asked just after a SIGKILL of the gateway waited the
        # whole timeout, and showed it running, with its old pid (QA).
        waits: set[asyncio.Future[Any]] = {future}
        if self._process is not None:
            waits.add(asyncio.ensure_future(self._process.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits - {future}:
                wait.cancel()
        return future.result() if future.done() and not future.cancelled() else {}

    async def stop(self, timeout_s: float) -> None:
        """Stop the gateway (gracefully, then SIGKILL)."""
        self._stopping = True
        await self._stop_process(timeout_s)
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)

    async def restart(self, config: Config, timeout_s: float) -> None:
        """Stop the gateway gracefully (SIGKILL after ``timeout_s``) and start a new one
        that reads ``config`` (the node's snapshot, already written); return once it has
        registered every instance again (same ids: it shows their credentials). Its
        pending calls fail with ``Unavailable`` meanwhile, as the other nodes' calls to
        this node do. Raises ``RuntimeError`` if it does not register; it is then
        restarted as after a crash."""
        self.config = config
        self._registration_error = ""
        self._registered = asyncio.get_running_loop().create_future()
        process = self._process
        if process is not None and process.returncode is None:
            self._restart_requested = True  # _watch starts the next one when it exits
            await self._stop_process(timeout_s, restart=True)
        # Else it is dead and _watch starts the next one after RESTART_DELAY_S.
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT_S):
                await self._registered
        except TimeoutError:
            raise RuntimeError(
                f"the new gateway did not register the node's actors with "
                f"{self.signaling_url} within {REGISTER_TIMEOUT_S:.0f}s"
            ) from None

    async def _stop_process(self, timeout_s: float, *, restart: bool = False) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        if self.routing_id is not None:
            # A gateway stopping for a restart does not tell the other nodes to forget
            # this one: they reconnect, and their callers meanwhile get 503, not 404.
            self._send(self.routing_id, {"op": control.STOP, "restart": restart})
        else:
            process.terminate()
        try:
            async with asyncio.timeout(timeout_s):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def schemas_changed(self) -> bool:
        """Whether an actor's ``.proto`` file changed since the gateway read it: it
        registered the text with signaling, so only a new gateway registers the edit."""
        return schema_files_digest(self.config) != self._schemas

    def describe(self) -> dict[str, Any]:
        """For the directory snapshot and status."""
        return {
            "endpoint": self.endpoint,
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "node_id": self.node_id,
            "signaling": self.signaling_url,
        }


def schema_files_digest(config: Config) -> str:
    """A digest of every actor's service schema file as it is now (unreadable ones count
    as their error)."""
    digest = hashlib.sha256()
    for actor in config.actors:
        path = actor.service_schema
        if path is None:
            continue
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            digest.update(str(exc).encode())
    return digest.hexdigest()
