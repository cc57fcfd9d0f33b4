"""The supervisor's control socket: messages from its workers, its gateway and Shells
(a mixin of :class:`~._supervisor.Supervisor`; the protocol is docs/protocol.md).

Workers say hello, report their state and answer stats requests; the gateway's messages
go to :class:`~._gateway_process.GatewayProcess`; Shells attach (with the routes they
serve), detach, and ask for status, rolling restarts and shutdown. A message that does
not decode, or whose fields are wrong, is dropped, counted and logged sparingly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import _control as control
from ._config import Config
from ._directory import ActorState
from ._directory_feed import DirectoryFeed
from ._linux import environment_holds
from ._rpc_receiving import worth_logging
from ._slot import RestartRefused, Slot
from ._worker_start import end_what_an_actor_left, node_environment_entry

if TYPE_CHECKING:
    from pathlib import Path

    from ._gateway_process import GatewayProcess

# The supervisor's log: these are its messages, whichever module holds the code.
log = logging.getLogger("actrhost._supervisor")

#: The name of a Shell's socket file in the run dir: ``s<pid hex>.<token hex>.sock``.
SHELL_SOCKET_RE = re.compile(r"s[0-9a-f]+\.[0-9a-f]+\.sock")


class ControlHandlers:
    """Mixin of :class:`~._supervisor.Supervisor`: what arrives on its control socket."""

    # Set up by Supervisor.__init__ and run().
    config: Config
    run_dir: Path
    gateway: GatewayProcess | None
    malformed_control: int
    _by_serial: dict[int, Slot]
    _shells: dict[bytes, dict[str, Any]]
    _stats_waiters: dict[int, asyncio.Future[dict[str, Any]]]
    _stopping: bool
    _feed: DirectoryFeed
    _send: Callable[[bytes, dict[str, Any]], None]
    snapshot: Callable[[], dict[str, Any]]
    _set_state: Callable[[Slot, ActorState], None]
    _watch_start: Callable[[Slot], None]
    _forget_shell: Callable[[bytes], None]
    _spawn_task: Callable[[Coroutine[Any, Any, Any]], None]
    request_shutdown: Callable[..., None]
    restart: Callable[..., Coroutine[Any, Any, list[str]]]
    collect_status: Callable[[], Coroutine[Any, Any, dict[str, Any]]]

    def _on_control(self, parts: list[bytes]) -> None:
        message = control.decode(parts[1]) if len(parts) == 2 else None
        if message is None:
            self.malformed_control += 1
            if worth_logging(self.malformed_control):
                log.warning(
                    "dropped a malformed control message (%d parts; #%d)",
                    len(parts),
                    self.malformed_control,
                )
            return
        routing_id = parts[0]
        op = message["op"]
        wrong = control.problem(message)
        if wrong is not None:
            self._dropped(f"dropped a control message {op!r} from {routing_id!r}: {wrong}")
            if not routing_id.startswith((b"w:", b"g:")):
                req = message.get("req") if isinstance(message.get("req"), int) else None
                self._send(routing_id, {"op": "error", "req": req, "message": wrong})
            return
        if routing_id.startswith(b"w:"):
            self._on_worker_message(routing_id, op, message)
        elif routing_id.startswith(b"g:") and self.gateway is not None:
            if not self.gateway.on_message(routing_id, op, message, self.snapshot()):
                self._dropped(f"control message {op!r} from {routing_id!r}, not the gateway")
        else:
            self._on_shell_message(routing_id, op, message)

    def _dropped(self, what: str) -> None:
        """Count a control message dropped, and log ``what`` sparingly, as any malformed
        input (QA: a loop of them wrote a line each, 11 MB in 2 s, counting none)."""
        self.malformed_control += 1
        if worth_logging(self.malformed_control):
            log.warning("%s (#%d)", what, self.malformed_control)

    def _on_worker_message(self, routing_id: bytes, op: str, message: dict[str, Any]) -> None:
        serial, pid = control.parse_worker_routing_id(routing_id) or (None, 0)
        slot = self._by_serial.get(serial) if serial is not None else None
        if slot is None:
            self._dropped(f"control message {op!r} from unknown worker {routing_id!r}")
            return
        if op != control.HELLO and routing_id != slot.routing_id:
            # A stray (below) before its end, or the instance's previous process.
            log.debug("%s: control message %r from pid %d, not its process", slot.label, op, pid)
            return
        if op == control.HELLO:
            if slot.pid is not None and pid != slot.pid:
                self._end_stray(slot, pid)
                return
            if slot.routing_id is not None and slot.routing_id != routing_id:
                # Said hello while its fork's answer was awaited: taken for the instance's
                # process, which this one (spawned instead) is.
                _, stray = control.parse_worker_routing_id(slot.routing_id) or (0, 0)
                self._end_stray(slot, stray)
            slot.routing_id = routing_id
            slot.pid = pid
            self._feed.forget(routing_id)
            if self._stopping:
                # Its SIGTERM was lost (it came before the worker's own handler: a
                # module's import, or the instant after its fork, took it): it ran, and
                # was killed after the grace (CI).
                self._send(routing_id, {"op": control.STOP})
                return
            self._send(routing_id, self.snapshot())
            self._watch_start(slot)  # it runs __init__ and on_start once it has this
        elif op == control.STATE:
            try:
                state = ActorState(str(message.get("state")))
            except ValueError:
                log.warning("%s reported an unknown state %r", slot.label, message.get("state"))
                return
            if message.get("error"):
                slot.error = str(message["error"])
                log.error("%s: %s", slot.label, slot.error)
            self._set_state(slot, state)
        elif op == control.STATS:
            waiter = self._stats_waiters.get(message.get("req", -1))
            if waiter is not None and not waiter.done():
                waiter.set_result(message.get("stats") or {})

    def _end_stray(self, slot: Slot, pid: int) -> None:
        """Kill a second process of ``slot``'s instance: forked by a forkserver that died
        before it answered with its pid, so that another was started instead (QA). Not
        told to stop: its sockets' files are the instance's now, which a close removes."""
        if pid <= 0 or not environment_holds(pid, node_environment_entry(self.run_dir)):
            # Gone already (a hello read after its process died), or its pid is another
            # process's by now: not ours to kill.
            log.debug("%s: a second process (pid %d) said hello; gone since", slot.label, pid)
            return
        log.warning("%s: a second process (pid %d) said hello: killed", slot.label, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._spawn_task(end_what_an_actor_left(pid, f"{slot.label} (pid {pid})"))

    def _shell_endpoint_problem(self, endpoint: str) -> str | None:
        """Why a Shell may not attach with ``endpoint``, or None: it must be a Shell's
        socket in the run dir (``Shell.open``). Anything else was passed on to the
        workers: "garbage" made calls to the Shell fail with 500 ZMQError, and a tcp://
        address would have had them connect off the host (QA)."""
        path = endpoint.removeprefix("ipc://")
        if path == endpoint or not SHELL_SOCKET_RE.fullmatch(os.path.basename(path)):
            return f"endpoint {endpoint[:200]!r} is not an ipc:// Shell socket"
        if "\0" in path:  # (realpath raised on it: a traceback, no answer, QA)
            return f"endpoint {endpoint[:200]!r} holds a NUL"
        if os.path.realpath(os.path.dirname(path)) != os.path.realpath(self.run_dir):
            return f"endpoint {endpoint[:200]!r} is not in the node's run dir"
        return None

    def _on_shell_message(self, routing_id: bytes, op: str, message: dict[str, Any]) -> None:
        req = message.get("req")
        if op == control.ATTACH:
            endpoint = str(message.get("endpoint", ""))
            wrong = self._shell_endpoint_problem(endpoint)
            if wrong is None and any(
                shell["endpoint"] == endpoint and shell_id != routing_id
                for shell_id, shell in self._shells.items()
            ):
                # Each Shell has a socket of its own; a second connection naming one
                # hid the first one's routes from the workers (QA).
                wrong = f"endpoint {endpoint!r} is another Shell's"
            if wrong is not None:
                self._dropped(f"refused an attach from {routing_id!r}: {wrong}")
                self._send(routing_id, {"op": "error", "req": req, "message": wrong})
                return
            routes = [str(r) for r in message.get("routes") or []]
            before = self._shells.get(routing_id, {}).get("routes") or []
            self._shells[routing_id] = {"endpoint": endpoint, "routes": routes}
            self._feed.forget(routing_id)
            if routes != before:
                self._feed.publish()  # before the answer: the Shell's calls wait for it
            # The node's limits, as it started: a Shell attached by its control
            # endpoint has no config to read them from (it used the defaults, QA).
            limits = {
                "max_message_bytes": self.config.node.max_message_bytes,
                "threshold_bytes": self.config.shm.threshold_bytes,
                "ring_bytes": self.config.shm.ring_bytes,
            }
            self._send(routing_id, {**self.snapshot(), "req": req, "limits": limits})
        elif op == control.DETACH:
            self._forget_shell(routing_id)
            self._send(routing_id, {"op": op, "req": req})
        elif op == control.STATUS:
            self._spawn_task(self._answer_status(routing_id, req))
        elif op == control.RESTART:
            self._spawn_task(self._answer_restart(routing_id, req, message))
        elif op == control.SHUTDOWN:
            self._send(routing_id, {"op": op, "req": req})
            self.request_shutdown(escalate=False)
        else:
            self._send(routing_id, {"op": "error", "req": req, "message": f"unknown op {op!r}"})

    async def _answer_restart(self, routing_id: bytes, req: Any, message: dict[str, Any]) -> None:
        names = [str(n) for n in message.get("actors") or []]
        try:
            restarted = await self.restart(names, gateway_only=bool(message.get("gateway_only")))
        except RestartRefused as exc:
            # A stop cutting a restart short is no failure of the restart's; a request the
            # node refused (an unknown name, one under way) is the caller's to see: its
            # Shell raises it, and the node's log only notes it (an ERROR there read as a
            # fault of the node's, QA).
            if exc.code in (404, 503):
                report = log.info
            else:
                report = log.warning if self._stopping else log.error
            report("node %r: restart: %s", self.config.node.name, exc.message)
            answer = {"error": exc.message, "code": exc.code}
        else:
            answer = {"restarted": restarted}
        self._send(routing_id, {"op": control.RESTART, "req": req, **answer})

    async def _answer_status(self, routing_id: bytes, req: Any) -> None:
        status = await self.collect_status()
        self._send(routing_id, {"op": control.STATUS, "req": req, **status})
