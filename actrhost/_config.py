"""Reading and checking a node's TOML config (DESIGN §5).

:func:`load_config` turns a file into frozen dataclasses, or raises :class:`ConfigError` whose
``str()`` is one line, ``<path>: <key>: <problem>``, for the first mistake in file order.
:func:`resolve_handler` imports an actor's class. Every key is documented in
``configs/README.md``; keep the two in step.

The loader is strict on purpose: an unknown key is an error, because a misspelt optional
key (``max_restart = 0``) would otherwise be silently ignored and its default used.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import math
import os
import re
import ssl
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from ._actor import Actor
from ._errors import BadRequest, ConfigError
from ._ids import ActrType, check_name

RESTART_POLICIES = ("permanent", "transient", "temporary")
LOG_LEVELS = ("debug", "info", "warning", "error")
PERMISSIONS = ("allow", "deny")

_UINT32_MAX = 2**32 - 1  # realm ids are uint32 on the wire (DESIGN §2)
_MIN_RING_BYTES = 4096  # one page: smaller rings cannot hold a record header plus data

_NAME_RULE = (
    "1-32 letters, digits, '-', '_' or '.', starting with a letter and ending with a "
    "letter or digit"
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}")
_FINGERPRINT_RE = re.compile(r"service_semantic:[0-9a-f]{64}")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")

# URLs are matched whole, then host and port are checked in code (_url_ok), so one
# message per kind of URL covers every way of getting it wrong.
_HOST = r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
_PORT = r"(?P<port>\d{1,5})"
_LISTEN_RE = re.compile(rf"{_HOST}:{_PORT}")
_WS_RE = re.compile(rf"wss?://{_HOST}(?::{_PORT})?(?:/[^\s?#]*)?")
_STUN_RE = re.compile(rf"stuns?:{_HOST}(?::{_PORT})?")  # RFC 7064
_TURN_RE = re.compile(rf"turns?:{_HOST}(?::{_PORT})?(?:\?transport=(?:udp|tcp))?")  # RFC 7065
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# URL kind -> (pattern, lowest valid port, what the error says is expected)
_URLS: dict[str, tuple[re.Pattern[str], int, str]] = {
    "signaling": (_WS_RE, 1, "'embedded' or a 'ws://host:port' or 'wss://host:port' URL"),
    "listen": (_LISTEN_RE, 0, "'host:port' with a port from 0 to 65535, e.g. '127.0.0.1:0'"),
    "stun": (_STUN_RE, 1, "a 'stun:host[:port]' or 'stuns:host[:port]' URL"),
    "turn": (_TURN_RE, 1, "a 'turn:host[:port][?transport=udp|tcp]' or 'turns:...' URL"),
}


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
    acl: tuple[AclRule, ...] = ()
    # The .proto file of the service the actor serves (absolute). Its fingerprint is
    # registered with signaling, so discovery can rank exact and compatible versions.
    service_schema: Path | None = None

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
    # Folders searched for handler modules before the config's own folder (absolute), e.g.
    # [".."] for configs/ beside examples/.
    python_path: tuple[Path, ...] = ()


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
    # never connect without an explicit list (DESIGN §10).
    ice_host_addresses: tuple[str, ...] = ("127.0.0.1",)
    connect_timeout_s: float = 10.0
    # A connection that stays silent this long fails (and its pending calls with it);
    # each side pings every keepalive_interval_s.
    keepalive_interval_s: float = 0.5
    keepalive_timeout_s: float = 3.0


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

    def actor(self, name: str) -> ActorConfig:
        """The actor called ``name``; raises KeyError if there is none."""
        for actor in self.actors:
            if actor.name == name:
                return actor
        raise KeyError(name)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the config at ``path``. Blocks on file I/O; imports nothing.

    Raises :class:`ConfigError` for an unreadable file, invalid TOML or any invalid key;
    the error names ``path`` as given. Handler classes are only checked for their
    ``module:Class`` form here: call :func:`resolve_handler` to import them.
    """
    shown = os.fsdecode(path)
    absolute = Path(os.path.abspath(shown))
    try:
        data = absolute.read_bytes()
    except OSError as exc:
        raise ConfigError(shown, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise ConfigError(shown, "", problem) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "", f"invalid TOML: {_one_line(exc)}") from None
    return _Loader(shown, absolute).config(raw)


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
        return ConfigError(str(config.path), key, problem)

    handler = actor.handler
    if not isinstance(handler, str) or not _HANDLER_RE.fullmatch(handler):
        raise error(f"must be 'module:Class', e.g. 'examples.echo:Echo' (got {_show(handler)})")
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
    except Exception as exc:
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
    if not issubclass(cls, Actor):
        raise error(f"class {handler!r} ({where}) does not subclass actrhost.Actor")
    return cls


