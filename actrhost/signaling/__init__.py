"""Signaling: registration, credentials, presence, discovery and relay over WebSocket.

Server side: :func:`run_server` (``async with``) or :class:`SignalingServer`
(start/stop), and :func:`serve_main` for ``actrhost signal``. Client side:
:class:`SignalingClient`, whose :meth:`~SignalingClient.register` returns a
:class:`Registration` per actor; :func:`discover_locked` adds the ``Actr.lock.toml`` /
``compat.lock.toml`` behaviour on top of :meth:`Registration.discover`.
See ``docs/signaling.md``.
"""

from ._acl import AclPermission, AclRule, acl_allows
from ._client import ConnectionState, Registration, SignalingClient
from ._credentials import Credential, KeyRing, write_key_file
from ._discovery import discover_locked
from ._run import run_server, serve_main
from ._server import SignalingServer
from ._types import (
    Availability,
    CandidateCompatibility,
    DiscoveryResult,
    IceCandidate,
    RelayMessage,
    RelayPayload,
    RoleAssignment,
    RoleNegotiation,
    RouteCandidate,
    SdpAnswer,
    SdpOffer,
)

__all__ = [
    "AclPermission",
    "AclRule",
    "Availability",
    "CandidateCompatibility",
    "ConnectionState",
    "Credential",
    "DiscoveryResult",
    "IceCandidate",
    "KeyRing",
    "Registration",
    "RelayMessage",
    "RelayPayload",
    "RoleAssignment",
    "RoleNegotiation",
    "RouteCandidate",
    "SdpAnswer",
    "SdpOffer",
    "SignalingClient",
    "SignalingServer",
    "acl_allows",
    "discover_locked",
    "run_server",
    "serve_main",
    "write_key_file",
]

# Public names report the public module (as trio does), so reprs and docs don't point
# users at private modules. RelayPayload, a union, has no settable __module__.
for _name in __all__:
    try:
        globals()[_name].__module__ = __name__
    except (AttributeError, TypeError):
        pass
del _name
