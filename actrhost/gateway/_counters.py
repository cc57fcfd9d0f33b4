"""Counters of the gateway process (``stats``), besides those per remote node."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GatewayCounters:
    """What the gateway counts besides per-node traffic."""

    malformed_local: int = 0
    #: Stream frames from a local sender that exited before this gateway read them from
    #: its ring (the ring went with it): lost.
    sender_gone: int = 0
    late_responses: int = 0
    #: Answers of our actors to calls from another node whose link failed meanwhile (the
    #: caller got 503 then): dropped. They were counted as late_responses (QA).
    undeliverable_replies: int = 0
    calls_out: int = 0
    calls_in: int = 0
    failed_calls: int = 0
    undeliverable: int = 0
    discoveries: int = 0
    #: Discoveries answered with signaling's last answer while signaling was unreachable
    #: (that actor's node connected; module _discovery).
    discoveries_remembered: int = 0
    locates: int = 0
    dropped_media: int = 0
    bad_relays: int = 0
    #: Frames from another node with a source id that node never introduced through
    #: signaling (forged, or from before a restart of ours): refused.
    unintroduced_sources: int = 0
    #: Offers and answers in the name of a node whose certificate they do not carry
    #: (forged, _identity.py): refused.
    unproven_sdp: int = 0
    #: Notices sent to our workers that their tells or stream frames for an actor on
    #: another node were dropped, that actor being unknown or down (_notices.py).
    senders_told: int = 0
    #: Wait notices to our workers: their calls and tells to an actor whose node's link
    #: is full must wait (_call_hold.py, actrhost/_held_targets.py).
    senders_told_to_wait: int = 0
    #: Tells our workers had sent to the gateway before this one (it died) that waited in
    #: their sockets: dropped, as the workers send them again (actrhost/_tell_origin.py).
    stale_tells_dropped: int = 0
    #: The same for reliable stream chunks (their ring went with that gateway).
    stale_chunks_dropped: int = 0
