"""Large SCTP packets between two hosts, once a probe showed that the path carries them.

Between gateways on one host, :mod:`._sctp_packets` sends packets of 16 KiB. Between two
hosts the same packets are larger than the network's MTU (1,500 bytes on most LANs), so
the sending kernel cuts each UDP datagram into IP fragments and the receiving kernel
joins them again. That is still far cheaper than aiortc's Python work for fourteen
packets of 1,189 bytes: between two network namespaces over a veth with an MTU of 1,500,
streams moved 4.1 times as fast, 5.8 times raw aiortc's (``scripts/bench_hosts.py``).

Three things can make fragments a bad idea, and all are checked:

* **A path that drops fragments** (some firewalls and NATs do). Before the first large
  packet, a HEARTBEAT padded to the packet size is sent (RFC 9260 §8.3; every SCTP stack
  echoes its information in the HEARTBEAT ACK, so the answer is as large): only when it
  comes back (:data:`PROBE_ATTEMPTS` of :data:`PROBE_TIMEOUT_S`) does the association
  send large packets.
* **A slow link** (a VPN over a home uplink, say). There the link, not aiortc's CPU, bounds
  a stream, so large packets gain nothing, and each holds a call queued behind it for
  its whole time on the wire (131 ms at 1 Mbit/s). A small probe goes just before each
  large one: the large answer comes at least the time both large packets take on the
  link after the small one, so a gap above :data:`SLOW_GAP_S` (a link below about 50
  Mbit/s) keeps aiortc's size. Only the smallest gap of the attempts counts: a busy
  loop can only widen it.
* **A path that loses packets.** One lost fragment loses the whole packet, twelve times
  as likely as one small packet on a 1,500-byte MTU, and a whole 16 KiB is sent again.
  After :data:`LOSSES_BEFORE_SMALL` losses (fast recoveries or retransmission timeouts)
  within :data:`LOSS_WINDOW_S` the association goes back to aiortc's size for what it
  cuts from then on (a good path's odd loss, hours apart, does not count up; chunks cut
  already keep their size, and still arrive in fragments: the probe showed they do).
  An outage of a second or two looks the same, so :data:`REPROBE_AFTER_S` later a probe
  is sent again, and on its answer the large packets come back; each time a link falls
  back again, the wait doubles (up to :data:`REPROBE_MAX_S`).

Only host-to-host candidate pairs are probed (module ``_peer``): such a pair means two
interfaces that reach each other directly, as on a LAN or in a data centre; a path
through NAT (server-reflexive) or a TURN relay keeps aiortc's size. ``[webrtc]
large_packets = false`` turns this off.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Generator
from typing import Any

from . import _sctp_packets
from ._aiortc_parts import require

log = logging.getLogger(__name__)

#: How long a size probe may take to come back (its ACK) before another is sent. Above
#: a LAN's round trip, including a busy peer's loop.
PROBE_TIMEOUT_S = 1.0
#: Probes sent before the path counts as dropping large packets (one may be lost as any
#: datagram, or wait behind a busy peer's loop).
PROBE_ATTEMPTS = 3
#: The most the large probe's answer may come after the small one's: beyond, the link
#: takes more than this to carry 2 x 16 KiB, slower than about 50 Mbit/s.
SLOW_GAP_S = 0.005
#: A gap this long is the link's, not a busy loop's: no more attempts (each costs a slow
#: link 2 x 16 KiB of its time, 0.26 s at 1 Mbit/s, beside what it carries).
SURELY_SLOW_GAP_S = 0.05
#: Losses (fast recoveries or retransmission timeouts) after which an association that
#: probed its way to large packets goes back to aiortc's size, when they all came within
#: ``LOSS_WINDOW_S``.
LOSSES_BEFORE_SMALL = 3
#: A lossy or broken path loses that many within this time; a good one's odd losses,
#: hours apart, never add up to a fallback.
LOSS_WINDOW_S = 60.0
#: How long after falling back to aiortc's size a link probes again (the first time).
REPROBE_AFTER_S = 30.0
#: The longest wait before probing again (it doubles at each fallback).
REPROBE_MAX_S = 600.0

_installed = False
_HEARTBEAT_INFO = 1  # RFC 9260 §3.3.5: the parameter a HEARTBEAT ACK echoes
#: How a size probe's HEARTBEAT information starts (the stall probes of ``_sctp`` carry
#: 8 bytes of time).
_PROBE_TAG = b"actrhost size probe "
#: SCTP common header, chunk header, parameter header.
_PROBE_OVERHEAD_BYTES = 12 + 4 + 4


class _PathState:
    """What this module keeps per association (an attribute of the transport)."""

    __slots__ = ("answered", "answers", "fallbacks", "found", "losses", "packet_bytes", "probed")

    def __init__(self) -> None:
        self.answered: asyncio.Future[None] | None = None  # the large probe in flight
        self.answers: dict[bytes, float] = {}  # probe kind -> loop time of its answer
        self.probed = False  # large packets because a probe came back
        self.losses: list[float] = []  # loop times of the latest losses since then
        self.packet_bytes = 0  # the size probed
        self.fallbacks = 0  # times the losses brought aiortc's size back
        self.found: Probe | None = None  # what the last probe found


def _state(transport: Any) -> _PathState:
    state = transport.__dict__.get("_actrhost_path")
    if state is None:
        state = transport.__dict__["_actrhost_path"] = _PathState()
    return state


def installed() -> bool:
    """Whether this process probes paths between hosts (a tuned gateway does)."""
    return _installed and _sctp_packets.installed()


class Probe(enum.Enum):
    """What probing a path found."""

    CARRIED = "a probe came back"
    NO_ANSWER = "no answer to a probe"
    SLOW = "a slow link"
    CLOSED = "the connection closed"


async def enlarge_if_carried(transport: Any, packet_bytes: int) -> Probe:
    """Probe whether the path carries SCTP packets of ``packet_bytes`` both ways, fast;
    if it does, send packets that large on association ``transport``
    (:mod:`._sctp_packets`). Call only where :func:`installed`."""
    state = _state(transport)
    loop = asyncio.get_running_loop()
    small, large = _probe(b"s", _PROBE_OVERHEAD_BYTES + 32), _probe(b"l", packet_bytes)
    found = Probe.NO_ANSWER
    try:
        for _attempt in range(PROBE_ATTEMPTS):
            state.answers.clear()
            state.answered = answered = loop.create_future()
            await transport._send_chunk(small)
            await transport._send_chunk(large)
            done, _ = await asyncio.wait([answered], timeout=PROBE_TIMEOUT_S)
            if not done or b"s" not in state.answers:
                continue  # (the small one's answer lost: it says nothing)
            gap_s = state.answers[b"l"] - state.answers[b"s"]
            if gap_s <= SLOW_GAP_S:
                found = Probe.CARRIED
                break
            found = Probe.SLOW
            if gap_s > SURELY_SLOW_GAP_S:
                break  # no busy loop: more probes would only take the slow link's time
    except ConnectionError:
        return Probe.CLOSED
    finally:
        state.answered = None
    state.found = found
    if found is Probe.CARRIED:
        _sctp_packets.enlarge(transport, packet_bytes)
        state.probed, state.losses, state.packet_bytes = True, [], packet_bytes
    return found


def describe(transport: Any) -> str | None:
    """Why association ``transport`` sends the packets it does between two hosts, for
    ``actrhost status``: what the last probe found, or that losses brought aiortc's size
    back; None where no probe was sent (one host, NAT or relay, turned off)."""
    state = transport.__dict__.get("_actrhost_path")
    if state is None or state.found is None:
        return None
    if state.found is Probe.CARRIED and not state.probed:
        return f"{LOSSES_BEFORE_SMALL} losses, probing again later"
    return str(state.found.value)


def _probe(kind: bytes, packet_bytes: int) -> Any:
    """A HEARTBEAT that makes an SCTP packet of ``packet_bytes``, tagged ``kind``."""
    from aiortc.rtcsctptransport import HeartbeatChunk

    probe = HeartbeatChunk()
    padding = packet_bytes - _PROBE_OVERHEAD_BYTES - len(_PROBE_TAG) - len(kind)
    probe.params.append((_HEARTBEAT_INFO, _PROBE_TAG + kind + bytes(padding)))
    return probe


def install() -> None:
    """Patch aiortc's SCTP transport in this process (idempotent): size probes' answers
    are taken here, and losses counted. After the other SCTP patches."""
    global _installed
    if _installed:
        return
    from aiortc import rtcsctptransport as sctp

    cls: Any = sctp.RTCSctpTransport
    needed = ("_receive_chunk", "_t3_expired", "_receive_sack_chunk")
    require("aiortc's SCTP transport changed", (cls, needed), (sctp, ("HeartbeatAckChunk",)))
    heartbeat_ack_chunk = sctp.HeartbeatAckChunk
    original_receive_chunk = cls._receive_chunk
    original_t3_expired = cls._t3_expired
    original_receive_sack_chunk = cls._receive_sack_chunk

    def _receive_chunk(self: Any, chunk: Any) -> Awaitable[None]:
        # Not a coroutine of its own: every chunk of every link passes here, and all but
        # our probes' answers go on to the previous method's coroutine as they are.
        if isinstance(chunk, heartbeat_ack_chunk):
            info = dict(chunk.params).get(_HEARTBEAT_INFO, b"")
            if info.startswith(_PROBE_TAG):
                _take_answer(self, info[len(_PROBE_TAG) : len(_PROBE_TAG) + 1])
                return _DONE
        return original_receive_chunk(self, chunk)  # type: ignore[no-any-return]

    def _t3_expired(self: Any) -> None:
        _count_loss(self)
        original_t3_expired(self)

    async def _receive_sack_chunk(self: Any, sack: Any) -> None:
        recovering = self._fast_recovery_exit is not None
        await original_receive_sack_chunk(self, sack)
        if not recovering and self._fast_recovery_exit is not None:
            _count_loss(self)

    cls._receive_chunk = _receive_chunk
    cls._t3_expired = _t3_expired
    cls._receive_sack_chunk = _receive_sack_chunk
    _installed = True


def _take_answer(transport: Any, kind: bytes) -> None:
    """A size probe's answer came (``kind``: b"s" the small one, b"l" the large one)."""
    state = _state(transport)
    state.answers.setdefault(kind, transport._loop.time())
    if kind == b"l" and state.answered is not None and not state.answered.done():
        state.answered.set_result(None)


