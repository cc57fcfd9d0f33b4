"""SCTP tuning of aiortc inside the gateway process: delayed, bundled SACKs, sends
that reach the socket without an extra event-loop turn, and quick recovery from an
outage.

aiortc's SCTP association (``aiortc.rtcsctptransport.RTCSctpTransport``) is pure Python,
and on a small machine a remote call's latency is mostly CPU: every DATA packet costs a
separate SACK packet back (one more DTLS record, one more ``sendto``, one more wake-up of
the other gateway), and every ``RTCDataChannel.send`` schedules a task that moves the
message into SCTP on the *next* loop iteration. Two changes, both within what SCTP
allows (RFC 9260 §6.2, §6.10):

* **Delayed acknowledgement, unless the association is quiet.** The receiver
  acknowledges every second packet carrying DATA, and at the latest
  :data:`SACK_DELAY_S` after the first unacknowledged one; a gap or a duplicate is
  acknowledged at once (fast retransmit depends on it). So is a packet that finds the
  association quiet: none of our DATA in flight, and the previous packet with DATA
  :data:`QUIET_GAP_S` ago or longer. A lone call's SACK then goes out while the callee
  works, instead of being built into the answer on the call's critical path (measured:
  lone calls ≈ 10 % faster; streams and many outstanding calls unchanged).
* **Bundling.** A pending SACK rides in front of the next DATA chunk we send when both
  fit in one packet. A call's answer thus acknowledges its request, and the next call
  acknowledges that answer: a ping-pong sends no SACK packet of its own. On receipt, the
  DATA of such a bundle is delivered before the SACK is processed (someone waits for the
  DATA; the SACK only frees what we sent).
* **Eager sends.** A binary message sent from outside aiortc's own receive path (our
  socket callbacks) goes through ``_data_channel_flush`` right away, the way Python 3.12's
  eager tasks would run it, instead of in a task on the next iteration.
* **Liveness by packet.** The time the last packet came from the peer
  (:func:`last_packet_at`): the gateway's keepalive counts it, not only whole messages.
  On a lossy path a stream's retransmissions hold up the keepalive's own messages in
  SCTP for seconds while the peer's SACKs and HEARTBEATs still arrive (QA: 20 % loss
  failed links on "nothing received for 3 s").
* **Probes while stalled.** What is lost is sent again when the retransmission timer
  (T3) expires, one RTO after the last progress: at least 1 s in aiortc. After a short
  outage (a link down for less than the keepalive timeout) every call sent meanwhile
  thus waited up to a second more once the link was back, and short deadlines expired.
  While DATA of ours has been outstanding for :data:`STALL_S` without a SACK moving, a
  HEARTBEAT (RFC 9260 §8.3) goes out every :data:`PROBE_INTERVAL_S`; when one comes back
  and, a delayed SACK's time later, that DATA is still unacknowledged although a packet
  sent after it made the round trip, it was lost: T3 expires now instead of later.

Only the gateway process calls :func:`install` (the raw aiortc baseline in
``scripts/bench_remote.py`` does not). It patches methods of the class, checked against
the aiortc versions ``pyproject.toml`` allows; a missing attribute makes it fail loudly
rather than run half-patched. The peer needs nothing: any SCTP stack accepts delayed and
bundled SACKs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Coroutine, Generator
from struct import pack, unpack
from typing import Any

from . import _sctp_packets
from ._aiortc_parts import require

log = logging.getLogger(__name__)

#: The longest an acknowledgement waits for a DATA chunk to ride on (RFC 9260: at most
#: 500 ms, 200 ms recommended). Short, because the sender's congestion window and the
#: bufferedAmount of its channels only move when SACKs arrive.
SACK_DELAY_S = 0.02
#: A packet with DATA this long after the previous one, with none of our DATA in flight,
#: is acknowledged at once. Lone calls on a small machine are ~1 ms apart; a stream's
#: packets come tens of microseconds apart.
QUIET_GAP_S = 0.0005
#: Acknowledge at once after this many packets with DATA (RFC 9260 §6.2: every second).
SACK_EVERY_PACKETS = 2
#: DATA outstanding this long without a SACK moving counts as stalled (probes start).
#: Far above a round trip between our gateways plus their SACK_DELAY_S.
STALL_S = 0.2
#: How often a stalled association sends a HEARTBEAT.
PROBE_INTERVAL_S = 0.1

_installed = False
_SACK_CHUNK_TYPE = 3  # RFC 9260 §3.2
_HEARTBEAT_INFO = 1  # RFC 9260 §3.3.5: the parameter a HEARTBEAT ACK echoes
#: Tasks started here (delayed SACKs, sends that had to wait), kept until they finish.
_tasks: set[asyncio.Future[Any]] = set()


def _spawn(coro: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class _SackState:
    """What the tuning keeps per association (an attribute of the transport)."""

    __slots__ = (
        "capture",
        "captured",
        "depth",
        "got_data",
        "last_data_at",
        "outage_retransmits",
        "packet_at",
        "probes_sent",
        "progress_at",
        "seen_sacked_tsn",
        "stall_timer",
        "timer",
        "unacked_packets",
    )

    def __init__(self) -> None:
        self.depth = 0  # > 0 while aiortc handles a received packet
        self.got_data = False  # the packet being handled carried DATA
        self.unacked_packets = 0
        self.last_data_at = 0.0  # loop time of the last packet with DATA
        self.packet_at = 0.0  # loop time of the last packet of any kind
        self.timer: asyncio.TimerHandle | None = None
        self.capture = False  # _send_chunk hands the SACK over instead of sending it
        self.captured: Any = None
        self.stall_timer: asyncio.TimerHandle | None = None  # while DATA is outstanding
        self.seen_sacked_tsn = -1  # the cumulative TSN acknowledged at the last check
        self.progress_at = 0.0  # wall time (as aiortc's chunk._sent_time) it was seen move
        self.probes_sent = 0  # HEARTBEATs sent while stalled
        self.outage_retransmits = 0  # DATA a probe found lost, sent again before T3


def _state(transport: Any) -> _SackState:
    state = transport.__dict__.get("_actrhost_sack")
    if state is None:
        state = transport.__dict__["_actrhost_sack"] = _SackState()
    return state


def last_packet_at(transport: Any) -> float:
    """Event-loop time at which ``transport`` (an ``RTCSctpTransport``) last received a
    packet (any chunk, after DTLS authenticated it); 0.0 before the first, or where
    :func:`install` was not called."""
    return _state(transport).packet_at


def describe(transport: Any) -> dict[str, int]:
    """What ``actrhost status`` shows of the probes while stalled: HEARTBEATs sent, and
    the times lost DATA was sent again at once after an outage instead of at T3."""
    state = transport.__dict__.get("_actrhost_sack") or _SackState()
    return {"stall_probes": state.probes_sent, "outage_retransmits": state.outage_retransmits}


def install() -> None:
    """Patch aiortc's SCTP transport in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from aiortc import rtcsctptransport as sctp

    cls = sctp.RTCSctpTransport
    needed = (
        "_handle_data",
        "_receive_data_chunk",
        "_send_sack",
        "_send_chunk",
        "_data_channel_send",
        "_data_channel_flush",
        "_receive_chunk",
        "_t3_start",
        "_t3_restart",
        "_t3_expired",
    )
    module_parts = (
        "DataChunk",
        "SackChunk",
        "HeartbeatChunk",
        "HeartbeatAckChunk",
        "parse_packet",
        "SCTP_MAX_PACKET_LENGTH",
        "WEBRTC_BINARY",
        "crc32c",
    )
    require("aiortc's SCTP transport changed", (cls, needed), (sctp, module_parts))

    original_handle_data = cls._handle_data
    original_receive_data_chunk = cls._receive_data_chunk
    original_send_sack = cls._send_sack
    original_send_chunk = cls._send_chunk
    original_data_channel_send = cls._data_channel_send
    original_receive_chunk = cls._receive_chunk
    original_t3_start = cls._t3_start
    original_t3_restart = cls._t3_restart
    established = cls.State.ESTABLISHED
    data_chunk = sctp.DataChunk
    sack_chunk = sctp.SackChunk
    heartbeat_chunk = sctp.HeartbeatChunk
    heartbeat_ack_chunk = sctp.HeartbeatAckChunk
    parse_packet = sctp.parse_packet
    binary = sctp.WEBRTC_BINARY
    crc32c = sctp.crc32c

    async def _handle_data(self: Any, data: bytes) -> None:
        state = _state(self)
        state.depth += 1
        state.got_data = False
        state.packet_at = self._loop.time()
        try:
            if len(data) > 12 and data[12] == _SACK_CHUNK_TYPE:
                if await _handle_bundle(self, data):
                    return
            await original_handle_data(self, data)
        finally:
            state.depth -= 1

    async def _handle_bundle(self: Any, data: bytes) -> bool:
        """A SACK bundled with DATA (ours): deliver the DATA first, then take the SACK.

        The SACK only concerns what we sent; the DATA is a call or an answer someone
        waits for. Chunks stay first-to-last on the wire as RFC 9260 §6.10 requires;
        only our processing order changes. False: not such a bundle, aiortc decides.
        """
        try:
            _src, _dst, tag, chunks = parse_packet(data)
        except ValueError:
            return False
        if (
            len(chunks) < 2
            or tag != self._local_verification_tag
            or not isinstance(chunks[0], sack_chunk)
            or not all(isinstance(chunk, data_chunk) for chunk in chunks[1:])
        ):
            return False
        for chunk in chunks[1:]:
            await self._receive_chunk(chunk)
        await self._receive_chunk(chunks[0])
        if self._sack_needed:
            await self._send_sack()
        return True

    async def _receive_data_chunk(self: Any, chunk: Any) -> None:
        _state(self).got_data = True
        await original_receive_data_chunk(self, chunk)

    async def _send_sack(self: Any) -> None:
        # Called by aiortc at the end of handling a packet that needs acknowledging.
        state = _state(self)
        quiet = False
        if state.got_data:
            state.got_data = False
            state.unacked_packets += 1
            now = asyncio.get_running_loop().time()
            # Many calls outstanding come in bursts with pauses between them: those
            # are told from a lone call by our own answers still in flight.
            quiet = now - state.last_data_at >= QUIET_GAP_S and not self._sent_queue
            state.last_data_at = now
        urgent = (
            quiet
            or state.unacked_packets >= SACK_EVERY_PACKETS
            or self._sack_misordered
            or self._sack_duplicates
            or self._association_state is not established
        )
        if urgent:
            await _ack_now(self, state)
        elif state.timer is None:
            loop = asyncio.get_running_loop()
            state.timer = loop.call_later(SACK_DELAY_S, _on_sack_timer, self, state)

    async def _ack_now(self: Any, state: _SackState) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        state.unacked_packets = 0
        await original_send_sack(self)

    def _on_sack_timer(self: Any, state: _SackState) -> None:
        state.timer = None
        if self._sack_needed and self._association_state is established:
            _spawn(_ack_quietly(self, state))

    async def _ack_quietly(self: Any, state: _SackState) -> None:
        try:
            await _ack_now(self, state)
        except Exception as exc:  # the DTLS transport closed meanwhile
            log.debug("delayed SACK not sent: %r", exc)

    async def _send_chunk(self: Any, chunk: Any) -> None:
        state = _state(self)
        if state.capture:
            state.captured = chunk
            return
        if state.timer is None or not isinstance(chunk, data_chunk) or not self._sack_needed:
            await original_send_chunk(self, chunk)
            return
        # A SACK is waiting: build it (aiortc's own code, captured above) and bundle it.
        state.capture = True
        try:
            await _ack_now(self, state)
        finally:
            state.capture = False
        sack, state.captured = state.captured, None
        sack_bytes, data_bytes = bytes(sack), bytes(chunk)
        # A link of large packets (_sctp_packets) bundles up to its own size.
        if 12 + len(sack_bytes) + len(data_bytes) > _sctp_packets.packet_bytes(self):
            await original_send_chunk(self, sack)
            await original_send_chunk(self, chunk)
            return
        # RFC 9260 §6.10: control chunks come before DATA chunks in a bundle.
        header = pack("!HHL", self._local_port, self._remote_port, self._remote_verification_tag)
        body = sack_bytes + data_bytes
        checksum = crc32c(header + b"\x00\x00\x00\x00" + body)
        await self.transport._send_data(header + pack("<L", checksum) + body)

    def _data_channel_send(self: Any, channel: Any, data: Any) -> None:
        state = _state(self)
        if (
            state.depth
            or not isinstance(data, bytes)
            or not data
            or self._association_state is not established
            or self._data_channel_queue
            or self._outbound_queue
            or (self._remote_max_message_size and len(data) > self._remote_max_message_size)
        ):
            # Inside aiortc's receive path, or anything unusual: aiortc's own way.
            original_data_channel_send(self, channel, data)
            return
        channel._addBufferedAmount(len(data))
        self._data_channel_queue.append((channel, binary, data))
        run_eagerly(self._data_channel_flush())

    # -- probes while stalled --------------------------------------------------------

    def _t3_start(self: Any) -> None:
        # T3 starts when DATA goes out with none outstanding: watch it from now on.
        original_t3_start(self)
        _watch_stall(self)

    def _t3_restart(self: Any) -> None:
        # T3 restarts on a SACK that moves and on a retransmission. Between T3 expiring
        # and the retransmission, nothing counts as outstanding: a check that ran just
        # then stopped watching, and only this call starts it again (QA: a call sent in
        # a 1.3 s cut waited for the next T3, 1.05 s after the link came back).
        original_t3_restart(self)
        _watch_stall(self)

    def _watch_stall(self: Any) -> None:
        state = _state(self)
        if state.stall_timer is None:
            state.stall_timer = self._loop.call_later(STALL_S, _check_stall, self, state)

    def _stalled_since(self: Any, state: _SackState) -> float | None:
        """Wall time since when our oldest outstanding DATA has waited with no SACK
        moving, or None when nothing is outstanding."""
        if self._t3_handle is None or not self._sent_queue:
            return None
        now = time.time()
        if self._last_sacked_tsn != state.seen_sacked_tsn:
            state.seen_sacked_tsn = self._last_sacked_tsn
            state.progress_at = now
        return max(self._sent_queue[0]._sent_time or now, state.progress_at)

    def _check_stall(self: Any, state: _SackState) -> None:
        state.stall_timer = None
        since = _stalled_since(self, state)
        if since is None or self._association_state is not established:
            return  # nothing outstanding: _t3_start or _t3_restart watches again
        waited = time.time() - since
        if waited < STALL_S:
            delay = STALL_S - waited
        else:
            probe = heartbeat_chunk()
            probe.params.append((_HEARTBEAT_INFO, pack("!d", time.time())))
            _spawn(_send_quietly(self, probe))
            state.probes_sent += 1
            delay = PROBE_INTERVAL_S
        state.stall_timer = self._loop.call_later(delay, _check_stall, self, state)

    async def _send_quietly(self: Any, chunk: Any) -> None:
        try:
            await self._send_chunk(chunk)
        except Exception as exc:  # the DTLS transport closed meanwhile
            log.debug("probe not sent: %r", exc)

    async def _receive_chunk(self: Any, chunk: Any) -> None:
        if not isinstance(chunk, heartbeat_ack_chunk):
            await original_receive_chunk(self, chunk)
            return
        info = dict(chunk.params).get(_HEARTBEAT_INFO, b"")
        if len(info) != 8:
            return  # not one of our probes
        (probe_sent_at,) = unpack("!d", info)
        state = _state(self)
        since = _stalled_since(self, state)
        if since is not None and probe_sent_at - since >= STALL_S:
            # The path works now. A SACK for the stalled DATA may still be on its way
            # (delayed up to SACK_DELAY_S): look again once it would have come.
            oldest = self._sent_queue[0]
            self._loop.call_later(2 * SACK_DELAY_S, _retransmit_if_lost, self, state, oldest)

    def _retransmit_if_lost(self: Any, state: _SackState, oldest: Any) -> None:
        since = _stalled_since(self, state)
        if since is None or self._sent_queue[0] is not oldest or time.time() - since < STALL_S:
            return  # acknowledged meanwhile
        if self._association_state is not established:
            return
        log.debug("%r: DATA lost in an outage: sent again now", self)
        state.outage_retransmits += 1
        self._t3_handle.cancel()
        self._t3_expired()

    patched = {
        "_handle_data": _handle_data,
        "_receive_data_chunk": _receive_data_chunk,
        "_send_sack": _send_sack,
        "_send_chunk": _send_chunk,
        "_data_channel_send": _data_channel_send,
        "_receive_chunk": _receive_chunk,
        "_t3_start": _t3_start,
        "_t3_restart": _t3_restart,
    }
    for name, method in patched.items():
        setattr(cls, name, method)
    _installed = True


def run_eagerly(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` now up to its first real suspension; a task finishes it from there.

    aiortc's send path (SCTP -> DTLS -> ICE -> ``sendto``) normally never suspends; over
    a TURN relay it may, and then the rest runs as an ordinary task.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    except Exception as exc:  # as aiortc's own task would: the connection is going away
        log.debug("eager SCTP send failed: %r", exc)
        return
    _spawn(_finish(coro, yielded))


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _resume(coro, yielded)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Hand what ``coro`` yielded (a future it waits on) to the task running us, and go
    on driving ``coro`` the way a task would."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # cancellation, thrown into the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value
