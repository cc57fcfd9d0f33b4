"""Tests of actrhost._config: loading, exact one-line errors, ACLs and handler import."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from actrhost._actor import Actor, collect_routes
from actrhost._config import (
    AclRule,
    ActorConfig,
    Config,
    Dependency,
    NodeConfig,
    ShmConfig,
    SignalingConfig,
    TurnServer,
    WebrtcConfig,
    load_config,
    resolve_handler,
)
from actrhost._errors import ConfigError
from actrhost._ids import ActrType

NODE = '[node]\nname = "demo"\n'
ACTOR = '[[actor]]\nname = "echo"\ntype = "demo+Echo"\nhandler = "examples.echo:Echo"\n'
MINIMAL = NODE + ACTOR
FP = "service_semantic:" + "ab" * 32
NAME_RULE = (
    "1-32 letters, digits, '-', '_' or '.', starting with a letter and ending with a "
    "letter or digit"
)
REALM_RANGE = "must be an integer from 0 to 4294967295"
TOP_KEYS = "node, signaling, webrtc, shm, actor, dependencies"
TURN = 'turn_urls = ["turn:127.0.0.1:3478"]\nturn_username = "u"\nturn_credential = "c"\n'


def write(tmp_path: Path, text: str | bytes, name: str = "node.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def error_of(path: Path | str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# --- valid configs -----------------------------------------------------------------------


def test_minimal_config_has_every_default(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(str(path))
    echo = ActorConfig(name="echo", type=ActrType("demo", "Echo"), handler="examples.echo:Echo")
    assert config == Config(
        path=path,
        base_dir=tmp_path,
        node=NodeConfig(name="demo"),
        signaling=None,
        webrtc=WebrtcConfig(),
        shm=ShmConfig(),
        actors=(echo,),
        dependencies=(),
    )
    # The defaults themselves, spelled out so a changed default is a visible decision.
    assert (config.node.realm, config.node.run_dir, config.node.shutdown_grace_s) == (1, None, 5.0)
    assert (config.node.log_level, config.node.hwm_messages) == ("info", 10000)
    assert (config.node.start_method, config.node.metrics_listen) == ("forkserver", None)
    assert config.node.route_timings is True
    assert config.node.max_message_bytes == 64 * 1024 * 1024
    assert (echo.instances, echo.restart, echo.max_restarts, echo.restart_window_s) == (
        1,
        "permanent",
        5,
        60.0,
    )
    assert (echo.max_concurrency, echo.mailbox_capacity, echo.acl) == (64, 10000, ())
    assert config.webrtc == WebrtcConfig(
        stun_urls=(),
        turn_servers=(),
        force_relay=False,
        ice_host_addresses=(),
        connect_timeout_s=10.0,
    )
    assert config.shm == ShmConfig(threshold_bytes=65536, ring_bytes=67108864)
    assert SignalingConfig(url="embedded") == SignalingConfig("embedded", "127.0.0.1:0", 5.0)


FULL = f"""
[node]
name = "demo-1"
realm = 7
run_dir = "run/here"
shutdown_grace_s = 2
log_level = "DEBUG"  # any case, as Python spells them
hwm_messages = 500

[signaling]
url = "embedded"
listen = "[::1]:9000"
heartbeat_interval_s = 0.5

[webrtc]
stun_urls = ["stun:127.0.0.1:3478", "stuns:stun.example.org"]
turn_urls = [
    "turn:127.0.0.1:3478?transport=udp",
    {{ url = "turns:relay.example.org:5349?transport=tcp", username = "u2", credential = "c2" }},
]
turn_username = "u1"
turn_credential = "c1"
force_relay = true
ice_host_addresses = ["127.0.0.1", "10.200.1.2", "::1"]
connect_timeout_s = 3
keepalive_interval_s = 0.25
keepalive_timeout_s = 1
media_tracks = 2
large_packets = false

[shm]
threshold_bytes = 0
ring_bytes = 4096

[[actor]]
name = "echo"
type = "demo+Echo"
handler = "examples.echo:Echo"
instances = 3
restart = "transient"
max_restarts = 0
restart_window_s = 10
max_concurrency = 1
mailbox_capacity = 1

[[actor.acl]]
permission = "deny"
types = ["demo+Bad"]
realms = [7, 4294967295]

[[actor.acl]]
permission = "allow"

[[actor]]
name = "sink"
type = "demo+Sink"
handler = "sink:Sink"
restart = "temporary"

