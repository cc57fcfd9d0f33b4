"""The directory: which actors run on this node, where they listen, and in what state.

The supervisor owns the truth and pushes a snapshot to every worker and Shell whenever it
changes (a start, a death, a restart); each process keeps a :class:`Directory` built from
the latest snapshot, so resolving a destination never leaves the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ._envelope import MEDIA, STREAM
from ._errors import DeadlineExceeded, NotFound, Unavailable
from ._ids import ActrId, ActrType

if TYPE_CHECKING:
    from ._rpc import RpcEndpoint
    from ._stream_sender import StreamSender
    from ._streams import StreamReceiver


def gateway_streams_endpoint(endpoint: str) -> str:
    """The gateway's socket for stream frames, beside ``endpoint`` (its socket for calls
    and tells). A socket of their own, so that the gateway can stop reading streams for a
    link that backs up while calls to the same node still get through."""
    return _beside(endpoint, "streams")


def gateway_media_endpoint(endpoint: str) -> str:
    """The gateway's socket for media samples, beside ``endpoint``. Media is lossy and
    never waits: the gateway reads it also while a stream's lane is full (media samples
    once waited behind the streams socket, and were dropped at their senders)."""
    return _beside(endpoint, "media")


def gateway_feed_endpoint(worker_endpoint: str) -> str:
    """The socket the gateway binds for one worker, beside the worker's own endpoint:
    frames from other nodes reach the worker there, and its answers go back on it.

    The worker connects to it, not the gateway to the worker's ROUTER: a connecting
    socket keeps one queue across reconnects, so what a killed gateway had already
    handed over is read before anything from its successor. A ROUTER takes the two
    connections in turns, and a stream's chunks came out of order (docs/gateway.md,
    Failure).

    Worker ``a-<serial>.sock`` has feed ``g-<serial>.sock``: a name no longer than the
    worker's, so that every socket path of a run dir still fits (``_rundir``).
    """
    folder, _, name = worker_endpoint.rpartition("/")
    return f"{folder}/g{name.removeprefix('a')}"


def _beside(endpoint: str, what: str) -> str:
    base = endpoint.removesuffix(".sock")
    return f"{base}-{what}.sock" if base != endpoint else f"{endpoint}-{what}"


class ActorState(StrEnum):
    """Life cycle of one actor instance. ``dead`` = its process vanished uncleanly."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    DEAD = "dead"


#: The states of an instance whose process exists (calls to it may be answered).
LIVE_STATES = frozenset({ActorState.STARTING, ActorState.RUNNING, ActorState.STOPPING})


