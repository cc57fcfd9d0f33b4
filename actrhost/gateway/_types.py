"""Value types of a peer connection: its states, knobs and counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .._payload_type import PayloadType
from ._media import MediaCounters

__all__ = [
    "CALLS",
    "MEDIA",
    "RPC_LANES",
    "STREAMS",
    "TERMINAL",
    "TRANSITIONS",
    "LaneCounters",
    "LinkCounters",
    "LinkState",
    "Tuning",
]

#: The gateway's sockets for its workers: calls and tells, stream frames, media samples.
#: A full lane stops the reading of the first two (media is lossy and never waits).
CALLS, STREAMS, MEDIA = "calls", "streams", "media"
#: The lanes that frames from the calls socket go on.
RPC_LANES = frozenset({PayloadType.RPC_RELIABLE, PayloadType.RPC_SIGNAL})


class LinkState(StrEnum):
    """State of one peer connection (aiortc's set, STYLE §3)."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


TRANSITIONS: dict[LinkState, frozenset[LinkState]] = {
    LinkState.NEW: frozenset({LinkState.CONNECTING, LinkState.CLOSED, LinkState.FAILED}),
    LinkState.CONNECTING: frozenset({LinkState.CONNECTED, LinkState.CLOSED, LinkState.FAILED}),
    LinkState.CONNECTED: frozenset({LinkState.CLOSED, LinkState.FAILED}),
    LinkState.FAILED: frozenset({LinkState.CLOSED}),
    LinkState.CLOSED: frozenset(),
}
TERMINAL = frozenset({LinkState.CLOSED, LinkState.FAILED})


@dataclass(frozen=True)
class Tuning:
    """Gateway knobs that are not in the config file (tests shorten the timeouts)."""

    connect_timeout_s: float = 10.0
    keepalive_interval_s: float = 0.5
    keepalive_timeout_s: float = 3.0
    #: How long a probed connection (signaling said the other node's actors left) may
    #: stay silent before it counts as failed. Above a WAN or TURN round trip.
    probe_timeout_s: float = 1.0
    #: How long a gateway keeps trying to restore a failed connection without new
    #: traffic; then it forgets the node until traffic for one of its actors comes again.
    reconnect_for_s: float = 60.0
    #: How long a call made while a failed link is being restored waits for it; then it
    #: fails with 503 (unsent). Above a reconnect's time over a WAN or TURN (≈ 0.1-1 s),
    #: far below an attempt's ``connect_timeout_s`` on a link that stays down.
    reconnect_call_wait_s: float = 2.0
    #: Largest data-channel message we send. 64 KiB is what every peer must accept when
    #: it advertises nothing (RFC 8841 §6); aiortc peers accept 256 KiB.
    max_message_bytes: int = 65536
    #: The most bytes allowed in aiortc's shared send FIFO before the sender waits.
    buffer_high_bytes: int = 262144
    #: On a slower link, the FIFO holds this long's worth of what the link takes (module
    #: ``_pacing``); 0 keeps it at ``buffer_high_bytes`` whatever the link.
    fifo_target_s: float = 0.05
    #: Queued bytes on a reliable lane beyond which the gateway stops reading its socket.
    queue_high_bytes: int = 4 * 1024 * 1024
    #: For a node whose link failed and has not come back, the calls socket is read on
    #: past ``queue_high_bytes`` (the other nodes' calls must not wait through the
    #: reconnect window): calls and tells for that node queue up to this many bytes, then
    #: are refused (a call gets 503, a tell is dropped and its sender told).
    reconnect_queue_bytes: int = 8 * 1024 * 1024
    stream_window_bytes: int = 8 * 1024 * 1024
    #: Reliable stream bytes from other nodes that may wait for one slow local worker
    #: before their senders are told to keep that actor's chunks ("full"): a quarter of
    #: the window, so that one slow actor leaves its node's other actors most of it.
    stream_target_bytes: int = 2 * 1024 * 1024
    #: How long a reliable stream chunk from another node waits for a local worker that
    #: takes nothing (counted from the worker's last take: a slow one loses nothing).
    stream_wait_s: float = 30.0
    #: STREAM_LATENCY_FIRST frames waiting to be sent; older ones are dropped (newest wins).
    latency_queue_frames: int = 4
    #: Video and audio tracks per connection (each): ``[webrtc] media_tracks``.
    media_tracks: int = 4
    #: SCTP packets of 16 KiB between two hosts joined directly, once a probe shows the
    #: path carries them (module ``_sctp_path``): ``[webrtc] large_packets``.
    large_packets: bool = True
    #: Bytes of calls and tells from other nodes that may wait for one local worker whose
    #: queue is full, each counted with what it costs beside its bytes
    #: (``_to_workers.WAITING_COST_BYTES``); beyond, they are refused at once (a call gets
    #: 503, a tell is counted undeliverable). Nothing pushes back on another node's RPC
    #: lane, so this bounds the gateway's memory for a stuck worker.
    worker_backlog_bytes: int = 64 * 1024 * 1024


@dataclass
class LaneCounters:
    """Traffic of one lane with one remote node (``stats``)."""

    frames_out: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    dropped: int = 0


@dataclass
class LinkCounters:
    """Everything counted for one remote node, kept across reconnects."""

    lanes: dict[str, LaneCounters] = field(
        default_factory=lambda: {lane.name.lower(): LaneCounters() for lane in PayloadType}
    )
    malformed: int = 0
    evicted_parts: int = 0
    #: Batch messages sent (each carried several frames, counted in their lanes).
    batches_out: int = 0
    #: Reliable stream chunks sent again after a link failure that had arrived before
    #: (dropped here; docs/gateway.md, Failure).
    duplicates_dropped: int = 0
    #: Tells sent again after a link failure from a connection this gateway does not
    #: know (it restarted since): handed on in doubt, for their workers to drop those
    #: they had read (``tells_duplicates_dropped`` in the actors' counters).
    tells_in_doubt: int = 0
    #: Tells and reliable chunks their sender sent again in doubt (its gateway died)
    #: that this gateway had never received: handed on as new (``_tells_received``), so
    #: that a restarted worker that never heard of their sender runs them.
    in_doubt_cleared: int = 0
    media: MediaCounters = field(default_factory=MediaCounters)
    #: The same LaneCounters by lane number (PayloadType value): found per frame, where
    #: building the enum and its lower-case name costs more than the counting.
    by_lane: dict[int, LaneCounters] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.by_lane = {int(lane): self.lanes[lane.name.lower()] for lane in PayloadType}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "lanes": {name: dict(vars(c)) for name, c in self.lanes.items()},
            "malformed": self.malformed,
            "evicted_parts": self.evicted_parts,
            "batches_out": self.batches_out,
            "duplicates_dropped": self.duplicates_dropped,
            "tells_in_doubt": self.tells_in_doubt,
            "in_doubt_cleared": self.in_doubt_cleared,
            "media": dict(vars(self.media)),
        }