[dependencies]
echo = {{ actr_type = "demo+Echo", fingerprint = "{FP}" }}
"other.one" = {{ actr_type = "acme+Thing" }}
"""


def test_full_config_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path)
    assert config == Config(
        path=path,
        base_dir=tmp_path,
        node=NodeConfig("demo-1", 7, tmp_path / "run" / "here", 2.0, "debug", 500),
        signaling=SignalingConfig("embedded", "[::1]:9000", 0.5),
        webrtc=WebrtcConfig(
            stun_urls=("stun:127.0.0.1:3478", "stuns:stun.example.org"),
            turn_servers=(
                TurnServer("turn:127.0.0.1:3478?transport=udp", "u1", "c1"),
                TurnServer("turns:relay.example.org:5349?transport=tcp", "u2", "c2"),
            ),
            force_relay=True,
            ice_host_addresses=("127.0.0.1", "10.200.1.2", "::1"),
            connect_timeout_s=3.0,
            keepalive_interval_s=0.25,
            keepalive_timeout_s=1.0,
            media_tracks=2,
            large_packets=False,
        ),
        shm=ShmConfig(threshold_bytes=0, ring_bytes=4096),
        actors=(
            ActorConfig(
                name="echo",
                type=ActrType("demo", "Echo"),
                handler="examples.echo:Echo",
                instances=3,
                restart="transient",
                max_restarts=0,
                restart_window_s=10.0,
                max_concurrency=1,
                mailbox_capacity=1,
                acl=(
                    AclRule("deny", (ActrType("demo", "Bad"),), (7, 4294967295)),
                    AclRule("allow", (), ()),
                ),
            ),
            ActorConfig("sink", ActrType("demo", "Sink"), "sink:Sink", restart="temporary"),
        ),
        dependencies=(
            Dependency("echo", ActrType("demo", "Echo"), FP),
            Dependency("other.one", ActrType("acme", "Thing"), None),
        ),
    )
    # Ints given for float keys come back as floats, so callers never see both.
    assert isinstance(config.node.shutdown_grace_s, float)
    assert isinstance(config.actors[0].restart_window_s, float)
    assert config.actor("sink") is config.actors[1]
    with pytest.raises(KeyError):
        config.actor("nobody")


def test_absolute_run_dir_and_ws_signaling(tmp_path: Path) -> None:
    text = f'[node]\nname = "n"\nrun_dir = "{tmp_path}/abs/../run"\n' + ACTOR
    text += '[signaling]\nurl = "wss://signal.example.org:8443/rtc"\n'
    config = load_config(write(tmp_path, text))
    assert config.node.run_dir == tmp_path / "run"
    assert config.signaling == SignalingConfig("wss://signal.example.org:8443/rtc")


def test_turn_credential_stays_out_of_repr() -> None:
    assert "secret" not in repr(TurnServer("turn:h", "user", "secret"))


# --- broken configs: one exact line each ----------------------------------------------------

BROKEN = [
    # file level
    ("nodes = 1\n" + MINIMAL, f"nodes: unknown key (allowed: {TOP_KEYS})"),
    ('"foo bar" = 1\n' + MINIMAL, f'"foo bar": unknown key (allowed: {TOP_KEYS})'),
    (ACTOR, "node: required table [node] is missing"),
    (NODE, "actor: at least one [[actor]] table is required"),
    ("actor = []\n" + NODE, "actor: at least one [[actor]] table is required (got an empty array)"),
    (
        NODE + '[actor]\nname = "x"\n',
        "actor: must be an array of tables, written [[actor]] (got a table)",
    ),
    ('node = "demo"\n' + ACTOR, "node: must be a table (got 'demo')"),
    # [node]
    ("[node]\nrealm = 1\n" + ACTOR, "node.name: required key is missing"),
    ('[node]\nname = "9lives"\n' + ACTOR, f"node.name: must be {NAME_RULE} (got '9lives')"),
    ('[node]\nname = ""\n' + ACTOR, f"node.name: must be {NAME_RULE} (got '')"),
    # "$" in a pattern matches before a final newline: such names used to pass.
    ('[node]\nname = "demo\\n"\n' + ACTOR, f"node.name: must be {NAME_RULE} (got 'demo\\n')"),
    (
        NODE + '[[actor]]\nname = "echo"\ntype = "demo+Echo\\n"\nhandler = "examples.echo:Echo"\n',
        f"actor[0].type: must be 'manufacturer+name', each {NAME_RULE} (got 'demo+Echo\\n')",
    ),
    (NODE + "realm = true\n" + ACTOR, f"node.realm: {REALM_RANGE} (got true)"),
    (NODE + "realm = 4294967296\n" + ACTOR, f"node.realm: {REALM_RANGE} (got 4294967296)"),
    (NODE + "realm = 2024-01-01\n" + ACTOR, f"node.realm: {REALM_RANGE} (got a date)"),
    (
        NODE + 'nme = "x"\n' + ACTOR,
        "node.nme: unknown key (allowed: name, realm, run_dir, shutdown_grace_s, log_level, "
        "hwm_messages, max_message_bytes, python_path, start_method, metrics_listen, "
        "route_timings, blocked_loop_warning_s)",
    ),
    (
        NODE + "blocked_loop_warning_s = 0.01\n" + ACTOR,
        "node.blocked_loop_warning_s: must be 0 (off) or a number >= 0.05 (got 0.01)",
    ),
    (
        NODE + "blocked_loop_warning_s = -1\n" + ACTOR,
        "node.blocked_loop_warning_s: must be 0 (off) or a number >= 0.05 (got -1)",
    ),
    (
        NODE + 'log_level = "verbose"\n' + ACTOR,
        "node.log_level: must be one of debug, info, warning, error (got 'verbose')",
    ),
    (
        NODE + 'start_method = "fork"\n' + ACTOR,
        "node.start_method: must be one of forkserver, spawn (got 'fork')",
    ),
    (
        NODE + 'metrics_listen = "localhost"\n' + ACTOR,
        "node.metrics_listen: must be 'host:port' with a port from 0 to 65535, e.g. "
        "'127.0.0.1:0' (got 'localhost')",
    ),
    (
        NODE + 'route_timings = "no"\n' + ACTOR,
        "node.route_timings: must be true or false (got 'no')",
    ),
    (
        NODE + "metrics_listen = 9464\n" + ACTOR,
        "node.metrics_listen: must be 'host:port' with a port from 0 to 65535, e.g. "
        "'127.0.0.1:0' (got 9464)",
    ),
    (
        NODE + "max_message_bytes = 1000\n" + ACTOR,
        "node.max_message_bytes: must be an integer from 1024 to 1073741824 (got 1000)",
    ),
    (
        NODE + "hwm_messages = 0\n" + ACTOR,
        "node.hwm_messages: must be an integer from 1 to 2147483647 (got 0)",
    ),
    (  # libzmq's option is a C int: the workers crashed at start
        NODE + "hwm_messages = 2147483648\n" + ACTOR,
        "node.hwm_messages: must be an integer from 1 to 2147483647 (got 2147483648)",
    ),
    (
        NODE + "shutdown_grace_s = -1\n" + ACTOR,
        "node.shutdown_grace_s: must be a number >= 0 (got -1)",
    ),
    (
        NODE + 'shutdown_grace_s = "5s"\n' + ACTOR,
        "node.shutdown_grace_s: must be a number >= 0 (got '5s')",
    ),
    (NODE + 'run_dir = ""\n' + ACTOR, "node.run_dir: must be a non-empty string (got '')"),
    (
        NODE + 'run_dir = "rd\\u0000x"\n' + ACTOR,
        "node.run_dir: must be a path without NUL characters (got 'rd\\x00x')",
    ),
    # [[actor]]
    (
        NODE + ACTOR + "instances = 0\n",
        "actor[0].instances: must be an integer from 1 to 1024 (got 0)",
    ),
    (
        NODE + ACTOR + "instances = 1000000\n",
        "actor[0].instances: must be an integer from 1 to 1024 (got 1000000)",
    ),
    (
        NODE + ACTOR + 'restart = "always"\n',
        "actor[0].restart: must be one of permanent, transient, temporary (got 'always')",
    ),
    (
        NODE + ACTOR + "max_restarts = -1\n",
        "actor[0].max_restarts: must be an integer >= 0 (got -1)",
    ),
    (
        NODE + ACTOR + "restart_window_s = 0\n",
        "actor[0].restart_window_s: must be a number > 0 (got 0)",
    ),
    (
        NODE + ACTOR + "restart_window_s = inf\n",
        "actor[0].restart_window_s: must be a number > 0 (got inf)",
    ),
    (
        NODE + ACTOR + "max_concurrency = 1.5\n",
        "actor[0].max_concurrency: must be an integer >= 1 (got 1.5)",
    ),
    (
        NODE + ACTOR + "mailbox_capacity = 0\n",
        "actor[0].mailbox_capacity: must be an integer >= 1 (got 0)",
    ),
    (
        NODE + ACTOR.replace('"demo+Echo"', '"demoEcho"'),
        f"actor[0].type: must be 'manufacturer+name', each {NAME_RULE} (got 'demoEcho')",
    ),
    (
        NODE + ACTOR.replace('"demo+Echo"', '"demo+Echo+x"'),
        f"actor[0].type: must be 'manufacturer+name', each {NAME_RULE} (got 'demo+Echo+x')",
    ),
    (
        NODE + ACTOR.replace("examples.echo:Echo", "examples.echo.Echo"),
        "actor[0].handler: must be 'module:Class', e.g. 'examples.echo:Echo' "
        "(got 'examples.echo.Echo')",
    ),
    (
        NODE + ACTOR + ACTOR,
        "actor[1].name: duplicate actor name 'echo' (already used by actor[0].name)",
    ),
    (
        NODE + '[[actor]]\nname = "echo"\ntype = "demo+Echo"\n',
        "actor[0].handler: required key is missing",
    ),
    (
        NODE + ACTOR + "instance = 2\n",
        "actor[0].instance: unknown key (allowed: name, type, handler, instances, restart, "
        "max_restarts, restart_window_s, max_concurrency, mailbox_capacity, start_timeout_s, acl, "
        "service_schema, "
        "settings)",
    ),
    # [[actor.acl]]
    (
        NODE + ACTOR + '[[actor.acl]]\npermission = "maybe"\n',
        "actor[0].acl[0].permission: must be one of allow, deny (got 'maybe')",
    ),
    (
        NODE + ACTOR + '[[actor.acl]]\npermission = "allow"\ntypes = "demo+Client"\n',
        "actor[0].acl[0].types: must be an array of 'manufacturer+name' texts (got 'demo+Client')",
    ),
    (
        NODE + ACTOR + '[[actor.acl]]\npermission = "allow"\n[[actor.acl]]\npermission = "deny"\n'
        'types = ["demo+Client", "bad"]\n',
        f"actor[0].acl[1].types[1]: must be 'manufacturer+name', each {NAME_RULE} (got 'bad')",
    ),
    (
        NODE + ACTOR + '[[actor.acl]]\npermission = "allow"\nrealms = [1, -1]\n',
        f"actor[0].acl[0].realms[1]: {REALM_RANGE} (got -1)",
    ),
    (
        NODE + ACTOR + "[[actor.acl]]\ntypes = []\n",
        "actor[0].acl[0].permission: required key is missing",
    ),
    (
        NODE + ACTOR + '[actor.acl]\npermission = "allow"\n',
        "actor[0].acl: must be an array of tables, written [[actor.acl]] (got a table)",
    ),
    # [signaling]
    (
        MINIMAL + '[signaling]\nurl = "http://127.0.0.1:80"\n',
        "signaling.url: must be 'embedded' or a 'ws://host:port' or 'wss://host:port' URL "
        "(got 'http://127.0.0.1:80')",
    ),
    (
        MINIMAL + '[signaling]\nurl = "ws://127.0.0.1:0"\n',
        "signaling.url: must be 'embedded' or a 'ws://host:port' or 'wss://host:port' URL "
        "(got 'ws://127.0.0.1:0')",
    ),
    (MINIMAL + '[signaling]\nlisten = "127.0.0.1:0"\n', "signaling.url: required key is missing"),
    (
        MINIMAL + '[signaling]\nurl = "embedded"\nlisten = "localhost"\n',
        "signaling.listen: must be 'host:port' with a port from 0 to 65535, e.g. '127.0.0.1:0' "
        "(got 'localhost')",
    ),
    (
        MINIMAL + '[signaling]\nurl = "embedded"\nlisten = "127.0.0.1:70000"\n',
        "signaling.listen: must be 'host:port' with a port from 0 to 65535, e.g. '127.0.0.1:0' "
        "(got '127.0.0.1:70000')",
    ),
    (
        MINIMAL + '[signaling]\nlisten = "127.0.0.1:0"\nurl = "ws://127.0.0.1:8765"\n',
        "signaling.listen: only used with url = 'embedded' (url is 'ws://127.0.0.1:8765')",
    ),
    (  # accepted and ignored, against the rule that no key is silently unused (QA)
        MINIMAL + '[signaling]\nurl = "ws://127.0.0.1:8765"\nheartbeat_interval_s = 2\n',
        "signaling.heartbeat_interval_s: only used with url = 'embedded' (url is "
        "'ws://127.0.0.1:8765'); an external server tells its clients its own interval",
    ),
    (
        MINIMAL + '[signaling]\nurl = "embedded"\nheartbeat_interval_s = 0\n',
        "signaling.heartbeat_interval_s: must be a number >= 0.05 (got 0)",
    ),
    (  # 1e-300 flooded the log: 44,000 lines in 25 s
        MINIMAL + '[signaling]\nurl = "embedded"\nheartbeat_interval_s = 1e-300\n',
        "signaling.heartbeat_interval_s: must be a number >= 0.05 (got 1e-300)",
    ),
    (
        MINIMAL + '[signaling]\nurl = "wss://127.0.0.1:8765"\nca_file = "nope.pem"\n',
        "signaling.ca_file: must be the path of an existing PEM file (got 'nope.pem')",
    ),
    (
        MINIMAL + '[signaling]\nurl = "ws://127.0.0.1:8765"\nca_file = "node.toml"\n',
        "signaling.ca_file: only used with a wss:// url (url is 'ws://127.0.0.1:8765')",
    ),
    (  # said as unused, not as missing (QA)
        MINIMAL + '[signaling]\nurl = "ws://127.0.0.1:8765"\nca_file = "nope.pem"\n',
        "signaling.ca_file: only used with a wss:// url (url is 'ws://127.0.0.1:8765')",
    ),
    # [webrtc]
    (
        MINIMAL + '[webrtc]\nstun_urls = ["http://x"]\n',
        "webrtc.stun_urls[0]: must be a 'stun:host[:port]' or 'stuns:host[:port]' URL "
        "(got 'http://x')",
    ),
    (
        MINIMAL + '[webrtc]\nstun_urls = "stun:127.0.0.1"\n',
        "webrtc.stun_urls: must be an array of URLs (got 'stun:127.0.0.1')",
    ),
    (
        MINIMAL + "[webrtc]\nmedia_tracks = 0\n",
        "webrtc.media_tracks: must be an integer from 1 to 16 (got 0)",
    ),
    (
        MINIMAL + "[webrtc]\nmedia_tracks = 17\n",
        "webrtc.media_tracks: must be an integer from 1 to 16 (got 17)",
    ),
    (
        MINIMAL + "[webrtc]\n" + TURN.replace("3478", "99999"),
        "webrtc.turn_urls[0]: must be a 'turn:host[:port][?transport=udp|tcp]' or 'turns:...' "
        "URL (got 'turn:127.0.0.1:99999')",
    ),
    (
        MINIMAL + "[webrtc]\n" + TURN.replace("127.0.0.1", "[::1]"),
        "webrtc.turn_urls[0]: cannot name an IPv6 address (aiortc does not read one in a "
        "STUN or TURN URL): give a host name or an IPv4 address (got 'turn:[::1]:3478')",
    ),
    (
        MINIMAL + '[webrtc]\nstun_urls = ["stun:[fd00::1]:3478"]\n',
        "webrtc.stun_urls[0]: cannot name an IPv6 address (aiortc does not read one in a "
        "STUN or TURN URL): give a host name or an IPv4 address (got 'stun:[fd00::1]:3478')",
    ),
    (
        MINIMAL + '[webrtc]\nturn_urls = ["turn:127.0.0.1?transport=sctp"]\n',
        "webrtc.turn_urls[0]: must be a 'turn:host[:port][?transport=udp|tcp]' or 'turns:...' "
        "URL (got 'turn:127.0.0.1?transport=sctp')",
    ),
    (
        MINIMAL + '[webrtc]\nturn_urls = ["turn:127.0.0.1"]\nturn_credential = "c"\n',
        "webrtc.turn_username: required when turn_urls has plain-string entries",
    ),
    (
        MINIMAL + '[webrtc]\nturn_username = "u"\nturn_credential = "c"\n',
        "webrtc.turn_username: only applies to plain-string entries of turn_urls (none given)",
    ),
    (
        MINIMAL + '[webrtc]\nturn_urls = [{ url = "turn:h", username = "u" }]\n',
        "webrtc.turn_urls[0].credential: required key is missing",
    ),
    (
        MINIMAL + '[webrtc]\nturn_urls = [{ url = "turn:h", password = "p" }]\n',
        "webrtc.turn_urls[0].password: unknown key (allowed: url, username, credential)",
    ),
    (
        MINIMAL + "[webrtc]\nturn_urls = [5]\n",
        "webrtc.turn_urls[0]: must be a 'turn:host[:port]' URL or a table "
        "{ url, username, credential } (got 5)",
    ),
    (
        MINIMAL + "[webrtc]\nlarge_packets = 1\n",
        "webrtc.large_packets: must be true or false (got 1)",
    ),
    (
        MINIMAL + '[webrtc]\nforce_relay = "yes"\n',
        "webrtc.force_relay: must be true or false (got 'yes')",
    ),
    (
        MINIMAL + "[webrtc]\nforce_relay = true\n",
        "webrtc.force_relay: is true but turn_urls names no TURN server to relay",
    ),
    (
        MINIMAL + "[webrtc]\nkeepalive_timeout_s = 1\n",
        "webrtc.keepalive_timeout_s: must be more than twice keepalive_interval_s (0.5), got 1",
    ),
    (
        MINIMAL + "[webrtc]\nkeepalive_interval_s = 0\n",
        "webrtc.keepalive_interval_s: must be a number >= 0.01 (got 0)",
    ),
    (
        MINIMAL + "[webrtc]\nice_host_addresses = []\n",
        "webrtc.ice_host_addresses: must be a non-empty array of IP addresses (got an empty array)",
    ),
    (
        MINIMAL + '[webrtc]\nice_host_addresses = ["0.0.0.0"]\n',
        "webrtc.ice_host_addresses[0]: must be a unicast address of this host, such as "
        "'10.0.0.5' (got '0.0.0.0')",
    ),
    (
        MINIMAL + '[webrtc]\nice_host_addresses = ["10.0.0.5", "ff02::1"]\n',
        "webrtc.ice_host_addresses[1]: must be a unicast address of this host, such as "
        "'10.0.0.5' (got 'ff02::1')",
    ),
    (  # offered twice, as two candidates (QA)
        MINIMAL + '[webrtc]\nice_host_addresses = ["127.0.0.1", "::1", "127.0.0.1"]\n',
        "webrtc.ice_host_addresses[2]: '127.0.0.1' is listed twice",
    ),
    (
        MINIMAL + '[webrtc]\nice_host_addresses = ["127.0.0.1", "localhost"]\n',
        "webrtc.ice_host_addresses[1]: must be an IP address such as '127.0.0.1' (got 'localhost')",
    ),
    (
        MINIMAL + "[webrtc]\nconnect_timeout_s = nan\n",
        "webrtc.connect_timeout_s: must be a number > 0 (got nan)",
    ),
    (
        MINIMAL + '[webrtc]\nstun_urls = ["stun:127.0.0.1:3478"]\n',
        "webrtc: is only used with [signaling] (this node has none)",
    ),
    # [shm]
    (
        MINIMAL + "[shm]\nring_bytes = 1024\n",
        "shm.ring_bytes: must be an integer from 4096 to 4294967296 (got 1024)",
    ),
    (
        MINIMAL + "[shm]\nring_bytes = 1099511627776\n",
        "shm.ring_bytes: must be an integer from 4096 to 4294967296 (got 1099511627776)",
    ),
    (
        MINIMAL + "[shm]\nring_bytes = 4097\n",
        "shm.ring_bytes: must be a multiple of 8 (records are 8-byte aligned) (got 4097)",
    ),
    (
        MINIMAL + "[shm]\nthreshold_bytes = -1\n",
        "shm.threshold_bytes: must be an integer >= 0 (got -1)",
    ),
    (
        MINIMAL + "[shm]\nring_bytes = 8192\nthreshold_bytes = 8192\n",
        "shm.ring_bytes: ring_bytes (8192) must be greater than threshold_bytes (8192)",
    ),
    (
        MINIMAL + "[shm]\nthreshold_bytes = 67108864\n",
        "shm.threshold_bytes: ring_bytes (67108864) must be greater than threshold_bytes "
        "(67108864)",
    ),
    # [dependencies]
    (
        MINIMAL + '[dependencies]\necho = { actr_type = "demo+Echo", fingerprint = "sha256:ab" }\n',
        "dependencies.echo.fingerprint: must be 'service_semantic:' followed by 64 lowercase "
        "hex digits (got 'sha256:ab')",
    ),
    (
        MINIMAL
        + f'[dependencies]\necho = {{ actr_type = "demo+Echo", fingerprint = "{FP.upper()}" }}\n',
        "dependencies.echo.fingerprint: must be 'service_semantic:' followed by 64 lowercase "
        f"hex digits (got {FP.upper()[:57]!r}...)",
    ),
    (
        MINIMAL + f'[dependencies]\necho = {{ fingerprint = "{FP}" }}\n',
        "dependencies.echo.actr_type: required key is missing",
    ),
    (
        MINIMAL + '[dependencies]\necho = "demo+Echo"\n',
        "dependencies.echo: must be a table such as { actr_type = 'demo+Echo' } (got 'demo+Echo')",
    ),
    (
        MINIMAL + '[dependencies]\n"my dep" = { actr_type = "demo+Echo" }\n',
        f"dependencies.\"my dep\": dependency name must be {NAME_RULE} (got 'my dep')",
    ),
    (
        MINIMAL + '[dependencies]\necho = { actr_type = "demo+Echo", version = 2 }\n',
        "dependencies.echo.version: unknown key (allowed: actr_type, fingerprint)",
    ),
    # the first mistake in file order wins
    (
        NODE + ACTOR + "instances = 0\nbogus = 1\n",
        "actor[0].instances: must be an integer from 1 to 1024 (got 0)",
    ),
    (
        NODE + ACTOR + "bogus = 1\ninstances = 0\n",
        "actor[0].bogus: unknown key (allowed: name, type, handler, instances, restart, "
        "max_restarts, restart_window_s, max_concurrency, mailbox_capacity, start_timeout_s, acl, "
        "service_schema, "
        "settings)",
    ),
    (
        ACTOR + 'instances = 0\n[node]\nname = "9"\n',
        "actor[0].instances: must be an integer from 1 to 1024 (got 0)",
    ),
    (
        '[shm]\nring_bytes = 1\n[node]\nname = "9"\n' + ACTOR,
        "shm.ring_bytes: must be an integer from 4096 to 4294967296 (got 1)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN, ids=[e.split(":")[0] for _, e in BROKEN])
def test_broken_config_reports_one_exact_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = error_of(str(path))
    assert message == f"{path}: {expected}"
    assert "\n" not in message


def test_a_service_schema_that_does_not_parse_is_a_config_error(tmp_path: Path) -> None:
    # It used to pass the check, to be refused by signaling at registration, or never.
    (tmp_path / "svc.proto").write_text('syntax = "proto3";\nmessage A { int32 x = ; }\n')
    path = write(tmp_path, NODE + ACTOR + 'service_schema = "svc.proto"\n')
    assert error_of(path) == (
        f"{path}: actor[0].service_schema: {tmp_path / 'svc.proto'} is not a .proto schema: "
        "line 2: expected field number, found ';'"
    )


def test_python_path_entries_must_be_existing_folders(tmp_path: Path) -> None:
    # A misspelt entry passed `actrhost check`; the handler was then not found, or a module
    # of the same name elsewhere on sys.path was imported instead.
    (tmp_path / "lib").mkdir()
    (tmp_path / "file.py").write_text("")
    path = write(tmp_path, NODE + 'python_path = ["lib", "libs"]\n' + ACTOR)
    assert error_of(path) == (
        f"{path}: node.python_path[1]: must be the path of an existing folder "
        f"(nothing at {tmp_path / 'libs'})"
    )
    path = write(tmp_path, NODE + 'python_path = ["file.py"]\n' + ACTOR)
    assert error_of(path) == (
        f"{path}: node.python_path[0]: must be the path of an existing folder "
        f"({tmp_path / 'file.py'} is no folder)"
    )


def test_error_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, NODE)
    monkeypatch.chdir(tmp_path)
    assert error_of("node.toml") == "node.toml: actor: at least one [[actor]] table is required"
    assert error_of(Path("./node.toml")).startswith("node.toml: actor: ")


def test_odd_paths_and_deep_nesting_are_one_line_too(tmp_path: Path) -> None:
    # Each was a traceback and exit 1 (QA).
    path = write(
        tmp_path, MINIMAL.replace('name = "demo"\n', 'name = "demo"\nrun_dir = "~nobody_qa22/x"\n')
    )
    assert error_of(path) == (
        f"{path}: node.run_dir: '~nobody_qa22/x': Could not determine home directory."
    )
    long_name = "x" * 300 + ".proto"
    path = write(tmp_path, MINIMAL + f'service_schema = "{long_name}"\n')
    assert error_of(path) == (
        f"{path}: actor[0].service_schema: cannot look at '{tmp_path / long_name}': "
        "File name too long"
    )
    path = write(tmp_path, MINIMAL + "[node.x]\ny = " + "[" * 1000 + "]" * 1000 + "\n")
    assert error_of(path) == f"{path}: invalid TOML: nested too deeply"
    odd = tmp_path / "new\nline.toml"
    assert (
        error_of(odd)
        == f"{tmp_path}/new\\nline.toml: cannot read the file: No such file or directory"
    )


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_of(missing) == f"{missing}: cannot read the file: No such file or directory"
    assert error_of(tmp_path) == f"{tmp_path}: cannot read the file: Is a directory"
    assert error_of("") == "'': the config path is empty"


def test_what_is_not_a_regular_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    # /dev/zero was read for ever, and a FIFO waited for a writer (QA).
    assert error_of("/dev/zero") == "/dev/zero: not a regular file"
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    assert error_of(fifo) == f"{fifo}: not a regular file"
    huge = tmp_path / "huge.toml"
    with huge.open("wb") as f:
        f.truncate(17 * 1024 * 1024)
    assert error_of(huge) == f"{huge}: 17,825,792 bytes: larger than a config can be"


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b'[node]\nname = "\xff"\n')
    assert error_of(path) == f"{path}: not UTF-8 text: invalid start byte at byte 15"


def test_a_utf8_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    # As a Windows editor saves it: "invalid TOML: Invalid statement" said nothing (QA).
    path = write(tmp_path, "\ufeff" + '[node]\nname = "bom"\n' + ACTOR)
    assert load_config(path).node.name == "bom"


@pytest.mark.parametrize(
    "text",
    ["[node\n", '[node]\nname = "a"\nname = "b"\n', "x = \n", 'a = """\n'],
    ids=["table", "duplicate", "value", "unterminated"],
)
def test_invalid_toml_reports_tomllib_message(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(tomllib.TOMLDecodeError) as info:
        tomllib.loads(text)
    assert error_of(path) == f"{path}: invalid TOML: {info.value}"


# --- ACLs --------------------------------------------------------------------------------

CLIENT = ActrType("demo", "Client")
BAD = ActrType("demo", "Bad")
OTHER = ActrType("acme", "Other")


def actor_with(*rules: AclRule) -> ActorConfig:
    return ActorConfig("a", ActrType("demo", "A"), "m:A", acl=rules)


def test_no_rules_allow_everyone() -> None:
    assert actor_with().acl_allows(OTHER, 99)


def test_first_matching_rule_wins() -> None:
    deny_first = actor_with(AclRule("deny", (BAD,)), AclRule("allow"))
    assert not deny_first.acl_allows(BAD, 1)
    assert deny_first.acl_allows(CLIENT, 1)
    allow_first = actor_with(AclRule("allow"), AclRule("deny", (BAD,)))
    assert allow_first.acl_allows(BAD, 1)


def test_rules_that_do_not_match_deny() -> None:
    allow_clients = actor_with(AclRule("allow", (CLIENT,)))
    assert allow_clients.acl_allows(CLIENT, 5)
    assert not allow_clients.acl_allows(OTHER, 5)


def test_rule_needs_both_type_and_realm_to_match() -> None:
    rule = AclRule("allow", (CLIENT,), (1, 2))
    assert rule.matches(CLIENT, 2)
    assert not rule.matches(CLIENT, 3)
    assert not rule.matches(OTHER, 1)
    assert AclRule("allow", (), (3,)).matches(OTHER, 3)
    assert AclRule("deny").matches(OTHER, 0)


def test_a_caller_without_an_actor_id_matches_only_rules_without_types() -> None:
    # None: a Shell attached to another node (docs/gateway.md, Trust).
    assert actor_with().acl_allows(None, 1)
    assert not actor_with(AclRule("allow", (CLIENT,))).acl_allows(None, 1)
    assert actor_with(AclRule("allow", (), (1,))).acl_allows(None, 1)
    assert not actor_with(AclRule("allow", (), (2,))).acl_allows(None, 1)
    assert not actor_with(AclRule("deny", (BAD,)), AclRule("deny")).acl_allows(None, 1)


def test_signaling_ca_file_must_hold_certificates(tmp_path: Path) -> None:
    from actrhost.signaling._testing import write_self_signed_certificate

    cert, _key = write_self_signed_certificate(tmp_path)
    text = MINIMAL + '[signaling]\nurl = "wss://127.0.0.1:8765"\nca_file = "cert.pem"\n'
    assert load_config(write(tmp_path, text)).signaling.ca_file == cert
    cert.write_text("garbage\n")
    message = error_of(write(tmp_path, text))
    assert message.startswith(
        f"{tmp_path / 'node.toml'}: signaling.ca_file: {cert} holds no usable"
    )


def test_acl_from_toml(tmp_path: Path) -> None:
    text = NODE + ACTOR + '[[actor.acl]]\npermission = "deny"\nrealms = [2]\n'
    text += '[[actor.acl]]\npermission = "allow"\ntypes = ["demo+Client", "acme+Other"]\n'
    echo = load_config(write(tmp_path, text)).actor("echo")
    assert echo.acl_allows(CLIENT, 1)
    assert echo.acl_allows(OTHER, 1)
    assert not echo.acl_allows(CLIENT, 2)  # the realm deny comes first
    assert not echo.acl_allows(BAD, 1)  # rules exist, none matches


# --- handler resolution ---------------------------------------------------------------------

HANDLERS = """
from actrhost._actor import Actor

class Echo(Actor):
    pass

class Plain:
    pass

def function():
    pass

class NeedsArgs(Actor):
    def __init__(self, size):
        self.size = size

class Defaults(Actor):
    def __init__(self, size=3):
        self.size = size
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module name unique to this test, and clean sys.path / sys.modules afterwards.

    xdist runs many tests in one process, so two tests must never import the same name.
    """
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = "cfgmod_" + re.sub(r"\W", "_", tmp_path.name)
    yield name
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]