class _Done:
    """An awaitable that is done at once (a probe's answer needs no more work)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_DONE = _Done()


def _count_loss(transport: Any) -> None:
    state = transport.__dict__.get("_actrhost_path")
    if state is None or not state.probed:
        return
    now = transport._loop.time()
    state.losses = [at for at in state.losses if now - at < LOSS_WINDOW_S] + [now]
    if len(state.losses) < LOSSES_BEFORE_SMALL:
        return
    state.probed = False
    _sctp_packets.shrink(transport)
    wait_s = min(REPROBE_AFTER_S * 2**state.fallbacks, REPROBE_MAX_S)
    state.fallbacks += 1
    log.info(
        "%d losses in %.1f s with large packets: back to aiortc's size, probing again in %g s",
        len(state.losses),
        now - state.losses[0],
        wait_s,
    )
    transport._loop.call_later(wait_s, _probe_again, transport, state.packet_bytes)


def _probe_again(transport: Any, packet_bytes: int) -> None:
    if transport._association_state is not transport.State.ESTABLISHED:
        return  # closed meanwhile: a new connection probes anew
    task = asyncio.ensure_future(_reprobe(transport, packet_bytes))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _reprobe(transport: Any, packet_bytes: int) -> None:
    if await enlarge_if_carried(transport, packet_bytes) is Probe.CARRIED:
        log.info("a probe came back: packets of %d bytes again", packet_bytes)


#: Probes started here (after a fallback), kept until they finish.
_tasks: set[asyncio.Future[None]] = set()
