"""The control protocol between the supervisor and its workers and Shell clients.

Small JSON messages, one per ZeroMQ frame, over the supervisor's ROUTER socket
``<run dir>/control.sock``. It is off the data path (a handful of messages per start,
death or status request), so readability wins over bytes; see docs/protocol.md.

Every message is an object with ``"op"``. Requests from a Shell carry ``"req"`` (an
integer) and the supervisor's answer carries the same ``"req"``.
"""

from __future__ import annotations

import json
from typing import Any, get_args, get_origin

CONTROL_SOCKET = "control.sock"

# worker -> supervisor
HELLO = "hello"  # {serial, pid}: the worker's process is up, send it the directory
STATE = "state"  # {state, error?}: the worker's actor changed state
STATS = "stats"  # {req, stats}: answer to a stats request

# supervisor -> worker / Shell
DIRECTORY = "directory"  # {actors: [...], shells: [...]}
STOP = "stop"  # graceful stop
STATS_REQUEST = "stats_request"  # {req}

# Shell -> supervisor (answered with the same op and "req")
ATTACH = "attach"  # {endpoint, routes}: subscribe to directory updates, serve routes
DETACH = "detach"
STATUS = "status"  # per-actor state and counters
SHUTDOWN = "shutdown"  # stop the node (what SIGTERM does)
# {actors: [names], gateway_only}: rolling restart; answer {restarted} or {error, code}
RESTART = "restart"


#: The fields of the messages a supervisor receives, and their types. A message with a
#: field of another type comes from a buggy or foreign client and is refused whole, with
#: the field named, not half-handled.
_FIELD_TYPES: dict[str, Any] = {
    "req": int,
    "pid": int,
    "serial": int,
    "state": str,
    "error": str,
    "stats": dict,
    "endpoint": str,
    "routes": list[str],
    "actors": list[str],
    "gateway_only": bool,
    "ids": list[dict],
}


def problem(message: dict[str, Any]) -> str | None:
    """What is wrong with a decoded message's fields, or None."""
    for name, expected in _FIELD_TYPES.items():
        if name not in message:
            continue
        value = message[name]
        if get_origin(expected) is list:
            (item,) = get_args(expected)
            if not (isinstance(value, list) and all(isinstance(v, item) for v in value)):
                return f"field {name!r} must be a list of {item.__name__}, not {value!r:.60}"
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return f"field {name!r} must be {expected.__name__}, not {value!r:.60}"
    return None


def worker_routing_id(serial: int, pid: int) -> bytes:
    """The routing id of the worker process ``pid`` of actor ``serial`` on the control
    socket: ``w:<serial>.<pid>`` in hex, the only form the supervisor accepts (``w:0ab.1``
    is not ``w:ab.1``). The pid makes each process's its own: a worker forked by a
    forkserver that died before saying so, and the one spawned instead, both connect (one
    identity locked the second out: it never ran, and was restarted for ever, QA)."""
    return f"w:{serial:x}.{pid:x}".encode()


def parse_worker_routing_id(routing_id: bytes) -> tuple[int, int] | None:
    """``(serial, pid)`` of a worker's routing id in its only form, else None."""
    try:
        serial, pid = (int(part, 16) for part in routing_id.removeprefix(b"w:").split(b"."))
    except ValueError:
        return None
    return (serial, pid) if worker_routing_id(serial, pid) == routing_id else None


def encode(message: dict[str, Any]) -> bytes:
    """One control message as a frame."""
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any] | None:
    """Parse a frame; None when it is not a JSON object with an ``op`` string."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested 100,000 deep, say
        return None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        return None
    return message
