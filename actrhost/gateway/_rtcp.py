"""RTCP only from tracks that carry media.

Each peer connection has :data:`~._media.TRACKS_PER_KIND` video and as many audio
transceivers, negotiated up front and mostly idle. aiortc gives each RTP sender and each
RTP receiver an RTCP task that wakes every 0.5 to 1.5 s from the moment the connection is
up: the sender to send a sender report and SDES, the receiver to send receiver reports
(none until it received a packet). RFC 3550 §6.4 has sender reports from active senders
only, and a receiver with no sources has nothing to report. Sixteen such tasks per
connection sent eight encrypted packets a second each way (until 2026-12-02) and woke
the idle gateway ≈ 16 times a second per connection (until 2026-12-07).

:func:`skip_rtcp_of_silent_tracks` makes each task wait, without a timer, until its
track carries media: a sender until our track hands the encoder its first frame
(:attr:`~._media.OutboundTrack.sending`), a receiver until its first RTP packet. Then
aiortc's loop runs as shipped. aiortc's ``stop`` waits for the task's "started" event
before it cancels the task, and for its "exited" event after: the waiting task sets the
first at once, and the second when cancelled while still waiting.

Only the gateway process calls :func:`skip_rtcp_of_silent_tracks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender

from ._media import OutboundTrack

#: The attribute a waiting receiver's RTCP task leaves for its first RTP packet to set.
_FIRST_PACKET = "_actrhost_first_packet"


def skip_rtcp_of_silent_tracks() -> None:
    """RTP senders and receivers run their RTCP loop only once they carry media (module
    docstring). Gateway process only; idempotent; fails loudly if aiortc no longer has
    the methods it wraps."""
    for cls, name in (
        (RTCRtpSender, "_run_rtcp"),
        (RTCRtpReceiver, "_run_rtcp"),
        (RTCRtpReceiver, "_handle_rtp_packet"),
    ):
        if not callable(getattr(cls, name, None)):
            raise RuntimeError(f"aiortc's {cls.__name__} changed: no {name}")
    if getattr(RTCRtpSender._run_rtcp, "_actrhost_quiet", False):
        return
    _wait_in_rtcp_loop(RTCRtpSender, _until_track_sends)
    _wait_in_rtcp_loop(RTCRtpReceiver, _until_first_packet)
    handle_rtp_packet = RTCRtpReceiver._handle_rtp_packet

    async def handle_first_rtp_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
        first = self.__dict__.pop(_FIRST_PACKET, None)
        if first is not None:
            first.set()
        await handle_rtp_packet(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = handle_first_rtp_packet  # type: ignore[method-assign]


def _until_track_sends(sender: Any) -> Awaitable[Any] | None:
    track = sender.track
    if isinstance(track, OutboundTrack) and not track.sending.is_set():
        return track.sending.wait()
    return None  # sending already, or not our track: aiortc's way


def _until_first_packet(receiver: Any) -> Awaitable[Any] | None:
    if vars(receiver).get("_RTCRtpReceiver__remote_streams"):
        return None  # a packet came already
    first = asyncio.Event()
    setattr(receiver, _FIRST_PACKET, first)
    return first.wait()


def _wait_in_rtcp_loop(cls: type, media: Callable[[Any], Awaitable[Any] | None]) -> None:
    run_rtcp = cls._run_rtcp  # type: ignore[attr-defined]
    started, exited = f"_{cls.__name__}__rtcp_started", f"_{cls.__name__}__rtcp_exited"

    async def run_rtcp_once_media_flows(self: Any) -> None:
        state = vars(self)
        if started in state and exited in state:  # else aiortc changed: its loop as is
            waiting = media(self)
            if waiting is not None:
                state[started].set()  # stop() waits for it before it cancels us
                try:
                    await waiting
                except asyncio.CancelledError:
                    state[exited].set()  # as aiortc's loop does when cancelled
                    return
        await run_rtcp(self)

    run_rtcp_once_media_flows._actrhost_quiet = True  # type: ignore[attr-defined]
    cls._run_rtcp = run_rtcp_once_media_flows  # type: ignore[attr-defined]