# --- the loader ------------------------------------------------------------------------

# A converter checks one value, given with its full dotted key, and returns its final form.
_Convert = Callable[[str, Any], Any]


class _Loader:
    """Walks the parsed TOML converting each key as it goes, so the first mistake in file
    order is the one reported (tomllib keeps keys in file order). Exception: all
    ``[[actor]]`` tables are checked together, where the first one appears.
    """

    def __init__(self, shown_path: str, absolute: Path) -> None:
        self.shown = shown_path
        self.path = absolute
        self.base_dir = absolute.parent

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(self.shown, key, problem)

    def check(self, key: str, value: Any, ok: bool, expected: str) -> None:
        if not ok:
            self.fail(key, f"must be {expected} (got {_show(value)})")

    # -- whole file and tables

    def config(self, raw: dict[str, Any]) -> Config:
        spec: dict[str, _Convert] = {
            "node": self.node,
            "signaling": self.signaling,
            "webrtc": self.webrtc,
            "shm": self.shm,
            "actor": self.actors,
            "dependencies": self.dependencies,
        }
        sections = self.section("", raw, spec)
        if "node" not in sections:
            self.fail("node", "required table [node] is missing")
        if "actor" not in sections:
            self.fail("actor", "at least one [[actor]] table is required")
        sections["actors"] = sections.pop("actor")
        return Config(path=self.path, base_dir=self.base_dir, **sections)

    def section(
        self,
        key: str,
        value: Any,
        spec: Mapping[str, _Convert],
        required: tuple[str, ...] = (),
        expected: str = "a table",
    ) -> dict[str, Any]:
        """Convert a table key by key; unknown keys fail where they stand."""
        self.check(key, value, isinstance(value, dict), expected)
        out: dict[str, Any] = {}
        for name, item in value.items():
            sub = _join(key, name)
            convert = spec.get(name)
            if convert is None:
                self.fail(sub, f"unknown key (allowed: {', '.join(spec)})")
            out[name] = convert(sub, item)
        for name in required:
            if name not in out:
                self.fail(_join(key, name), "required key is missing")
        return out

    def node(self, key: str, value: Any) -> NodeConfig:
        spec: dict[str, _Convert] = {
            "name": self.name,
            "realm": partial(self.integer, lo=0, hi=_UINT32_MAX),
            "run_dir": self.run_dir,
            "shutdown_grace_s": partial(self.number, lo=0),
            "log_level": partial(self.choice, options=LOG_LEVELS),
            "hwm_messages": partial(self.integer, lo=1),
            "python_path": lambda k, v: self.array(k, v, self.run_dir, "folder paths"),
        }
        return NodeConfig(**self.section(key, value, spec, required=("name",)))

    def signaling(self, key: str, value: Any) -> SignalingConfig:
        spec: dict[str, _Convert] = {
            "url": self.signaling_url,
            "listen": partial(self.url, kind="listen"),
            "heartbeat_interval_s": partial(self.number, lo=0, lo_open=True),
            "ca_file": self.ca_file,
        }
        fields = self.section(key, value, spec, required=("url",))
        # A listen address next to a remote server would be silently unused.
        if "listen" in fields and fields["url"] != "embedded":
            problem = f"only used with url = 'embedded' (url is {fields['url']!r})"
            self.fail(f"{key}.listen", problem)
        ca_file = fields.get("ca_file")
        if ca_file is not None and not fields["url"].startswith("wss://"):
            problem = f"only used with a wss:// url (url is {fields['url']!r})"
            self.fail(f"{key}.ca_file", problem)
        if ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(ca_file))
            except ssl.SSLError as exc:
                problem = f"{ca_file} holds no usable PEM certificate ({exc.reason or exc})"
                self.fail(f"{key}.ca_file", problem)
        return SignalingConfig(**fields)

    def webrtc(self, key: str, value: Any) -> WebrtcConfig:
        turn_what = "'turn:host[:port]' URLs or { url, username, credential } tables"
        spec: dict[str, _Convert] = {
            "stun_urls": partial(self.array, convert=partial(self.url, kind="stun"), what="URLs"),
            "turn_urls": partial(self.array, convert=self.turn_entry, what=turn_what),
            "turn_username": self.text,
            "turn_credential": self.text,
            "force_relay": self.boolean,
            "ice_host_addresses": partial(
                self.array, convert=self.ip_address, what="IP addresses", non_empty=True
            ),
            "connect_timeout_s": partial(self.number, lo=0, lo_open=True),
            "keepalive_interval_s": partial(self.number, lo=0, lo_open=True),
            "keepalive_timeout_s": partial(self.number, lo=0, lo_open=True),
        }
        fields = self.section(key, value, spec)
        interval = fields.get("keepalive_interval_s", WebrtcConfig.keepalive_interval_s)
        timeout = fields.get("keepalive_timeout_s", WebrtcConfig.keepalive_timeout_s)
        if timeout <= 2 * interval:
            # One lost ping would fail a healthy link.
            self.fail(
                f"{key}.keepalive_timeout_s",
                f"must be more than twice keepalive_interval_s ({interval:g}), got {timeout:g}",
            )
        # DESIGN §5: plain-string turn_urls share turn_username / turn_credential; a table
        # entry carries its own. Both keys are needed by, and only allowed with, plain URLs.
        entries = fields.pop("turn_urls", ())
        has_plain = any(isinstance(entry, str) for entry in entries)
        shared = {name: fields.pop(name, None) for name in ("turn_username", "turn_credential")}
        for name, given in shared.items():
            if has_plain and given is None:
                self.fail(f"{key}.{name}", "required when turn_urls has plain-string entries")
            if not has_plain and given is not None:
                problem = "only applies to plain-string entries of turn_urls (none given)"
                self.fail(f"{key}.{name}", problem)
        user, cred = shared["turn_username"], shared["turn_credential"]
        servers = tuple(TurnServer(e, user, cred) if isinstance(e, str) else e for e in entries)
        if fields.get("force_relay") and not servers:
            self.fail(f"{key}.force_relay", "is true but turn_urls names no TURN server to relay")
        return WebrtcConfig(turn_servers=servers, **fields)

    def shm(self, key: str, value: Any) -> ShmConfig:
        spec: dict[str, _Convert] = {
            "threshold_bytes": partial(self.integer, lo=0),
            "ring_bytes": partial(self.integer, lo=_MIN_RING_BYTES),
        }
        fields = self.section(key, value, spec)
        shm = ShmConfig(**fields)
        # A payload at the threshold goes to a ring, so the ring must be able to hold it.
        # Blame ring_bytes if it was given, else the threshold that outgrew the default.
        if shm.ring_bytes <= shm.threshold_bytes:
            blamed = "ring_bytes" if "ring_bytes" in fields else "threshold_bytes"
            problem = f"ring_bytes ({shm.ring_bytes}) must be greater than threshold_bytes"
            self.fail(f"{key}.{blamed}", f"{problem} ({shm.threshold_bytes})")
        return shm

    def actors(self, key: str, value: Any) -> tuple[ActorConfig, ...]:
        if isinstance(value, list) and not value:
            self.fail(key, "at least one [[actor]] table is required (got an empty array)")
        first_use: dict[str, str] = {}  # actor name -> key where it was first given
        convert = partial(self.actor, first_use=first_use)
        return self.array(key, value, convert=convert, what="tables, written [[actor]]")

    def actor(self, key: str, value: Any, first_use: dict[str, str]) -> ActorConfig:
        spec: dict[str, _Convert] = {
            "name": partial(self.actor_name, first_use=first_use),
            "type": self.actr_type,
            "handler": self.handler,
            "instances": partial(self.integer, lo=1),
            "restart": partial(self.choice, options=RESTART_POLICIES),
            "max_restarts": partial(self.integer, lo=0),
            "restart_window_s": partial(self.number, lo=0, lo_open=True),
            "max_concurrency": partial(self.integer, lo=1),
            "mailbox_capacity": partial(self.integer, lo=1),
            "acl": partial(self.array, convert=self.acl_rule, what="tables, written [[actor.acl]]"),
            "service_schema": self.schema_file,
        }
        return ActorConfig(**self.section(key, value, spec, required=("name", "type", "handler")))

    def acl_rule(self, key: str, value: Any) -> AclRule:
        realm = partial(self.integer, lo=0, hi=_UINT32_MAX)
        spec: dict[str, _Convert] = {
            "permission": partial(self.choice, options=PERMISSIONS),
            "types": partial(self.array, convert=self.actr_type, what="'manufacturer+name' texts"),
            "realms": partial(self.array, convert=realm, what="realm ids"),
        }
        return AclRule(**self.section(key, value, spec, required=("permission",)))

    def dependencies(self, key: str, value: Any) -> tuple[Dependency, ...]:
        self.check(key, value, isinstance(value, dict), "a table")
        spec = {"actr_type": self.actr_type, "fingerprint": self.fingerprint}
        deps = []
        for name, item in value.items():
            sub = _join(key, name)
            if not _is_name(name):
                self.fail(sub, f"dependency name must be {_NAME_RULE} (got {name!r})")
            expected = "a table such as { actr_type = 'demo+Echo' }"
            fields = self.section(sub, item, spec, required=("actr_type",), expected=expected)
            deps.append(Dependency(name=name, **fields))
        return tuple(deps)

    def turn_entry(self, key: str, value: Any) -> str | TurnServer:
        """A plain URL (credentials added by the caller) or a table with its own."""
        if isinstance(value, str):
            return self.url(key, value, kind="turn")
        spec: dict[str, _Convert] = {
            "url": partial(self.url, kind="turn"),
            "username": self.text,
            "credential": self.text,
        }
        expected = "a 'turn:host[:port]' URL or a table { url, username, credential }"
        fields = self.section(key, value, spec, required=tuple(spec), expected=expected)
        return TurnServer(**fields)

    # -- single values

    def array(
        self, key: str, value: Any, convert: _Convert, what: str, non_empty: bool = False
    ) -> tuple[Any, ...]:
        ok = isinstance(value, list) and (bool(value) or not non_empty)
        self.check(key, value, ok, f"{'a non-empty' if non_empty else 'an'} array of {what}")
        return tuple(convert(f"{key}[{i}]", item) for i, item in enumerate(value))

    def integer(self, key: str, value: Any, lo: int, hi: int | None = None) -> int:
        # bool is an int in Python, but `true` is no number in TOML.
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and lo <= value and (hi is None or value <= hi)
        limits = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        self.check(key, value, ok, f"an integer {limits}")
        return value

    def number(self, key: str, value: Any, lo: float, lo_open: bool = False) -> float:
        # Integers are fine where a float is expected: `restart_window_s = 60` is natural.
        # inf and nan are refused: every duration here bounds a wait, so it must be finite.
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > lo if lo_open else value >= lo)
        self.check(key, value, ok, f"a number {'>' if lo_open else '>='} {lo}")
        return float(value)

    def boolean(self, key: str, value: Any) -> bool:
        self.check(key, value, isinstance(value, bool), "true or false")
        return value

    def text(self, key: str, value: Any) -> str:
        self.check(key, value, isinstance(value, str) and bool(value), "a non-empty string")
        return value

    def choice(self, key: str, value: Any, options: tuple[str, ...]) -> str:
        self.check(key, value, value in options, f"one of {', '.join(options)}")
        return value

    def name(self, key: str, value: Any) -> str:
        self.check(key, value, _is_name(value), _NAME_RULE)
        return value

    def actor_name(self, key: str, value: Any, first_use: dict[str, str]) -> str:
        name = self.name(key, value)
        if name in first_use:
            self.fail(key, f"duplicate actor name {name!r} (already used by {first_use[name]})")
        first_use[name] = key
        return name

    def actr_type(self, key: str, value: Any) -> ActrType:
        parts = value.split("+") if isinstance(value, str) else []
        ok = len(parts) == 2 and all(_is_name(part) for part in parts)
        self.check(key, value, ok, f"'manufacturer+name', each {_NAME_RULE}")
        return ActrType(parts[0], parts[1])

    def handler(self, key: str, value: Any) -> str:
        ok = isinstance(value, str) and _HANDLER_RE.fullmatch(value) is not None
        self.check(key, value, ok, "'module:Class', e.g. 'examples.echo:Echo'")
        return value

    def run_dir(self, key: str, value: Any) -> Path:
        text = self.text(key, value)
        # Relative to the config's folder, not the current directory, so a config means the
        # same thing wherever `actrhost run` is started.
        return Path(os.path.abspath(self.base_dir / Path(text).expanduser()))

    def schema_file(self, key: str, value: Any) -> Path:
        path = self.run_dir(key, value)
        self.check(key, value, path.is_file(), "the path of an existing .proto file")
        return path

    def ca_file(self, key: str, value: Any) -> Path:
        path = self.run_dir(key, value)
        self.check(key, value, path.is_file(), "the path of an existing PEM file")
        return path

    def fingerprint(self, key: str, value: Any) -> str:
        ok = isinstance(value, str) and _FINGERPRINT_RE.fullmatch(value) is not None
        self.check(key, value, ok, "'service_semantic:' followed by 64 lowercase hex digits")
        return value

    def signaling_url(self, key: str, value: Any) -> str:
        return value if value == "embedded" else self.url(key, value, kind="signaling")

    def url(self, key: str, value: Any, kind: str) -> str:
        pattern, min_port, expected = _URLS[kind]
        self.check(key, value, _url_ok(pattern, value, min_port), expected)
        return value

    def ip_address(self, key: str, value: Any) -> str:
        # ip_address() also takes integers; only text is an address in a config.
        try:
            address = ipaddress.ip_address(value) if isinstance(value, str) else None
        except ValueError:
            address = None
        self.check(key, value, address is not None, "an IP address such as '127.0.0.1'")
        return str(address)


# --- helpers ---------------------------------------------------------------------------


def _is_name(value: Any) -> bool:
    """check_name's rule as a predicate (check_name raises the wire's BadRequest)."""
    try:
        check_name(value, "name")
    except BadRequest:
        return False
    return True


def _url_ok(pattern: re.Pattern[str], value: Any, min_port: int) -> bool:
    """Whether ``value`` matches ``pattern`` with a valid host and a port in range."""
    match = pattern.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return False
    port = match["port"]
    if port is not None and not min_port <= int(port) <= 65535:
        return False
    host = match["host"]
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        elif re.fullmatch(r"[0-9.]+", host):  # looks like IPv4: must be one
            ipaddress.IPv4Address(host)
        else:
            return bool(_HOSTNAME_RE.fullmatch(host))
    except ValueError:
        return False
    return True


def _join(prefix: str, name: str) -> str:
    """The dotted key of ``name`` inside ``prefix``, quoted as TOML would need it."""
    part = name if _BARE_KEY_RE.fullmatch(name) else json.dumps(name)
    return f"{prefix}.{part}" if prefix else part


def _show(value: Any) -> str:
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


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