def config_with_handler(tmp_path: Path, handler: str) -> tuple[Config, ActorConfig]:
    # Two actors, so the error key shows the index of the right one.
    text = NODE + ACTOR + f'[[actor]]\nname = "two"\ntype = "demo+Two"\nhandler = "{handler}"\n'
    config = load_config(write(tmp_path, text))
    return config, config.actors[1]


def handler_error(config: Config, actor: ActorConfig) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_handler(config, actor)
    return str(info.value)


def test_handler_resolves_from_config_folder(tmp_path: Path, module: str) -> None:
    (tmp_path / f"{module}.py").write_text(HANDLERS)
    config, actor = config_with_handler(tmp_path, f"{module}:Echo")
    cls = resolve_handler(config, actor)
    assert cls.__name__ == "Echo"
    assert issubclass(cls, Actor)
    assert sys.path[0] == str(tmp_path)  # kept first for worker imports
    assert resolve_handler(config, actor) is cls  # a second call is harmless


def test_handler_in_a_package(tmp_path: Path, module: str) -> None:
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text("")
    (tmp_path / module / "actors.py").write_text(HANDLERS)
    config, actor = config_with_handler(tmp_path, f"{module}.actors:Echo")
    assert resolve_handler(config, actor).__module__ == f"{module}.actors"


