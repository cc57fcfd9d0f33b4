"""Encoding of the signaling protocol: the one module that imports ``signaling_pb2``.

Everything else in ``actrhost.signaling`` works with the envelope objects returned here
and converts identities and results with these helpers, so a change of the generated
code touches this file only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from .._errors import BadRequest, error_from_code
from .._ids import ActrId, ActrType, Realm
from ..proto import actr_pb2, signaling_pb2
from ._acl import AclPermission, AclRule
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

# The generated modules have no type stubs (and mypy skips *_pb2.py): Any to checkers.
_pb: Any = signaling_pb2
_actr_pb: Any = actr_pb2

PROTOCOL_VERSION = 1

# The generated classes have no type stubs: to type checkers these names are Any.
if TYPE_CHECKING:
    Envelope = Any
    PbActrId = Any
else:
    Envelope = _pb.SignalingEnvelope
    PbActrId = _actr_pb.ActrId

AVAILABILITY_TO_PB = {
    Availability.AVAILABLE: _pb.AVAILABLE,
    Availability.DEGRADED: _pb.DEGRADED,
    Availability.DRAINING: _pb.DRAINING,
}
# Unspecified counts as available: a client that never says otherwise is serving.
AVAILABILITY_FROM_PB = {v: k for k, v in AVAILABILITY_TO_PB.items()} | {
    _pb.AVAILABILITY_UNSPECIFIED: Availability.AVAILABLE
}

COMPATIBILITY_TO_PB = {
    CandidateCompatibility.UNCHECKED: _pb.COMPATIBILITY_UNSPECIFIED,
    CandidateCompatibility.EXACT: _pb.EXACT,
    CandidateCompatibility.BACKWARD_COMPATIBLE: _pb.BACKWARD_COMPATIBLE,
    CandidateCompatibility.UNKNOWN: _pb.UNKNOWN,
    CandidateCompatibility.BREAKING: _pb.BREAKING,
}
COMPATIBILITY_FROM_PB = {v: k for k, v in COMPATIBILITY_TO_PB.items()}

RANKING_COMPATIBILITY = _pb.COMPATIBILITY
RANKING_AVAILABILITY = _pb.AVAILABILITY
RANKING_BACKLOG = _pb.MAILBOX_BACKLOG
RANKING_BY_NAME = {
    "compatibility": _pb.COMPATIBILITY,
    "availability": _pb.AVAILABILITY,
    "mailbox_backlog": _pb.MAILBOX_BACKLOG,
}

_ACL_PERMISSION_TO_PB = {
    AclPermission.ALLOW: _pb.AclRule.ALLOW,
    AclPermission.DENY: _pb.AclRule.DENY,
}
_ACL_PERMISSION_FROM_PB = {v: k for k, v in _ACL_PERMISSION_TO_PB.items()}


def new_envelope(envelope_id: str = "", reply_for: str = "", traceparent: str = "") -> Envelope:
    """An empty envelope of the current protocol version."""
    return _pb.SignalingEnvelope(
        version=PROTOCOL_VERSION,
        envelope_id=envelope_id,
        reply_for=reply_for,
        traceparent=traceparent,
    )


def decode(data: bytes | str) -> Envelope:
    """Parse one frame; raises :class:`BadRequest` for text frames and undecodable bytes."""
    if isinstance(data, str):
        raise BadRequest("text frame: the signaling protocol uses binary frames")
    env = _pb.SignalingEnvelope()
    try:
        env.ParseFromString(data)
    except DecodeError as exc:
        raise BadRequest(f"undecodable envelope: {exc}") from None
    return env


def error_frame(code: int, message: str, reply_for: str = "") -> bytes:
    """An encoded SignalingError reply."""
    env = new_envelope(reply_for=reply_for)
    env.error.code = code
    env.error.message = message
    frame: bytes = env.SerializeToString()
    return frame


def raise_if_error(env: Envelope) -> None:
    """Raise the ActrError subclass for an error envelope; return for any other."""
    if env.WhichOneof("flow") == "error":
        raise error_from_code(env.error.code, env.error.message)


# -- identities ----------------------------------------------------------------------------


def set_actr_id(target: PbActrId, actr_id: ActrId) -> None:
    """Fill a protobuf ActrId in place."""
    target.realm.realm_id = actr_id.realm.realm_id
    target.serial_number = actr_id.serial_number
    target.type.manufacturer = actr_id.type.manufacturer
    target.type.name = actr_id.type.name


def actr_id_to_pb(actr_id: ActrId) -> PbActrId:
    """A new protobuf ActrId."""
    msg = _actr_pb.ActrId()
    set_actr_id(msg, actr_id)
    return msg


def actr_id_from_pb(msg: PbActrId) -> ActrId:
    """Convert a protobuf ActrId; raises :class:`BadRequest` when its type is invalid."""
    return ActrId(
        Realm(msg.realm.realm_id),
        msg.serial_number,
        ActrType(msg.type.manufacturer, msg.type.name),
    )


def actr_type_from_pb(msg: Any) -> ActrType:
    """Convert a protobuf ActrType; raises :class:`BadRequest` when invalid."""
    return ActrType(msg.manufacturer, msg.name)


def set_actr_type(target: Any, actr_type: ActrType) -> None:
    """Fill a protobuf ActrType in place."""
    target.manufacturer = actr_type.manufacturer
    target.name = actr_type.name


# -- ACL -------------------------------------------------------------------------------


def acl_to_pb(rules: Iterable[AclRule], target: Any) -> None:
    """Append ``rules`` to a repeated AclRule field."""
    for rule in rules:
        msg = target.add()
        msg.permission = _ACL_PERMISSION_TO_PB[rule.permission]
        for t in rule.types:
            set_actr_type(msg.types.add(), t)
        msg.realms.extend(rule.realms)


def acl_from_pb(msgs: Iterable[Any]) -> tuple[AclRule, ...]:
    """Convert a repeated AclRule field; raises :class:`BadRequest` on a bad rule."""
    rules = []
    for i, msg in enumerate(msgs):
        permission = _ACL_PERMISSION_FROM_PB.get(msg.permission)
        if permission is None:
            raise BadRequest(f"acl[{i}]: permission must be ALLOW or DENY")
        types = tuple(actr_type_from_pb(t) for t in msg.types)
        rules.append(AclRule(permission, types, tuple(msg.realms)))
    return tuple(rules)


# -- discovery -------------------------------------------------------------------------


def candidates_from_pb(msgs: Iterable[Any]) -> tuple[RouteCandidate, ...]:
    """Convert a repeated RouteCandidate field."""
    return tuple(
        RouteCandidate(
            actr_id=actr_id_from_pb(c.actr_id),
            compatibility=COMPATIBILITY_FROM_PB.get(
                c.compatibility, CandidateCompatibility.UNKNOWN
            ),
            fingerprint=c.fingerprint,
            availability=AVAILABILITY_FROM_PB.get(c.availability, Availability.AVAILABLE),
            mailbox_backlog=c.mailbox_backlog,
            reasons=tuple(c.reasons),
        )
        for c in msgs
    )


def discovery_result_from_pb(msg: Any) -> DiscoveryResult:
    """Convert a RouteCandidatesResponse."""
    return DiscoveryResult(
        candidates=candidates_from_pb(msg.candidates),
        has_exact_match=msg.has_exact_match,
        is_sub_healthy=msg.is_sub_healthy,
        excluded_breaking=msg.excluded_breaking,
        excluded_draining=msg.excluded_draining,
        excluded_denied=msg.excluded_denied,
    )


# -- relay -----------------------------------------------------------------------------


def set_relay_payload(relay: Any, payload: RelayPayload) -> None:
    """Fill the payload oneof of a Relay message."""
    if isinstance(payload, SdpOffer):
        relay.sdp_offer.sdp = payload.sdp
    elif isinstance(payload, SdpAnswer):
        relay.sdp_answer.sdp = payload.sdp
    elif isinstance(payload, IceCandidate):
        relay.ice_candidate.candidate = payload.candidate
        relay.ice_candidate.sdp_mid = payload.sdp_mid
        relay.ice_candidate.sdp_mline_index = payload.sdp_mline_index
        relay.ice_candidate.username_fragment = payload.username_fragment
    elif isinstance(payload, RoleNegotiation):
        relay.role_negotiation.SetInParent()
    elif isinstance(payload, RoleAssignment):
        relay.role_assignment.is_offerer = payload.is_offerer
    else:
        raise TypeError(f"not a relay payload: {payload!r}")


def relay_message_from_pb(env: Envelope) -> RelayMessage:
    """Convert a relayed envelope; raises :class:`BadRequest` when it has no payload."""
    relay = env.relay
    kind = relay.WhichOneof("payload")
    payload: RelayPayload
    if kind == "sdp_offer":
        payload = SdpOffer(relay.sdp_offer.sdp)
    elif kind == "sdp_answer":
        payload = SdpAnswer(relay.sdp_answer.sdp)
    elif kind == "ice_candidate":
        c = relay.ice_candidate
        payload = IceCandidate(c.candidate, c.sdp_mid, c.sdp_mline_index, c.username_fragment)
    elif kind == "role_negotiation":
        payload = RoleNegotiation()
    elif kind == "role_assignment":
        payload = RoleAssignment(relay.role_assignment.is_offerer)
    else:
        raise BadRequest("relay without payload")
    return RelayMessage(
        source=actr_id_from_pb(relay.source),
        target=actr_id_from_pb(relay.target),
        payload=payload,
        session_id=relay.session_id,
        traceparent=env.traceparent,
    )
