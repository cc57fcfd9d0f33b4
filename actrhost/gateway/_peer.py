"""One WebRTC peer connection to another node's gateway: data channels per lane, media
tracks, reassembly, keepalive; the sending half (lanes, queues, window, batches) is the
:class:`~._sending.Sending` mixin.

aiortc objects (RTCPeerConnection, channels, tracks) live only inside this class; the
rest of the gateway sees :class:`LinkState`, frames as bytes and our own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import RTCCertificate, RTCPeerConnection, RTCSessionDescription

from .._config import WebrtcConfig
from .._envelope import StreamFrame
from .._rpc_receiving import worth_logging
from .._tell_origin import session_key
from . import _dtls, _sctp, _sctp_loss, _sctp_packets, _sctp_path
from . import _framing as framing
from ._carry import HeldTells, Named, Origin
from ._confirming import Confirming, Delivering
from ._ice import (
    candidate_type_in_use,
    host_pair,
    host_pair_on_loopback,
    local_candidate_count,
    loopback_only,
    no_path_between,
    rtc_configuration,
    udp_drops,
    what_the_turn_server_says,
)
from ._media import MediaReceiver, MediaSender
from ._pacing import FifoPace
from ._sending import _CHANNELS, _LATENCY, _RPC, _SIGNAL, _SLOT_LANE, _STREAM, _Lane
from ._types import TERMINAL, TRANSITIONS, LinkCounters, LinkState, Tuning

log = logging.getLogger(__name__)


def use_certificate(pc: RTCPeerConnection, certificate: RTCCertificate) -> None:
    """Make ``pc`` use the node's certificate instead of the one aiortc made for it.

    aiortc has no option for it (the browser API's ``certificates`` is not implemented):
    it keeps its list in a private attribute, set in the constructor and read when the
    DTLS transport is made. Checked, so that another aiortc version fails loudly here
    instead of silently using a certificate that does not prove our node id.
    """
    attribute = "_RTCPeerConnection__certificates"
    if not isinstance(getattr(pc, attribute, None), list):
        raise RuntimeError(f"this aiortc version has no {attribute}: cannot set our certificate")
    setattr(pc, attribute, [certificate])


FrameCallback = Callable[["PeerConnection", int, bytes], None]
ControlCallback = Callable[["PeerConnection", dict[str, Any]], None]
StateCallback = Callable[["PeerConnection", LinkState, str], None]
#: (connection, the gateway socket it is about: CALLS or STREAMS, full).
PressureCallback = Callable[["PeerConnection", str, bool], None]
MediaCallback = Callable[["PeerConnection", StreamFrame], None]


def _no_earlier_connections(session_id: str) -> PeerConnection | None:
    return None


def _cannot_say(lane: Any, origin: tuple[int, int]) -> bool | None:
    return None


@dataclass
class Callbacks:
    """How a peer connection reports to its owner (all called synchronously)."""

    on_frame: FrameCallback
    on_control: ControlCallback
    on_state: StateCallback
    on_pressure: PressureCallback
    on_media: MediaCallback
    parse_id: Callable[[str], Any]
    #: An earlier connection with the same node, by session id (None: not remembered);
    #: what it received says what a successor's ``again`` repeats (module ``_carry``).
    earlier_connection: Callable[[str], PeerConnection | None] = _no_earlier_connections
    #: Whether this gateway received a sender-stamped tell or chunk before: (sender,
    #: lane, target), (index, position) -> True, False, or None: cannot say (module
    #: ``_tells_received``, :meth:`~._tells_received.TellsReceived.judge`).
    received_before: Callable[[Any, tuple[int, int]], bool | None] = _cannot_say


class PeerConnection(Confirming):
    """One RTCPeerConnection with another node's gateway; terminal once closed or failed.

    ``session_id`` names it on the signaling relay. Create, then either
    :meth:`create_offer` (+ :meth:`accept_answer`) or :meth:`accept_offer`. Frames can be
    queued from creation on; they go out once every channel is open.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        remote_node: str,
        session_id: str,
        *,
        webrtc: WebrtcConfig,
        tuning: Tuning,
        counters: LinkCounters,
        callbacks: Callbacks,
        certificate: RTCCertificate | None = None,
    ) -> None:
        self.remote_node = remote_node
        self.session_id = session_id
        self.is_offerer = False
        #: Log state changes other than "connected" at DEBUG (an attempt of a series the
        #: owner reports on as a whole).
        self.quiet = False
        self._webrtc = webrtc
        #: The node's certificate (its node id derives from it); None: aiortc makes one.
        self._certificate = certificate
        self.tuning = tuning
        self.counters = counters
        self._cb = callbacks
        self._loop = asyncio.get_running_loop()
        self._state = LinkState.NEW
        self.error = ""
        #: Signaling refused to negotiate it: the other node's ACLs deny every pair of
        #: actors tried. Calls that waited for it fail with 403, not 503 (QA).
        self.denied = False
        #: Why someone doubts that the other side lives, while a probe for it is out
        #: (:meth:`probe`); "" otherwise.
        self.doubted_because = ""
        self._probes_out = 0
        self._pc: RTCPeerConnection | None = None
        self._lanes = [_Lane(slot, lossy=slot == _LATENCY) for slot in range(len(_CHANNELS))]
        self._held: list[tuple[int, bytes]] = []  # see hold()
        self._reassemblers = [framing.Reassembler(8 if s == _LATENCY else 2) for s in range(4)]
        self._message_ids = itertools.count(next(self._ids) << 20)
        self._open_channels = 0
        self._wake = asyncio.Event()
        self._low = asyncio.Event()
        self._pace = FifoPace(tuning)
        self._pressured: set[str] = set()
        self._stream_sent_bytes = 0
        self._stream_acked_bytes = 0
        self._stream_frames_sent = 0
        self._stream_unconfirmed: deque[tuple[bytes, Origin | None]] = deque()
        #: Whether the other side takes batches on the stream channel (its gateway's
        #: "hello" said so; an older one counted a batch as one frame).
        self.stream_batches = False
        #: How many of this connection's stream frames, and of its messages with frames
        #: on each call channel (signal, rpc), we have: received on it (duplicates
        #: included), or later brought again by a successor (module ``_carry``).
        self.stream_frames_in = 0
        self.messages_in = [0, 0]
        #: Per channel, the items the last ``again`` message named that are still to come.
        self._named: list[Named | None] = [None] * len(_CHANNELS)
        #: Whether this connection ever connected: then a successor's ``again`` may name it.
        self.was_connected = False
        self._calls_ack_handle: asyncio.TimerHandle | None = None
        #: Tells of received messages the owner still holds, the message being
        #: delivered now for receipt(), and how many of its tells went so far.
        self._held_tells = HeldTells(self._schedule_calls_ack)
        self._delivering: Delivering | None = None
        self._tells_delivered = 0
        #: This connection's session id as a tell's origin names it.
        self._session_key = session_key(session_id)
        #: The other node's id as a key, mixed into its workers' keys in origins.
        self._node_key = session_key(remote_node)
        self._stream_delivered_bytes = 0
        self._stream_ack_sent = 0
        self._ack_handle: asyncio.TimerHandle | None = None
        self._last_rx = self._loop.time()
        self._tasks: list[asyncio.Task[None]] = []
        self.media_sender = MediaSender(counters.media, self.send_control, tuning.media_tracks)
        self.media_receiver = MediaReceiver(
            lambda sample: callbacks.on_media(self, sample), callbacks.parse_id, counters.media
        )
        self.candidate_type = ""

    def __repr__(self) -> str:
        return f"PeerConnection({self.remote_node} {self.session_id} {self._state})"

    @property
    def state(self) -> LinkState:
        """The connection state."""
        return self._state

    def _set_state(self, new: LinkState, reason: str = "") -> None:
        old = self._state
        if new == old:
            return
        if new not in TRANSITIONS[old]:
            log.debug("%r: ignored transition %s -> %s", self, old, new)
            return
        self._state = new
        level = logging.DEBUG if self.quiet and new is not LinkState.CONNECTED else logging.INFO
        log.log(level, "%r: %s -> %s%s", self, old, new, f" ({reason})" if reason else "")
        if new is LinkState.CONNECTED:
            # A reconnect attempt that worked is the link now: its failure is news (QA).
            self.quiet = False
            self.was_connected = True
        self._cb.on_state(self, new, reason)

    # -- negotiation -------------------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(configuration=rtc_configuration(self._webrtc))
        if self._certificate is not None:
            use_certificate(pc, self._certificate)
        pc.on("connectionstatechange", self._on_pc_state)
        pc.on("track", lambda track: self._on_track(pc, track))
        self._pc = pc
        return pc

    def _on_track(self, pc: RTCPeerConnection, track: Any) -> None:
        """A remote track (aiortc's ``track`` event): pumped under its transceiver's mid,
        which names it in the other side's control messages."""
        mids = [t.mid for t in pc.getTransceivers() if t.receiver.track is track]
        try:
            self.media_receiver.add_track(track, mids[0] if mids else None)
        except ValueError as exc:
            self.counters.media.errors += 1
            log.warning("%r: %s", self, exc)

    def _create_channels(self, pc: RTCPeerConnection) -> None:
        low = max(1, self._pace.limit_bytes // len(_CHANNELS))
        for slot, spec in enumerate(_CHANNELS):
            channel = pc.createDataChannel(
                spec.label,
                ordered=spec.ordered,
                maxRetransmits=spec.max_retransmits,
                negotiated=True,
                id=spec.channel_id,
            )
            # Every channel over the shared high-water mark is above this threshold, so
            # some channel always crosses it while the sender waits (no lost wake-up;
            # kept so as the mark follows the link: Sending._follow_link).
            channel.bufferedAmountLowThreshold = low
            channel.on("bufferedamountlow", self._low.set)
            channel.on("open", self._on_channel_open)
            channel.on("close", lambda: self.fail("a data channel closed"))
            channel.on("message", self._receiver(slot))
            self._lanes[slot].channel = channel

    def _begin(self) -> None:
        self._set_state(LinkState.CONNECTING)
        self._tasks.append(self._loop.create_task(self._connect_watchdog()))
        self._tasks.append(self._loop.create_task(self._run_sender()))

    async def create_offer(self) -> str:
        """Create the connection as the offering side; return the SDP offer.

        Candidates are gathered before this returns (aiortc does not trickle): the SDP
        holds them all.
        """
        self.is_offerer = True
        pc = self._new_pc()
        # Transceivers first: the data channels' transport then bundles onto theirs (made
        # the other way round, aiortc never starts the media senders).
        for kind in ("video", "audio"):
            for track in self.media_sender.tracks(kind):
                pc.addTransceiver(track, direction="sendrecv")
        self._create_channels(pc)
        self._begin()
        await pc.setLocalDescription(await pc.createOffer())
        self.media_sender.learn_mids(pc.getTransceivers())
        await self._check_candidates(pc)
        return pc.localDescription.sdp

    async def accept_offer(self, sdp: str) -> str:
        """Create the connection as the answering side for ``sdp``; return the answer."""
        pc = self._new_pc()
        self._begin()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        # Channels after the remote description: created earlier, aiortc would make a
        # second transport for them that the bundled one then closes (measured: a hang).
        self._create_channels(pc)
        # The offer's transceivers of each kind, in order, carry our tracks of that kind;
        # any beyond ours only receive.
        tracks = {kind: self.media_sender.tracks(kind) for kind in ("video", "audio")}
        for transceiver in pc.getTransceivers():
            ours = tracks.get(transceiver.kind)
            if ours:
                transceiver.sender.replaceTrack(ours.pop(0))
                transceiver.direction = "sendrecv"
            else:
                transceiver.direction = "recvonly"
        await pc.setLocalDescription(await pc.createAnswer())
        self.media_sender.learn_mids(pc.getTransceivers())
        await self._check_candidates(pc)
        return pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer."""
        if self._pc is None or self._state in TERMINAL:
            return
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def _check_candidates(self, pc: RTCPeerConnection) -> None:
        if local_candidate_count(pc) == 0:
            if self._webrtc.force_relay:
                # It named only the host addresses, which force_relay does not use, then
                # asked whether the server was reachable when it had refused (QA).
                said = await what_the_turn_server_says(self._webrtc)
                why = (
                    "no relay candidate from the TURN server (force_relay): "
                    f"{said or 'is it reachable'}; are [webrtc] turn_username and "
                    "turn_credential right?"
                )
            else:
                why = (
                    "no local ICE candidates: set [webrtc] ice_host_addresses to addresses "
                    "of this host"
                )
            self.fail(why)

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.tuning.connect_timeout_s)
        if self._state is LinkState.CONNECTING:
            self._fail_to_connect(f"no connection within {self.tuning.connect_timeout_s:g} s")

    def _on_pc_state(self) -> None:
        pc = self._pc
        if pc is not None and pc.connectionState in ("failed", "closed"):
            self._fail_to_connect(f"peer connection {pc.connectionState}")

    def _fail_to_connect(self, reason: str) -> None:
        """Fail, saying why a connection that never formed did not, where the candidates
        show it (not for other failures while connecting: "node … opened a new
        connection" is no address problem)."""
        if self._state is LinkState.CONNECTING and self._pc is not None:
            if loopback_only(self._pc):
                # The usual first mistake with nodes on two hosts: the default address.
                reason += (
                    " (both nodes offered loopback addresses only: on different hosts, set "
                    "[webrtc] ice_host_addresses to each host's own addresses)"
                )
            elif no_path := no_path_between(self._pc):
                # Said as what was offered: "no connection within 10 s" alone sent people
                # looking everywhere (QA: addresses that reach signaling, not each other).
                reason += f" ({no_path})"
        self.fail(reason)

    def _on_channel_open(self) -> None:
        self._open_channels += 1
        if self._open_channels == len(_CHANNELS) and self._state is LinkState.CONNECTING:
            self._last_rx = self._loop.time()
            if self._pc is not None:
                self.candidate_type = candidate_type_in_use(self._pc)
                _dtls.take_over(self._pc)
            self._set_state(LinkState.CONNECTED)
            self._tasks.append(self._loop.create_task(self._keepalive()))
            self._wake.set()

    def _report_pressure(self, socket: str, full: bool) -> None:
        self._cb.on_pressure(self, socket, full)

    # -- receiving ---------------------------------------------------------------------

    def _receiver(self, slot: int) -> Callable[[Any], None]:
        reassembler = self._reassemblers[slot]
        lane = _SLOT_LANE[slot]

        def on_message(data: Any) -> None:
            try:
                handle(data)
            except Exception:
                # What we could not handle (a peer's message that got past the checks, or
                # a bug of ours) costs that message, not the link: aiortc ends the
                # connection when a message handler raises, failing every pending call
                # (QA: one control message with a timestamp "abc" did).
                self._not_handled(slot, "message")

        def handle(data: Any) -> None:
            self._last_rx = self._loop.time()
            if slot <= _RPC and data and data[0] != framing.KIND_CONTROL:
                self.messages_in[slot] += 1
            evicted = reassembler.evicted
            try:
                item = reassembler.feed(data)
            except framing.MalformedMessage as exc:
                self.counters.malformed += 1
                if worth_logging(self.counters.malformed):
                    label = _CHANNELS[slot].label
                    log.warning("%r: dropped a malformed message on %s: %s", self, label, exc)
                return
            if reassembler.evicted != evicted:
                self.counters.evicted_parts += reassembler.evicted - evicted
                self.counters.lanes["stream_latency_first"].dropped += reassembler.evicted - evicted
            if item is None:
                return
            what, value = item
            if what == "control":
                self._on_control(value, slot)
                return
            if slot == _STREAM:
                # A batch here is its frames one after another: each is counted, named by
                # an ``again`` and confirmed on its own (module _sending, "Batches"). One
                # we cannot handle costs itself: the frames after it are still counted, so
                # the indices both sides confirm by stay the same.
                for frame in [value] if what == "frame" else value:
                    try:
                        self._stream_frame_in(frame)
                    except Exception:
                        self._not_handled(slot, "frame" if what == "frame" else "frame of a batch")
                return
            if slot <= _RPC:
                self._schedule_calls_ack()
            named = self._named[slot]
            if named is not None and self._had_it(slot, named):
                self._drop_duplicate(slot, [value] if what == "frame" else value)
                return
            if slot <= _RPC:  # see receipt()
                self._deliver_from(slot, named)
            try:
                for frame in [value] if what == "frame" else value:
                    try:
                        self._cb.on_frame(self, lane, frame)
                    except Exception:  # the calls batched after it still go on
                        self._not_handled(slot, "frame" if what == "frame" else "frame of a batch")
            finally:
                self._delivering = None

        return on_message

    def _not_handled(self, slot: int, what: str) -> None:
        """Count (as malformed) and log a message or frame whose handling raised."""
        self.counters.malformed += 1
        if worth_logging(self.counters.malformed):
            label = _CHANNELS[slot].label
            log.exception("%r: dropped a %s on %s: could not handle it", self, what, label)

    def _stream_frame_in(self, frame: bytes) -> None:
        """One reliable stream frame from the other side, alone or out of a batch."""
        self.stream_frames_in += 1
        named = self._named[_STREAM]
        if named is not None and self._had_it(_STREAM, named):
            self._drop_duplicate(_STREAM, [frame])
            return
        self._deliver_from(_STREAM, named)  # see receipt()
        try:
            self._cb.on_frame(self, _SLOT_LANE[_STREAM], frame)
        except Exception:
            # Its bytes leave the sender's window all the same, or they stay there for
            # good (counted twice at worst, if the owner gave them back before raising).
            self.stream_delivered(len(frame))
            raise
        finally:
            self._delivering = None

    def _on_control(self, message: dict[str, Any], slot: int = _SIGNAL) -> None:
        op = message["op"]
        if op == "ping":
            if message.get("answer") is True:  # a probe: show at once that we are here
                self.send_control({"op": "ping"})
            return
        if op == "ack":
            self._on_ack(message)
            return
        if op == "again":
            self._on_again(message, slot)
            return
        if op == "media":
            self.media_receiver.on_meta(message)
            return
        self._cb.on_control(self, message)

    async def _keepalive(self) -> None:
        interval = self.tuning.keepalive_interval_s
        timeout = self.tuning.keepalive_timeout_s
        while self._state is LinkState.CONNECTED:
            self.send_control({"op": "ping"})
            await asyncio.sleep(interval)
            silent = self._loop.time() - self._heard_at()
            if silent > timeout:
                # A loop that was busy may not have read what arrived meanwhile: let it
                # take a few turns before calling the link dead.
                await asyncio.sleep(min(interval, 0.05))
                silent = self._loop.time() - self._heard_at()
                if silent > timeout:
                    self.fail(f"nothing received for {silent:.1f} s")

    def _heard_at(self) -> float:
        """When the other side was last heard from: a message, or any SCTP packet (a
        SACK, a HEARTBEAT) while our messages wait behind retransmissions (_sctp)."""
        sctp = self._pc.sctp if self._pc is not None else None
        packet_at = _sctp.last_packet_at(sctp) if sctp is not None else 0.0
        return max(self._last_rx, packet_at)

    def peer_reads_packets(self, packet_bytes: Any) -> None:
        """The other gateway's ``hello`` says it reads SCTP packets of up to
        ``packet_bytes``: send packets that large when this connection stays inside one
        host (module ``_sctp_packets``), or joins two hosts directly and a probe shows
        that the path carries them (module ``_sctp_path``)."""
        sctp = self._pc.sctp if self._pc is not None else None
        if type(packet_bytes) is not int or sctp is None or self._state is not LinkState.CONNECTED:
            return
        size = min(packet_bytes, _sctp_packets.LARGE_PACKET_BYTES)
        if host_pair_on_loopback(self._pc):
            _sctp_packets.enlarge(sctp, size)
        elif self.tuning.large_packets and _sctp_path.installed() and host_pair(self._pc):
            self._tasks.append(self._loop.create_task(self._probe_path(sctp, size)))

    async def _probe_path(self, sctp: Any, size: int) -> None:
        found = await _sctp_path.enlarge_if_carried(sctp, size)
        if found is _sctp_path.Probe.CARRIED:
            log.info("%r: SCTP packets of %d bytes (%s)", self, size, found.value)
        else:
            log.info("%r: SCTP packets stay at aiortc's size (%s)", self, found.value)

    def probe(self, reason: str) -> None:
        """Check now that the other side is alive, as someone else doubts it (signaling
        saw its node's connection close): it is asked to answer at once, and the
        connection fails if nothing arrives within ``probe_timeout_s``. The link may be
        fine while only the node's signaling connection is gone, so the doubt alone
        fails nothing."""
        if self._state is not LinkState.CONNECTED:
            return
        asked_at = self._loop.time()
        self.send_control({"op": "ping", "answer": True})
        self.doubted_because = reason
        self._probes_out += 1
        self._tasks.append(self._loop.create_task(self._check_probe(asked_at, reason)))

    async def _check_probe(self, asked_at: float, reason: str) -> None:
        timeout = self.tuning.probe_timeout_s
        try:
            await asyncio.sleep(timeout)
            if self._heard_at() < asked_at:
                await asyncio.sleep(0.05)  # let a busy loop read what arrived (as _keepalive)
            if self._state is LinkState.CONNECTED and self._heard_at() < asked_at:
                self.fail(f"{reason}, and nothing came back for {timeout:g} s")
        finally:
            self._probes_out -= 1
            if not self._probes_out:
                self.doubted_because = ""

    # -- ending ------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Mark the connection failed (idempotent) and close it in the background."""
        if self._state in TERMINAL:
            return
        self.error = reason
        self._set_state(LinkState.FAILED, reason)
        self._wake.set()
        self._low.set()
        close_in_background(self._shutdown())

    async def close(self) -> None:
        """Close for good (idempotent)."""
        if self._state is not LinkState.CLOSED:
            if self._state is not LinkState.FAILED:
                self._set_state(LinkState.CLOSED, "closed")
            else:
                self._state = LinkState.CLOSED
        await self._shutdown()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for handle in (self._ack_handle, self._calls_ack_handle):
            if handle is not None:
                handle.cancel()
        self.drop_queued()
        for socket in self._pressured:
            self._cb.on_pressure(self, socket, False)
        self._pressured.clear()
        self.media_sender.stop()
        self.media_receiver.stop()
        pc, self._pc = self._pc, None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    def stats(self) -> dict[str, Any]:
        """State, candidate type in use, what is queued."""
        return {
            "state": self._state.value,
            "session": self.session_id,
            "offerer": self.is_offerer,
            "candidate_type": self.candidate_type,
            "queued_bytes": self.queued_bytes,
            "stream_inflight_bytes": self._stream_sent_bytes - self._stream_acked_bytes,
            "error": self.error,
            "sctp": (
                {**_sctp_loss.describe(self._pc.sctp), **_sctp.describe(self._pc.sctp)}
                if self._pc and self._pc.sctp
                else None
            ),
            "sctp_packet_bytes": (
                _sctp_packets.packet_bytes(self._pc.sctp) if self._pc and self._pc.sctp else None
            ),
            "sctp_packets_why": (
                _sctp_path.describe(self._pc.sctp) if self._pc and self._pc.sctp else None
            ),
            "udp_drops": udp_drops(self._pc) if self._pc else None,
            # Below their ceilings on a slow link (_pacing).
            "send_buffer_bytes": self._pace.limit_bytes,
            "send_buffer_max_bytes": self.tuning.buffer_high_bytes,
            "message_bytes": self._pace.part_bytes,
            "send_buffer_held_back": self._pace.held_back,
            "send_buffer_held_back_s_ago": self._pace.held_back_s_ago(),
        }


#: Connections closing in the background (failed, retired, forgotten). A gateway that
#: stops waits for them: cut short, aiortc leaves its receivers' decoder threads running,
#: and the process cannot exit until they end (they never do).
_closing_in_background: set[asyncio.Task[None]] = set()


def close_in_background(closing: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``closing`` (a connection's close) as a task that a stopping gateway waits for
    (:func:`wait_for_closing_connections`) rather than cancels."""
    task = asyncio.ensure_future(closing)
    _closing_in_background.add(task)
    task.add_done_callback(_closing_in_background.discard)
    return task


async def wait_for_closing_connections(timeout_s: float) -> None:
    """Wait (up to ``timeout_s``) until every connection closing in the background is."""
    if _closing_in_background:
        await asyncio.wait(list(_closing_in_background), timeout=timeout_s)
