"""Public value types of the signaling API: availability, discovery results, relay payloads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .._ids import ActrId

__all__ = [
    "Availability",
    "CandidateCompatibility",
    "DiscoveryResult",
    "IceCandidate",
    "RelayMessage",
    "RelayPayload",
    "RoleAssignment",
    "RoleNegotiation",
    "RouteCandidate",
    "SdpAnswer",
    "SdpOffer",
]


class Availability(StrEnum):
    """What an actor tells the server in its heartbeats."""

    AVAILABLE = "available"
    DEGRADED = "degraded"  # offered by discovery after every available candidate
    DRAINING = "draining"  # not offered by discovery


class CandidateCompatibility(StrEnum):
    """How a candidate's service fingerprint relates to the one the caller asked with."""

    UNCHECKED = "unchecked"  # the caller gave no fingerprint
    EXACT = "exact"
    BACKWARD_COMPATIBLE = "backward_compatible"
    UNKNOWN = "unknown"  # the server lacks one of the two schemas
    BREAKING = "breaking"  # never offered


@dataclass(frozen=True, slots=True)
class RouteCandidate:
    """One actor offered by discovery."""

    actr_id: ActrId
    compatibility: CandidateCompatibility
    fingerprint: str
    availability: Availability
    mailbox_backlog: int
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    """The ranked answer to a discovery request (best first).

    ``has_exact_match``: some candidate serves exactly the fingerprint asked for.
    ``is_sub_healthy``: candidates exist but none matches exactly (only compatible ones).
    ``excluded_breaking``: how many live candidates were left out as breaking;
    ``excluded_draining``: as draining (restarting, stopping); ``excluded_denied``:
    because their ACL does not admit the caller.
    """

    candidates: tuple[RouteCandidate, ...]
    has_exact_match: bool
    is_sub_healthy: bool
    excluded_breaking: int = 0
    excluded_draining: int = 0
    excluded_denied: int = 0

    @property
    def best(self) -> ActrId | None:
        """The first candidate's id, or None when there is none."""
        return self.candidates[0].actr_id if self.candidates else None


@dataclass(frozen=True, slots=True)
class SdpOffer:
    """A WebRTC session description of type "offer"."""

    sdp: str


@dataclass(frozen=True, slots=True)
class SdpAnswer:
    """A WebRTC session description of type "answer"."""

    sdp: str


@dataclass(frozen=True, slots=True)
class IceCandidate:
    """One trickled ICE candidate (an empty ``candidate`` marks the end of candidates)."""

    candidate: str
    sdp_mid: str = ""
    sdp_mline_index: int = 0
    username_fragment: str = ""


@dataclass(frozen=True, slots=True)
class RoleNegotiation:
    """Asks the server which of two actors makes the WebRTC offer."""


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    """The server's decision, sent to both sides of a :class:`RoleNegotiation`.

    The actor with the smaller (realm, serial number) offers: a deterministic rule, so two
    sides negotiating at the same time (glare) still get opposite answers.
    """

    is_offerer: bool


RelayPayload = SdpOffer | SdpAnswer | IceCandidate | RoleNegotiation | RoleAssignment


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """A relayed message delivered to the target actor's receive callback."""

    source: ActrId
    target: ActrId
    payload: RelayPayload
    session_id: str = ""
    traceparent: str = ""
