"""The signaling server's answers that carry its state, laid out as envelopes.

Credential grants (registration, renewal), route candidates and actor listings. The
handlers of :class:`SignalingServer` decide (authenticate, check, count, change the
registry); these functions only fill the protobuf fields of the answer, so a change of
the answer's layout stays out of the handlers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import _wire as wire
from ._credentials import Credential
from ._presence import ActorEntry
from ._ranking import Ranked

__all__ = ["actor_list", "credential_update_ok", "register_ok", "route_candidates_response"]


def register_ok(entry: ActorEntry, cred: Credential, heartbeat_interval_s: float) -> wire.Envelope:
    """The answer to a registration: the actor's id, its credential and the heartbeat
    interval the server expects."""
    reply = wire.new_envelope()
    ok = reply.register_ok
    ok.actr_id.CopyFrom(entry.wire_id)
    _set_credential(ok, cred)
    ok.heartbeat_interval_secs = heartbeat_interval_s
    return reply


def credential_update_ok(cred: Credential) -> wire.Envelope:
    """The answer to a credential renewal: the new credential."""
    reply = wire.new_envelope()
    _set_credential(reply.credential_update_ok, cred)
    return reply


def route_candidates_response(ranked: Ranked) -> wire.Envelope:
    """The answer to a discovery: the chosen candidates, best first, with the verdicts."""
    reply = wire.new_envelope()
    resp = reply.route_candidates_response
    for cand, level, reasons in ranked.chosen:
        c = resp.candidates.add()
        _set_candidate(c, cand)
        c.compatibility = wire.COMPATIBILITY_TO_PB[level]
        c.reasons.extend(reasons)
    resp.has_exact_match = ranked.has_exact_match
    resp.is_sub_healthy = ranked.is_sub_healthy
    resp.excluded_breaking = ranked.excluded_breaking
    resp.excluded_draining = ranked.excluded_draining
    resp.excluded_denied = ranked.excluded_denied
    return reply


def actor_list(entries: Iterable[ActorEntry], limit: int) -> wire.Envelope:
    """A listing of ``entries``: at most ``limit`` of them, marked truncated if more."""
    reply = wire.new_envelope()
    listing = reply.actor_list
    for i, entry in enumerate(entries):
        if i == limit:
            listing.truncated = True
            break
        _set_candidate(listing.actors.add(), entry)
    return reply


def _set_credential(ok: Any, cred: Credential) -> None:
    """Fill the credential fields shared by RegisterOk and CredentialUpdateOk."""
    ok.credential.encrypted_token = cred.token
    ok.credential.token_key_id = cred.key_id
    ok.credential_expires_at_ms = cred.expires_at_ms


def _set_candidate(c: Any, entry: ActorEntry) -> None:
    """Fill a RouteCandidate with what the server knows of ``entry``."""
    c.actr_id.CopyFrom(entry.wire_id)
    c.fingerprint = entry.fingerprint
    c.availability = wire.AVAILABILITY_TO_PB[entry.availability]
    c.mailbox_backlog = entry.mailbox_backlog