def test_handler_errors(tmp_path: Path, module: str) -> None:
    path = tmp_path / f"{module}.py"
    path.write_text(HANDLERS)
    config, actor = config_with_handler(tmp_path, f"{module}:Echo")
    prefix = f"{tmp_path / 'node.toml'}: actor[1].handler: "

    def error(handler: str) -> str:
        return handler_error(config, dataclasses.replace(actor, handler=handler))

    assert error("no_colon") == prefix + (
        "must be 'module:Class', e.g. 'examples.echo:Echo' (got 'no_colon')"
    )
    assert (
        error(f"{module}:Missing") == prefix + f"module {module!r} ({path}) has no class 'Missing'"
    )
    assert error(f"{module}:function") == prefix + (
        f"'{module}:function' is not a class (got a function)"
    )
    assert error(f"{module}:Plain") == prefix + (
        f"class '{module}:Plain' ({path}) does not subclass actrhost.Actor"
    )
    assert error(f"{module}:Actor") == prefix + (
        f"'{module}:Actor' is actrhost.Actor itself: name your subclass of it"
    )
    # The worker creates the class with no arguments: find out now, not at every start.
    assert error(f"{module}:NeedsArgs") == prefix + (
        f"class '{module}:NeedsArgs' cannot be created without arguments: missing a "
        "required argument: 'size'"
    )
    assert resolve_handler(config, dataclasses.replace(actor, handler=f"{module}:Defaults"))


