"""Reading and checking a node's TOML config (DESIGN §5).

:func:`load_config` turns a file into frozen dataclasses, or raises :class:`ConfigError` whose
``str()`` is one line, ``<path>: <key>: <problem>``, for the first mistake in file order.
:func:`resolve_handler` imports an actor's class. Every key is documented in
``configs/README.md``; keep the two in step.

The loader (``_config_loader.py``, one converter per kind of value) is strict on purpose:
an unknown key is an error, because a misspelt optional key (``max_restart = 0``) would
otherwise be silently ignored and its default used.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._actor import Actor, request_message_type, route_table
from ._errors import ConfigError
from ._ids import ActrType
from ._settings import NO_SETTINGS, SettingsError, build_settings, settings_type

RESTART_POLICIES = ("permanent", "transient", "temporary")
LOG_LEVELS = ("debug", "info", "warning", "error")
START_METHODS = ("forkserver", "spawn")
PERMISSIONS = ("allow", "deny")
#: ``[node] max_message_bytes``: its default and its bounds. The default is the default
#: ring size: data larger than that belongs in a stream. 1 GiB is as far as a message
#: over ZeroMQ stays sane (each is copied whole a few times on its way).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MIN_MAX_MESSAGE_BYTES = 1024
MAX_MAX_MESSAGE_BYTES = 1024 * 1024 * 1024

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
HANDLER_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}")


@dataclass(frozen=True)
class AclRule:
    """One ``[[actor.acl]]`` entry: allow or deny callers of some types from some realms."""

    permission: str  # "allow" | "deny"
    types: tuple[ActrType, ...] = ()  # empty = any type
    realms: tuple[int, ...] = ()  # empty = any realm

    def matches(self, actr_type: ActrType | None, realm_id: int) -> bool:
        """True if a caller of ``actr_type`` from ``realm_id`` falls under this rule.

        ``None`` is a caller without an actor identity (a Shell on another node): only
        rules without ``types`` match it."""
        return (not self.types or (actr_type is not None and actr_type in self.types)) and (
            not self.realms or realm_id in self.realms
        )


@dataclass(frozen=True)
class ActorConfig:
    """One ``[[actor]]`` table: what to run, how many, and how to restart it."""

    name: str
    type: ActrType
    handler: str  # "module:Class", imported by resolve_handler()
    instances: int = 1
    restart: str = "permanent"  # one of RESTART_POLICIES
    max_restarts: int = 5  # more restarts than this within restart_window_s: give up
    restart_window_s: float = 60.0
    max_concurrency: int = 64  # handlers of one instance running at once
    mailbox_capacity: int = 10000  # queued messages before the worker stops reading
    # on_start must return within this (else the start failed, as if it raised); 0: no limit.
    start_timeout_s: float = 0.0
    acl: tuple[AclRule, ...] = ()
    # The .proto file of the service the actor serves (absolute). Its fingerprint is
    # registered with signaling, so discovery can rank exact and compatible versions.
    service_schema: Path | None = None
    # The [actor.settings] table, as written; the actor gets it checked against its
    # settings dataclass, if it has one (_settings.py).
    settings: Mapping[str, Any] = field(default_factory=lambda: NO_SETTINGS, hash=False)

    def acl_allows(self, actr_type: ActrType | None, realm_id: int) -> bool:
        """Whether a caller may reach this actor: the first matching rule decides.

        No rules at all allows everyone; rules of which none matches deny, so a list of
        ``allow`` rules reads as an allow-list.
        """
        for rule in self.acl:
            if rule.matches(actr_type, realm_id):
                return rule.permission == "allow"
        return not self.acl


@dataclass(frozen=True)
class NodeConfig:
    """The ``[node]`` table."""

    name: str
    realm: int = 1
    run_dir: Path | None = None  # absolute; None lets the supervisor pick a private one
    shutdown_grace_s: float = 5.0
    log_level: str = "info"  # one of LOG_LEVELS
    hwm_messages: int = 10000  # ZeroMQ high-water mark of every socket
    # The largest encoded request, tell or response an actor may send (streams are not
    # bound by it): a payload over it fails at the sender, not in the receiver's memory.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Folders searched for handler modules before the config's own folder (absolute), e.g.
    # [".."] for configs/ beside examples/.
    python_path: tuple[Path, ...] = ()
    # How workers start: forked by the node's forkserver, or each a fresh interpreter.
    start_method: str = "forkserver"  # one of START_METHODS
    # host:port of the supervisor's Prometheus endpoint (GET /metrics); None: not served.
    metrics_listen: str | None = None
    # Time every message per route (two histograms; three clock reads per message). Off
    # leaves the per-route counts only, for the last few % of tell throughput.
    route_timings: bool = True
    # A worker whose event loop has not turned for this long logs a warning with where it
    # is (a handler that blocks stops everything in its worker); 0: not watched.
    blocked_loop_warning_s: float = 1.0


@dataclass(frozen=True)
class SignalingConfig:
    """The ``[signaling]`` table; absent means a local-only node without a gateway."""

    url: str  # "embedded", or ws:// / wss:// of `actrhost signal`
    listen: str = "127.0.0.1:0"  # host:port the embedded server binds
    heartbeat_interval_s: float = 5.0
    # Certificates (PEM) that a wss:// server's certificate must chain to, instead of the
    # system's; absolute. For a server with a self-signed or private-CA certificate.
    ca_file: Path | None = None


@dataclass(frozen=True)
class TurnServer:
    """One TURN server with its credentials (the credential is kept out of ``repr``)."""

    url: str
    username: str
    credential: str = field(repr=False)


@dataclass(frozen=True)
class WebrtcConfig:
    """The ``[webrtc]`` table: ICE servers and the gateway's connection settings."""

    stun_urls: tuple[str, ...] = ()
    turn_servers: tuple[TurnServer, ...] = ()
    force_relay: bool = False
    # aioice skips loopback when it gathers host candidates, so two peers on one machine
    # never connect without an explicit list (DESIGN §10). Empty: the address this host
    # reaches the signaling server from (127.0.0.1 with a server on loopback).
    ice_host_addresses: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    # A connection that stays silent this long fails (and its pending calls with it);
    # each side pings every keepalive_interval_s.
    keepalive_interval_s: float = 0.5
    keepalive_timeout_s: float = 3.0
    # Video and audio tracks per connection (each): media routes of a kind that can stream
    # at once between two nodes (docs/gateway.md, Media). The offering side's count holds.
    media_tracks: int = 4
    # Between two hosts joined directly (host candidates), SCTP packets of 16 KiB once a
    # probe shows the path carries them: IP fragments on the wire (docs/gateway.md).
    large_packets: bool = True


