"""The checks behind :func:`actrhost._config.load_config`: one converter per kind of
value, each given its full dotted key, so every error is one line naming the key."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from ._config import (
    HANDLER_RE,
    LOG_LEVELS,
    MAX_MAX_MESSAGE_BYTES,
    MIN_MAX_MESSAGE_BYTES,
    PERMISSIONS,
    RESTART_POLICIES,
    START_METHODS,
    AclRule,
    ActorConfig,
    Config,
    Dependency,
    NodeConfig,
    ShmConfig,
    SignalingConfig,
    TurnServer,
    WebrtcConfig,
    show_value,
)
from ._errors import BadRequest, ConfigError
from ._fingerprint import SchemaError, service_fingerprint
from ._ids import ActrType, check_name

_UINT32_MAX = 2**32 - 1  # realm ids are uint32 on the wire (DESIGN §2)
_MIN_RING_BYTES = 4096  # one page: smaller rings cannot hold a record header plus data
_MAX_RING_BYTES = 2**32  # record offsets and lengths travel as u32 (docs/shm.md)
#: Each instance is a process of its own; more than this is a typo, not a deployment.
_MAX_INSTANCES = 1024
#: Each track is a transceiver in every connection's SDP, set up and kept open with it.
_MAX_MEDIA_TRACKS = 16

_NAME_RULE = (
    "1-32 letters, digits, '-', '_' or '.', starting with a letter and ending with a "
    "letter or digit"
)
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


def signaling_url_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a signaling server's URL (a command's
    ``--signaling``), as the config's ``[signaling] url`` says it; None if nothing."""
    pattern, min_port, expected = _URLS["signaling"]
    if value != "embedded" and _url_ok(pattern, value, min_port):
        return None
    return f"expected {expected.removeprefix(repr('embedded') + ' or ')}, got {value!r}"


# A converter checks one value, given with its full dotted key, and returns its final form.
_Convert = Callable[[str, Any], Any]