TYPED_HANDLERS = """
from __future__ import annotations
from typing import TYPE_CHECKING
from google.protobuf.wrappers_pb2 import StringValue
from actrhost import Actor, rpc
if TYPE_CHECKING:
    from google.protobuf.wrappers_pb2 import Int64Value
    from actrhost import Context

class Typed(Actor):
    @rpc("t.Typed.Upper")
    async def upper(self, ctx: Context, request: StringValue) -> StringValue:
        return request

class Hidden(Actor):
    @rpc("t.Hidden.Count")
    async def count(self, ctx: Context, request: Int64Value) -> Int64Value:
        return request
"""


def test_a_request_annotation_is_resolved_on_its_own(tmp_path: Path, module: str) -> None:
    # `ctx: Context` imported for mypy only made every annotation "unresolvable": the
    # request came as bytes, and `request.value` failed at each call (QA).
    (tmp_path / f"{module}.py").write_text(TYPED_HANDLERS)
    config, actor = config_with_handler(tmp_path, f"{module}:Typed")
    routes = collect_routes(resolve_handler(config, actor)())
    assert routes["t.Typed.Upper"].request_type is StringValue
    # A request's own annotation that does not resolve is refused, not taken as bytes.
    hidden = dataclasses.replace(actor, handler=f"{module}:Hidden")
    assert handler_error(config, hidden) == (
        f"{config.path}: actor[1].handler: Hidden.count: the annotation of its request, "
        "'Int64Value', does not resolve when it runs (NameError: name 'Int64Value' is not "
        "defined); import a message class outside `if TYPE_CHECKING:` (a request annotated "
        "with one is decoded)"
    )