@dataclass(frozen=True)
class ShmConfig:
    """The ``[shm]`` table: when payloads go through shared memory, and ring sizes."""

    threshold_bytes: int = 65536  # payloads of at least this size use a ring
    ring_bytes: int = 67108864  # size of each per-pair ring


@dataclass(frozen=True)
class Dependency:
    """One entry of ``[dependencies]``: an actor type this node calls."""

    name: str
    actr_type: ActrType
    fingerprint: str | None = None  # "service_semantic:<64 hex>"


@dataclass(frozen=True)
class Config:
    """A whole, checked config file."""

    path: Path  # absolute
    base_dir: Path  # the config's folder: relative paths and handler modules start here
    node: NodeConfig
    signaling: SignalingConfig | None = None
    webrtc: WebrtcConfig = WebrtcConfig()
    shm: ShmConfig = ShmConfig()
    actors: tuple[ActorConfig, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    # The TOML text this was read from (the supervisor hands it on to its children).
    text: str = field(default="", repr=False, compare=False)
    #: ``path`` as the user gave it: what error lines name.
    path_as_given: str = field(default="", repr=False, compare=False)

    @property
    def shown_path(self) -> str:
        """The path error lines name: as the user gave it, if known."""
        return self.path_as_given or str(self.path)

    def actor(self, name: str) -> ActorConfig:
        """The actor called ``name``; raises KeyError if there is none."""
        for actor in self.actors:
            if actor.name == name:
                return actor
        raise KeyError(name)


#: A config larger than this is no config (a log file named by mistake, say).
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def _read_config_file(path: Path) -> bytes:
    """The bytes of a config file; ValueError for what is not one. Opened without
    blocking: ``actrhost check /dev/zero`` read for ever, a FIFO waited for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{info.st_size:,} bytes: larger than a config can be")
        return f.read(MAX_CONFIG_BYTES + 1)


def load_config(path: str | os.PathLike[str], *, data: bytes | None = None) -> Config:
    """Read and check the config at ``path``. Blocks on file I/O; imports nothing.

    ``data``: the file's content, read elsewhere (checked as if it stood at ``path``:
    relative paths start from its folder). Raises :class:`ConfigError` for an unreadable
    file, invalid TOML or any invalid key; the error names ``path`` as given. Handler
    classes are only checked for their ``module:Class`` form here: call
    :func:`resolve_handler` to import them.
    """
    shown = os.fsdecode(path)
    if not shown:  # else "cannot read the file: Is a directory", of the current one
        raise ConfigError("''", "", "the config path is empty")
    absolute = Path(os.path.abspath(shown))
    try:
        data = _read_config_file(absolute) if data is None else data
    except OSError as exc:
        raise ConfigError(shown, "", f"cannot read the file: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(shown, "", str(exc)) from None
    try:
        # A byte-order mark (Windows editors write one) is not TOML: it read as "Invalid
        # statement at line 1, column 1", which said nothing of it (QA).
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise ConfigError(shown, "", problem) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "", f"invalid TOML: {_one_line(exc)}") from None
    except RecursionError:  # arrays or tables nested ~500 deep: tomllib recurses
        raise ConfigError(shown, "", "invalid TOML: nested too deeply") from None
    from ._config_loader import Loader  # it builds this module's dataclasses

    config = Loader(shown, absolute).config(raw)
    config = dataclasses.replace(config, text=text, path_as_given=shown)
    from ._rundir import RUN_ROOT_ENV, run_dir_for, run_dir_problem

    too_long = run_dir_problem(run_dir_for(config))
    if too_long is not None:
        fix = "a shorter one" if config.node.run_dir else f"one, or ${RUN_ROOT_ENV} shorter"
        raise ConfigError(shown, "node.run_dir", f"{too_long}: set {fix}")
    return config


def load_node_config(path: str | os.PathLike[str]) -> Config:
    """The config a node's child process runs with: the supervisor's snapshot of the file
    as the node started with it (``CONFIG_SNAPSHOT_ENV``), else the file at ``path``."""
    snapshot = os.environ.get(CONFIG_SNAPSHOT_ENV)
    if not snapshot:
        return load_config(path)
    try:
        data = Path(snapshot).read_bytes()
    except OSError as exc:
        problem = f"cannot read the node's snapshot {snapshot}: {exc.strerror or exc}"
        raise ConfigError(os.fsdecode(path), "", problem) from None
    return load_config(path, data=data)


#: Set by the supervisor for its children: the path of its config snapshot (_rundir.py).
CONFIG_SNAPSHOT_ENV = "ACTRHOST_CONFIG_SNAPSHOT"


def resolve_handler(config: Config, actor: ActorConfig) -> type[Actor]:
    """Import ``actor.handler`` ("module:Class") and return the class.

    The config's folder is moved to the front of ``sys.path`` and left there, so worker
    processes forked later import the same modules. Runs the module's top-level code.
    Raises :class:`ConfigError` (key ``actor[i].handler``) if the text is malformed, the
    module is missing or raises on import, or the class is missing or not an Actor.
    """
    index = next((i for i, a in enumerate(config.actors) if a.name == actor.name), None)
    key = "handler" if index is None else f"actor[{index}].handler"

    def error(problem: str) -> ConfigError:
        return ConfigError(config.shown_path, key, problem)

    handler = actor.handler
    if not isinstance(handler, str) or not HANDLER_RE.fullmatch(handler):
        raise error(
            f"must be 'module:Class', e.g. 'examples.echo:Echo' (got {show_value(handler)})"
        )
    module_name, class_name = handler.split(":")
    base = str(config.base_dir)
    search = [str(p) for p in config.node.python_path] + [base]
    if sys.path[: len(search)] != search:
        for folder in reversed(search):
            if folder in sys.path:
                sys.path.remove(folder)
            sys.path.insert(0, folder)
    # Files written after the import system listed this folder are otherwise missed.
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:  # the module's top level called sys.exit(): no actor here
        raise error(f"importing {module_name!r} called sys.exit({exc.code!r})") from None
    except KeyboardInterrupt:
        raise  # Ctrl-C while importing: the user's, not the module's
    except BaseException as exc:  # an Exception, or a BaseException subclass of its own
        # Only the handler's own module (or a parent package) missing means "not found"; a
        # module that exists but imports something missing failed to import.
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and f"{module_name}.".startswith(f"{missing}."):
            searched = ", ".join(search)
            problem = f"module {module_name!r} not found (searched {searched} first, then sys.path)"
        else:
            message = _one_line(exc)
            problem = f"importing {module_name!r} raised {type(exc).__name__}"
            problem += f": {message}" if message else ""
        raise error(problem) from exc
    cls = getattr(module, class_name, None)
    where = getattr(module, "__file__", None) or module_name
    if cls is None:
        raise error(f"module {module_name!r} ({where}) has no class {class_name!r}")
    if not isinstance(cls, type):
        raise error(f"{handler!r} is not a class (got a {type(cls).__name__})")
    if cls is Actor:
        raise error(f"{handler!r} is actrhost.Actor itself: name your subclass of it")
    if not issubclass(cls, Actor):
        raise error(f"class {handler!r} ({where}) does not subclass actrhost.Actor")
    try:
        inspect.signature(cls).bind()  # what the worker does: Class()
    except TypeError as exc:
        raise error(f"class {handler!r} cannot be created without arguments: {exc}") from None
    except ValueError:
        pass  # no signature to read (a C-level __init__): the worker will tell
    try:
        # A route served twice, or a request annotation that does not resolve, would fail
        # every start of the worker.
        for attr, spec in route_table(cls).values():
            if spec.request_type is None:
                request_message_type(getattr(cls, attr))
        settings_type(cls)
    except (TypeError, SettingsError) as exc:
        raise error(str(exc)) from None
    try:
        build_settings(cls, actor.settings)
    except SettingsError as exc:
        settings_key = key.replace(".handler", ".settings") if index is not None else "settings"
        settings_key = _join_key(settings_key, exc.key)
        raise ConfigError(config.shown_path, settings_key, exc.problem) from None
    return cls


def show_value(value: Any) -> str:
    """A short, one-line rendering of a TOML value for "(got ...)"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # TOML dates and times


def _join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if name else prefix


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[::1]:port"`` for IPv6); raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ValueError(
            f"invalid listen address {listen!r}: expected host:port with a port from 0 to 65535"
        )
    return host.strip("[]"), int(port)