class Loader:
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
            self.fail(key, f"must be {expected} (got {show_value(value)})")

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
        if "webrtc" in sections and "signaling" not in sections:
            # Only the gateway reads it, and only a node with [signaling] has one.
            self.fail("webrtc", "is only used with [signaling] (this node has none)")
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
            "log_level": self.log_level,
            "hwm_messages": partial(self.integer, lo=1, hi=2**31 - 1),  # a C int in libzmq
            "max_message_bytes": partial(
                self.integer, lo=MIN_MAX_MESSAGE_BYTES, hi=MAX_MAX_MESSAGE_BYTES
            ),
            "python_path": lambda k, v: self.array(k, v, self.folder, "folder paths"),
            "start_method": partial(self.choice, options=START_METHODS),
            "metrics_listen": partial(self.url, kind="listen"),
            "route_timings": self.boolean,
            "blocked_loop_warning_s": self.blocked_loop_warning,
        }
        return NodeConfig(**self.section(key, value, spec, required=("name",)))

    def signaling(self, key: str, value: Any) -> SignalingConfig:
        spec: dict[str, _Convert] = {
            "url": self.signaling_url,
            "listen": partial(self.url, kind="listen"),
            # Shorter would flood the server (and the log) with heartbeats and timeouts.
            "heartbeat_interval_s": partial(self.number, lo=0.05),
            "ca_file": self.run_dir,  # a path; checked below, once the url says it is used
        }
        fields = self.section(key, value, spec, required=("url",))
        # A listen address or heartbeat interval next to a remote server would be silently
        # unused (that server tells its clients its own interval).
        for only_embedded in ("listen", "heartbeat_interval_s"):
            if only_embedded in fields and fields["url"] != "embedded":
                problem = f"only used with url = 'embedded' (url is {fields['url']!r})"
                if only_embedded == "heartbeat_interval_s":
                    problem += "; an external server tells its clients its own interval"
                self.fail(f"{key}.{only_embedded}", problem)
        ca_file = fields.get("ca_file")
        if ca_file is not None and not fields["url"].startswith("wss://"):
            problem = f"only used with a wss:// url (url is {fields['url']!r})"
            self.fail(f"{key}.ca_file", problem)
        if ca_file is not None:
            # After the url: a ca_file beside a ws:// url was refused as a missing file,
            # not as the unused key it is (QA).
            self.ca_file(f"{key}.ca_file", ca_file, value["ca_file"])
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
            "ice_host_addresses": self.ice_host_addresses,
            "connect_timeout_s": partial(self.number, lo=0, lo_open=True),
            "keepalive_interval_s": partial(self.number, lo=0.01),
            "keepalive_timeout_s": partial(self.number, lo=0, lo_open=True),
            "media_tracks": partial(self.integer, lo=1, hi=_MAX_MEDIA_TRACKS),
            "large_packets": self.boolean,
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
            "ring_bytes": self.ring_bytes,
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

    def ring_bytes(self, key: str, value: Any) -> int:
        size = self.integer(key, value, lo=_MIN_RING_BYTES, hi=_MAX_RING_BYTES)
        self.check(key, value, size % 8 == 0, "a multiple of 8 (records are 8-byte aligned)")
        return size

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
            "instances": partial(self.integer, lo=1, hi=_MAX_INSTANCES),
            "restart": partial(self.choice, options=RESTART_POLICIES),
            "max_restarts": partial(self.integer, lo=0),
            "restart_window_s": partial(self.number, lo=0, lo_open=True),
            "max_concurrency": partial(self.integer, lo=1),
            "mailbox_capacity": partial(self.integer, lo=1),
            "start_timeout_s": partial(self.number, lo=0),
            "acl": partial(self.array, convert=self.acl_rule, what="tables, written [[actor.acl]]"),
            "service_schema": self.schema_file,
            "settings": self.settings_table,
        }
        return ActorConfig(**self.section(key, value, spec, required=("name", "type", "handler")))

    def settings_table(self, key: str, value: Any) -> Mapping[str, Any]:
        # Checked against the actor's settings type once its class is imported
        # (resolve_handler); here only its shape.
        self.check(key, value, isinstance(value, dict), "a table, written [actor.settings]")
        return MappingProxyType(value)

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

    def ice_host_addresses(self, key: str, value: Any) -> tuple[str, ...]:
        addresses = self.array(
            key, value, convert=self.ip_address, what="IP addresses", non_empty=True
        )
        for i, address in enumerate(addresses):
            if address in addresses[:i]:  # offered twice, as two candidates (QA)
                self.fail(f"{key}[{i}]", f"{address!r} is listed twice")
        return addresses

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

    def blocked_loop_warning(self, key: str, value: Any) -> float:
        # Shorter than a few loop turns under load would warn about ordinary work.
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value == 0 or value >= 0.05)
        self.check(key, value, ok, "0 (off) or a number >= 0.05")
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

    def log_level(self, key: str, value: Any) -> str:
        # "DEBUG" as well: Python's logging spells them so.
        known = isinstance(value, str) and value.lower() in LOG_LEVELS
        self.check(key, value, known, f"one of {', '.join(LOG_LEVELS)}")
        return value.lower()

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
        ok = isinstance(value, str) and HANDLER_RE.fullmatch(value) is not None
        self.check(key, value, ok, "'module:Class', e.g. 'examples.echo:Echo'")
        return value

    def run_dir(self, key: str, value: Any) -> Path:
        text = self.text(key, value)
        self.check(key, value, "\0" not in text, "a path without NUL characters")
        try:
            expanded = Path(text).expanduser()
        except RuntimeError as exc:  # "~someone" who has no home here
            self.fail(key, f"{text!r}: {exc}")
        # Relative to the config's folder, not the current directory, so a config means the
        # same thing wherever `actrhost run` is started.
        return Path(os.path.abspath(self.base_dir / expanded))

    def folder(self, key: str, value: Any) -> Path:
        path = self.run_dir(key, value)
        # A misspelt folder would otherwise surface as a handler module not found, or not at
        # all while a same-named module elsewhere on sys.path is imported instead.
        try:
            is_dir = path.is_dir()
        except OSError as exc:
            self.fail(key, f"cannot look at {str(path)!r}: {exc.strerror or exc}")
        if not is_dir:
            there = f"{path} is no folder" if path.exists() else f"nothing at {path}"
            self.fail(key, f"must be the path of an existing folder ({there})")
        return path

    def _is_file(self, key: str, path: Path) -> bool:
        try:
            return path.is_file()
        except OSError as exc:  # a name too long, say: is_file() says False only for some
            self.fail(key, f"cannot look at {str(path)!r}: {exc.strerror or exc}")

    def schema_file(self, key: str, value: Any) -> Path:
        path = self.run_dir(key, value)
        self.check(key, value, self._is_file(key, path), "the path of an existing .proto file")
        # Parsed now, not when signaling refuses the registration (or never, without it).
        try:
            service_fingerprint(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            self.fail(key, f"cannot read {path}: {exc}")
        except SchemaError as exc:
            self.fail(key, f"{path} is not a .proto schema: {exc}")
        return path

    def ca_file(self, key: str, path: Path, given: Any) -> None:
        self.check(key, given, self._is_file(key, path), "the path of an existing PEM file")

    def fingerprint(self, key: str, value: Any) -> str:
        ok = isinstance(value, str) and _FINGERPRINT_RE.fullmatch(value) is not None
        self.check(key, value, ok, "'service_semantic:' followed by 64 lowercase hex digits")
        return value

    def signaling_url(self, key: str, value: Any) -> str:
        return value if value == "embedded" else self.url(key, value, kind="signaling")

    def url(self, key: str, value: Any, kind: str) -> str:
        pattern, min_port, expected = _URLS[kind]
        self.check(key, value, _url_ok(pattern, value, min_port), expected)
        if kind in ("stun", "turn") and ":[" in value:
            # aiortc's own parser takes no IPv6 address literal: the link would fail at
            # its first offer ("malformed uri"), long after the node started.
            self.fail(
                key,
                "cannot name an IPv6 address (aiortc does not read one in a STUN or TURN "
                f"URL): give a host name or an IPv4 address (got {value!r})",
            )
        return value

    def ip_address(self, key: str, value: Any) -> str:
        # ip_address() also takes integers; only text is an address in a config.
        try:
            address = ipaddress.ip_address(value) if isinstance(value, str) else None
        except ValueError:
            address = None
        self.check(key, value, address is not None, "an IP address such as '127.0.0.1'")
        assert address is not None
        # A host candidate is where peers send to: one interface's own address. Offered,
        # 0.0.0.0 or a group address made every link to another host fail in ICE.
        unicast = not (
            address.is_unspecified
            or address.is_multicast
            or address == ipaddress.IPv4Address("255.255.255.255")
        )
        self.check(key, value, unicast, "a unicast address of this host, such as '10.0.0.5'")
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