def test_handler_errors_name_the_config_path_as_given(
    tmp_path: Path, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / f"{module}.py").write_text(HANDLERS)
    write(tmp_path, NODE + ACTOR.replace('"examples.echo:Echo"', f'"{module}:Plain"'))
    monkeypatch.chdir(tmp_path)
    config = load_config("node.toml")
    assert handler_error(config, config.actors[0]).startswith("node.toml: actor[0].handler: ")


def test_a_handler_module_calling_sys_exit_is_a_config_error(tmp_path: Path, module: str) -> None:
    (tmp_path / f"{module}.py").write_text("import sys\nsys.exit(3)\n")
    config, actor = config_with_handler(tmp_path, f"{module}:Echo")
    assert handler_error(config, actor) == (
        f"{tmp_path / 'node.toml'}: actor[1].handler: importing '{module}' called sys.exit(3)"
    )


def test_a_handler_module_raising_a_base_exception_is_a_config_error(
    tmp_path: Path, module: str
) -> None:
    (tmp_path / f"{module}.py").write_text(
        "class Boom(BaseException):\n    pass\nraise Boom('at import')\n"
    )
    config, actor = config_with_handler(tmp_path, f"{module}:Echo")
    assert handler_error(config, actor) == (
        f"{tmp_path / 'node.toml'}: actor[1].handler: importing '{module}' raised Boom: at import"
    )