@dataclass(frozen=True, slots=True)
class ActorEntry:
    """One actor instance as the directory knows it."""

    actr_id: ActrId
    name: str
    index: int
    endpoint: str
    state: ActorState
    pid: int | None
    restarts: int
    #: The supervisor will not start it again (its restart policy, or the restart limit):
    #: a ``failed`` instance that is not given up is about to be restarted.
    given_up: bool = False
    #: A rolling restart stopped it (``stopping``, then ``stopped``): it starts again at
    #: once, under the same id.
    restart_requested: bool = False

    @property
    def comes_back(self) -> bool:
        """Not running now, but its supervisor starts it soon under the same id: it is
        starting, or a rolling restart stopped it, or it died and is not given up."""
        if self.state is ActorState.STARTING:
            return True
        if self.state in (ActorState.STOPPING, ActorState.STOPPED):
            return self.restart_requested
        return self.state in (ActorState.DEAD, ActorState.FAILED) and not self.given_up

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the control protocol's form)."""
        return {
            "id": str(self.actr_id),
            "name": self.name,
            "index": self.index,
            "endpoint": self.endpoint,
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "given_up": self.given_up,
            "restart_requested": self.restart_requested,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActorEntry:
        """Inverse of :meth:`to_json`."""
        return cls(
            ActrId.parse(data["id"]),
            data["name"],
            int(data["index"]),
            data["endpoint"],
            ActorState(data["state"]),
            data.get("pid"),
            int(data.get("restarts", 0)),
            bool(data.get("given_up", False)),
            bool(data.get("restart_requested", False)),
        )


def _went_away(old: ActorEntry, new: ActorEntry | None) -> bool:
    """Whether the process ``old`` describes is gone by ``new``: it was live, and now it
    is not, or another process (a restart) has its place. Changes that come together
    (it died and was started again in one turn of the supervisor's loop) show only the
    second: the restart count says the first happened."""
    if old.state not in LIVE_STATES:
        return False
    return new is None or new.state not in LIVE_STATES or new.restarts != old.restarts


@dataclass(frozen=True, slots=True)
class ShellEntry:
    """A Shell client that serves ``Dest.SHELL`` routes."""

    endpoint: str
    routes: frozenset[str]


def _shell_entry(item: dict[str, Any]) -> ShellEntry:
    return ShellEntry(item["endpoint"], frozenset(item.get("routes", ())))


class Directory:
    """Lookups over the latest snapshot; round-robin among instances of one type."""

    def __init__(self) -> None:
        self._by_id: dict[ActrId, ActorEntry] = {}
        self._by_type: dict[ActrType, list[ActorEntry]] = {}
        self._by_name: dict[str, list[ActorEntry]] = {}
        self._shells: list[ShellEntry] = []
        self._next: dict[object, int] = {}
        #: The gateway's endpoint when the node talks to other nodes (``[signaling]``).
        self.gateway: str | None = None
        #: The running gateway's pid: large stream payloads for other nodes go through a
        #: ring to it, as to a local actor (None: inline, or no gateway).
        self.gateway_pid: int | None = None
        #: After an update: the pid of the gateway that stopped running with it (its
        #: pending calls can never be answered by it), else None.
        self.gateway_left: int | None = None
        self.shells_left: list[str] = []

    def update(self, snapshot: dict[str, Any]) -> list[ActorEntry]:
        """Take in a snapshot, or with ``"delta": true`` only the entries that changed
        (``_directory_feed.py``); return the new entries of gone processes.

        Those are the instances that were live (starting, running, stopping) and are now
        dead, failed, stopped or gone: their pending calls can never be answered.
        """
        entries = [ActorEntry.from_json(item) for item in snapshot.get("actors", ())]
        if snapshot.get("delta"):
            gone = [new for new in entries if self._replace(new)]
        else:
            before = self._by_id
            self._by_id = {e.actr_id: e for e in entries}
            self._by_type = {}
            self._by_name = {}
            for entry in entries:
                self._by_type.setdefault(entry.actr_id.type, []).append(entry)
                self._by_name.setdefault(entry.name, []).append(entry)
            gone = [
                self._by_id.get(actr_id, old)
                for actr_id, old in before.items()
                if _went_away(old, self._by_id.get(actr_id))
            ]
        before_shells = {shell.endpoint for shell in self._shells}
        if snapshot.get("delta"):  # the Shells that came, changed or left (_directory_feed)
            shells = {shell.endpoint: shell for shell in self._shells}
            for endpoint in snapshot.get("shells_left", ()):
                shells.pop(endpoint, None)
            for item in snapshot.get("shells_changed", ()):
                shells[item["endpoint"]] = _shell_entry(item)
            self._shells = list(shells.values())
        else:
            self._shells = [_shell_entry(item) for item in snapshot.get("shells", ())]
        #: After an update: endpoints of the Shells (serving routes) that left with it.
        self.shells_left = sorted(before_shells - {shell.endpoint for shell in self._shells})
        gateway = snapshot.get("gateway")
        self.gateway = gateway if isinstance(gateway, str) and gateway else None
        gateway_pid = snapshot.get("gateway_pid")
        previous_pid = self.gateway_pid
        self.gateway_pid = gateway_pid if isinstance(gateway_pid, int) else None
        changed = previous_pid is not None and previous_pid != self.gateway_pid
        self.gateway_left = previous_pid if changed else None
        return gone

    def _replace(self, new: ActorEntry) -> bool:
        """Put ``new`` in its instance's place (the config's order); True when that
        instance's process went away with this change."""
        old = self._by_id.get(new.actr_id)
        self._by_id[new.actr_id] = new
        for same in (
            self._by_type.setdefault(new.actr_id.type, []),
            self._by_name.setdefault(new.name, []),
        ):
            if old is None:
                same.append(new)
            else:
                same[same.index(old)] = new
        return old is not None and _went_away(old, new)

    def entries(self) -> list[ActorEntry]:
        """Every known instance, in config order."""
        return list(self._by_id.values())

    def get(self, actr_id: ActrId) -> ActorEntry | None:
        """The entry for an id, or None."""
        return self._by_id.get(actr_id)

    def endpoint_of(self, actr_id: ActrId) -> str:
        """Where to send to ``actr_id``; NotFound if unknown, Unavailable if not running.

        An id that is not on this node goes to the gateway, when the node has one.
        """
        entry = self._by_id.get(actr_id)
        if entry is None:
            if self.gateway is not None:
                return self.running_gateway()
            raise NotFound(f"no actor {actr_id} on this node")
        if entry.state is not ActorState.RUNNING:
            raise Unavailable(f"actor {actr_id} ({entry.name}) is {entry.state.value}")
        return entry.endpoint

    def running_gateway(self) -> str:
        """The gateway's endpoint; Unavailable while no gateway process runs (restarting,
        or killed and not yet back): a frame sent then would wait for a gateway that
        knows nothing of it, so its call would hang until its deadline."""
        if self.gateway is None or self.gateway_pid is None:
            raise Unavailable(
                "the node's gateway is not running (restarting?): other nodes are out of reach now"
            )
        return self.gateway

    def stream_endpoint(self, endpoint: str, kind: str = STREAM) -> str:
        """Where stream frames (``kind`` ``stream``) or media samples (``media``) for
        ``endpoint`` go: there, except for the gateway, which reads each on a socket of
        its own (docs/gateway.md, "Backpressure")."""
        if endpoint != self.gateway:
            return endpoint
        if kind == MEDIA:
            return gateway_media_endpoint(endpoint)
        return gateway_streams_endpoint(endpoint)

    def reader_pid(self, actr_id: ActrId | None, endpoint: str) -> int | None:
        """The process that reads a ring for ``actr_id``: its worker, or for another node's
        actor (sent to the gateway) the running gateway; None: send inline."""
        entry = self._by_id.get(actr_id) if actr_id is not None else None
        if entry is not None:
            return entry.pid
        return self.gateway_pid if endpoint == self.gateway else None

    def starting(self, key: ActrId | ActrType | str) -> bool:
        """Whether an instance named by an id, a type or a config name is still starting."""
        if isinstance(key, ActrId):
            entry = self._by_id.get(key)
            entries = [entry] if entry is not None else []
        elif isinstance(key, ActrType):
            entries = self._by_type.get(key, [])
        else:
            entries = self._named(key) or []
        return any(e.state is ActorState.STARTING for e in entries)

    def _named(self, name: str) -> list[ActorEntry] | None:
        """The instances of the actor ``name`` in the config, or the one ``name#index``
        (as ``actrhost status`` names it; ``#`` is never part of a config name)."""
        base, sep, index = name.partition("#")
        if not sep:
            return self._by_name.get(name)
        instances = self._by_name.get(base)
        if instances is None or not index.isdigit():
            return None
        return [e for e in instances if e.index == int(index)]

    def pick(self, actr_type: ActrType) -> ActorEntry:
        """Next running instance of a type, round-robin; NotFound / Unavailable if none."""
        return self._pick(actr_type, self._by_type.get(actr_type), f"type {actr_type}")

    def pick_by_name(self, name: str) -> ActorEntry:
        """Next running instance of the actor named ``name`` in the config."""
        candidates = self._named(name)
        if not candidates:  # a typo shows: name the actors there are
            base, sep, _index = name.partition("#")
            instances = self._by_name.get(base) if sep else None
            if instances:  # "echo#2" of two: the name was right (QA)
                raise NotFound(
                    f"no instance {name!r} on this node: {base!r} has {len(instances)}, "
                    f"{base}#0 to {base}#{len(instances) - 1}"
                )
            names = ", ".join(sorted(self._by_name)) or "none"
            raise NotFound(f"no actor of name {name!r} on this node (actors: {names})")
        return self._pick(("name", name), candidates, f"name {name!r}")

    def _pick(self, key: object, candidates: list[ActorEntry] | None, what: str) -> ActorEntry:
        if not candidates:
            raise NotFound(f"no actor of {what} on this node")
        running = [e for e in candidates if e.state is ActorState.RUNNING]
        if not running:
            states = ", ".join(sorted({e.state.value for e in candidates}))
            raise Unavailable(f"no running actor of {what} (instances are {states})")
        turn = self._next.get(key, 0)
        self._next[key] = turn + 1
        return running[turn % len(running)]

    def shell_for(self, route_key: str) -> str:
        """Endpoint of the first attached Shell serving ``route_key``; NotFound if none.
        Its process id is in the name (:func:`shell_pid`)."""
        for shell in self._shells:
            if route_key in shell.routes:
                return shell.endpoint
        raise NotFound(f"no Shell attached to this node serves {route_key!r}")


#: The reader serial in the names of rings to a Shell, which has no instance serial.
SHELL_READER_SERIAL = 0


def shell_pid(endpoint: str) -> int | None:
    """The process id in a Shell's endpoint, ``ipc://<run dir>/s<pid hex>.<token>.sock``
    (``Shell.open``): the reader of the rings to it."""
    name = endpoint.rsplit("/", 1)[-1]
    if not name.startswith("s"):
        return None
    try:
        return int(name[1:].split(".", 1)[0], 16)
    except ValueError:
        return None


def gone_error(entry: ActorEntry) -> Unavailable:
    """The error for calls pending to an instance whose process went away."""
    # A live state here is a successor's: the process we waited on ended (see _went_away).
    how = (
        "died"
        if entry.state is ActorState.DEAD or entry.state in LIVE_STATES
        else entry.state.value
    )
    return Unavailable(f"actor {entry.actr_id} ({entry.name}) {how} before answering")


def take_update(
    directory: Directory,
    message: dict[str, Any],
    rpc: RpcEndpoint,
    streams_out: StreamSender,
    streams_in: StreamReceiver,
) -> None:
    """Apply a directory update in a worker or a Shell: what waits on processes that went
    away (an instance, the gateway) fails now, and their streams are forgotten."""
    for gone in directory.update(message):
        rpc.peer_gone(gone.endpoint, gone_error(gone), graceful=gone.state is ActorState.STOPPED)
        streams_out.forget_target(gone.actr_id.serial_number)
        streams_in.forget_source(f"{gone.actr_id.serial_number:x}")
    left = directory.gateway_left
    if left is not None and directory.gateway is not None:
        rpc.peer_gone(directory.gateway, gateway_gone_error(left), graceful=True)
    rpc.to_other_nodes.gateway_is(directory.gateway, directory.gateway_pid)  # tells go again
    for endpoint in directory.shells_left:
        # Calls to a Shell that died (or closed) waited for their deadlines (QA: 20 s).
        shell_gone = Unavailable(f"the Shell at {endpoint} went away before answering")
        rpc.peer_gone(endpoint, shell_gone, graceful=True)
        pid = shell_pid(endpoint)
        if pid is not None:
            streams_out.forget_reader(SHELL_READER_SERIAL, pid)
    gateway = directory.gateway
    endpoints = (
        (gateway_streams_endpoint(gateway), gateway_media_endpoint(gateway)) if gateway else ()
    )
    streams_out.set_gateway_pid(directory.gateway_pid, endpoints)


def gateway_gone_error(pid: int) -> Unavailable:
    """The error for calls pending in the node's gateway when its process went away
    (killed, or stopping for a restart): a new gateway knows nothing of them."""
    return Unavailable(f"the node's gateway (pid {pid}) went away before answering")


#: The gateway's route for discovery beyond this node (docs/gateway.md).
GATEWAY_DISCOVER_ROUTE = "actrhost.gateway.Discover"
#: Every worker answers this route at once, with an empty payload and without counting
#: it as a request: its answer shows that everything the caller sent before it on the
#: same connection was read (``actrhost load`` ends tells and streams with it).
BARRIER_ROUTE = "actrhost.Barrier"
#: How long discovery may take: waiting for a local instance that is starting, or
#: through the gateway (and signaling).
DISCOVER_TIMEOUT_S = 10.0


async def discover_via(
    directory: Directory,
    rpc: RpcEndpoint,
    actr_type: ActrType,
    source: ActrId | None,
    deadline: float | None = None,
    changed: Callable[[], asyncio.Event] | None = None,
) -> ActrId:
    """Local instances first (round-robin); then, if the node has a gateway, signaling,
    for at most DISCOVER_TIMEOUT_S and not past ``deadline`` (loop time: that of the call
    the discovery is for).

    With ``changed`` (the event the next directory update sets), a type whose local
    instances are all starting is waited for as long, as a call to one of them would be:
    an actor that discovered a peer listed after it in the config got 503 from its
    ``on_start`` (QA: the README's first example, in that order)."""
    loop = asyncio.get_running_loop()
    own = loop.time() + DISCOVER_TIMEOUT_S
    deadline = own if deadline is None else min(own, deadline)
    while True:
        try:
            return directory.pick(actr_type).actr_id
        except NotFound:
            if directory.gateway is None:
                raise
            break
        except Unavailable:
            remaining = deadline - loop.time()
            if changed is None or remaining <= 0 or not directory.starting(actr_type):
                raise
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed().wait()
    from ._envelope import REQUEST, Envelope

    gateway = directory.running_gateway()
    env = Envelope(
        REQUEST,
        GATEWAY_DISCOVER_ROUTE,
        str(actr_type).encode(),
        request_id=rpc.next_request_id(),
        source=source,
        deadline_ns=int(deadline * 1e9),
        timeout_ms=max(1, int((deadline - loop.time()) * 1000)),
    )
    started = loop.time()
    try:
        response = await rpc.call(gateway, env, deadline)
    except DeadlineExceeded:
        # Named as what it is: "no answer to 'actrhost.gateway.Discover' from
        # ipc://…/gateway.sock" said nothing a user could act on (QA).
        raise DeadlineExceeded(
            f"no {actr_type} on this node, and none found through signaling within "
            f"{loop.time() - started:.3g} s (is the signaling server reachable?)"
        ) from None
    return ActrId.parse(response.payload.decode())
