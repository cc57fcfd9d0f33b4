"""The control protocol between the supervisor and its workers and Shell clients.

Small JSON messages, one per ZeroMQ frame, over the supervisor's ROUTER socket
``<run dir>/control.sock``. It is off the data path (a handful of messages per start,
death or status request), so readability wins over bytes; see docs/protocol.md.

Every message is an object with ``"op"``. Requests from a Shell carry ``"req"`` (an
integer) and the supervisor's answer carries the same ``"req"``.
"""

from __future__ import annotations

import json
from typing import Any

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


def encode(message: dict[str, Any]) -> bytes:
    """One control message as a frame."""
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any] | None:
    """Parse a frame; None when it is not a JSON object with an ``op`` string."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        return None
    return message