def test_handler_module_not_found(tmp_path: Path, module: str) -> None:
    config, actor = config_with_handler(tmp_path, f"{module}.sub:Echo")
    assert handler_error(config, actor) == (
        f"{tmp_path / 'node.toml'}: actor[1].handler: module '{module}.sub' not found "
        f"(searched {tmp_path} first, then sys.path)"
    )


@pytest.mark.parametrize(
    ("source", "raised"),
    [
        ('raise RuntimeError("boom\\n  second line")', "RuntimeError: boom second line"),
        (
            "import cfg_no_such_dependency_xyz",
            "ModuleNotFoundError: No module named 'cfg_no_such_dependency_xyz'",
        ),
        ("raise KeyError", "KeyError"),
    ],
    ids=["runtime-error", "missing-dependency", "no-message"],
)
def test_handler_import_raising(tmp_path: Path, module: str, source: str, raised: str) -> None:
    (tmp_path / f"{module}.py").write_text(source + "\n")
    config, actor = config_with_handler(tmp_path, f"{module}:Echo")
    assert handler_error(config, actor) == (
        f"{tmp_path / 'node.toml'}: actor[1].handler: importing '{module}' raised {raised}"
    )


def test_handler_syntax_error(tmp_path: Path, module: str) -> None:
    (tmp_path / f"{module}.py").write_text("class Echo(:\n")
    config, actor = config_with_handler(tmp_path, f"{module}:Echo")
    message = handler_error(config, actor)
    assert message.startswith(
        f"{tmp_path / 'node.toml'}: actor[1].handler: importing '{module}' raised SyntaxError: "
    )
    assert "\n" not in message
