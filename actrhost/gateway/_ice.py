"""ICE settings for the gateway's peer connections, from the ``[webrtc]`` config table.

Four facts about aiortc / aioice on this machine (DESIGN §10) shape this module:

* With ``iceServers`` unset aiortc contacts a public STUN server. We always pass an
  explicit list built from the config (empty by default), so nothing leaves the machine
  unless the config says so.
* aioice gathers host candidates from every interface *except* 127.0.0.1 and ::1
  (``aioice.ice.get_host_addresses``), so two gateways on one machine with only loopback
  never connect, and aiortc then skips ICE without ever failing. aioice offers no hook
  for this (aiortc/aioice issue #2 and pull request #57 discuss one; not merged), so
  :func:`use_host_addresses` replaces that one module-level function, inside the gateway
  process only, with one returning exactly ``[webrtc] ice_host_addresses``.
  ``gather_candidates`` looks the function up at call time, so the replacement applies
  to every connection created afterwards.
* ``force_relay`` maps to ``iceTransportPolicy = "relay"``: aioice then gathers no host
  or server-reflexive candidate at all (RFC 9429 §3.5.3), only TURN relay candidates.
* aioice gives its UDP sockets a 256 KiB receive buffer, far less than what aiortc's SCTP
  lets the other side have in flight: :func:`enlarge_receive_buffers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aioice.ice
import aioice.stun
import aioice.turn
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import connection_kwargs

from .._config import WebrtcConfig

log = logging.getLogger(__name__)

#: What aioice had before :func:`use_host_addresses` (kept for tests and for undoing).
_ORIGINAL_GET_HOST_ADDRESSES: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Make aioice gather host candidates on exactly ``addresses`` (None: aioice's default).

    Affects connections created afterwards in this process. Raises RuntimeError if the
    installed aioice no longer has the function this relies on (checked, never silently
    ignored: without it two local gateways would hang instead of connecting).
    """
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        raise RuntimeError(
            "aioice.ice.get_host_addresses is missing: this aioice version is not supported "
            "(ice_host_addresses cannot be applied)"
        )
    if addresses is None:
        aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES  # type: ignore[assignment]
        return
    parsed = [ipaddress.ip_address(a) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(a) for a in parsed if (a.version == 4 and use_ipv4) or (a.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses  # type: ignore[assignment]
    log.debug("ICE host candidates restricted to %s", ", ".join(map(str, parsed)))


def skip_stun_parse_for_media() -> None:
    """Hand DTLS and RTP datagrams to the connection without trying to parse them as STUN.

    aioice's ``StunProtocol.datagram_received`` parses every datagram as a STUN message
    first and takes the ``ValueError`` as "data": an exception per packet on the hot path.
    RFC 7983 §7 demultiplexes by the first byte instead: 0-3 is STUN, anything above is
    DTLS (20-63), TURN channel data (64-79) or RTP/RTCP (128-191). Datagrams that may be
    STUN still take aioice's own path. Gateway process only; idempotent.
    """
    cls = aioice.ice.StunProtocol
    original = cls.datagram_received
    if getattr(original, "_actrhost_demux", False):
        return

    def datagram_received(self: Any, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and data and data[0] > 3:
            self.receiver.data_received(data, self.local_candidate.component)
            return
        original(self, data, addr)

    datagram_received._actrhost_demux = True  # type: ignore[attr-defined]
    cls.datagram_received = datagram_received  # type: ignore[method-assign]


#: What each of the gateway's UDP sockets may queue before the kernel drops datagrams.
#: aiortc advertises a 1 MiB SCTP receive window, so the other gateway may have ~900
#: datagrams in flight, and the kernel charges each ~2.3 KiB of a socket's buffer (its
#: bookkeeping included). aioice asks for 256 KiB, which holds ~220: a gateway busy for
#: a millisecond or two lost datagrams, and each loss halved the sender's SCTP
#: congestion window (QA: 6-9 fast recoveries in each 8 s stream between two nodes).
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

_RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


def enlarge_receive_buffers(size: int = UDP_RECEIVE_BUFFER_BYTES) -> None:
    """Give every UDP socket aioice opens from now on a receive buffer of ``size`` bytes.

    aioice sets ``SO_RCVBUF`` on its host sockets and on its socket to a TURN server to
    the module constant ``aioice.turn.UDP_SOCKET_BUFFER_SIZE``, read when each socket is
    made: that constant is what changes. The kernel caps the size at
    ``net.core.rmem_max``, which is logged at INFO when lower. Gateway process only.
    Raises RuntimeError if the installed aioice no longer has the constant.
    """
    if not isinstance(getattr(aioice.turn, "UDP_SOCKET_BUFFER_SIZE", None), int):
        raise RuntimeError(
            "aioice.turn.UDP_SOCKET_BUFFER_SIZE is missing: this aioice version is not "
            "supported (the UDP receive buffers cannot be enlarged)"
        )
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = size  # type: ignore[attr-defined]
    try:
        cap = int(_RMEM_MAX.read_text())
    except (OSError, ValueError):
        return  # not Linux, or no /proc: nothing to say about the cap
    if cap < size:
        log.info(
            "UDP receive buffers capped at %d bytes by the sysctl net.core.rmem_max (asked "
            "%d): raise it to spare datagrams lost while the gateway is briefly busy",
            cap,
            size,
        )


def ice_servers(webrtc: WebrtcConfig) -> list[RTCIceServer]:
    """The STUN and TURN servers of ``[webrtc]`` as aiortc wants them.

    aioice uses at most one STUN and one TURN server per connection (the first of each
    in this list); the rest are ignored by aiortc, which we log once.
    """
    servers = [RTCIceServer(urls=url) for url in webrtc.stun_urls]
    servers += [
        RTCIceServer(urls=turn.url, username=turn.username, credential=turn.credential)
        for turn in webrtc.turn_servers
    ]
    if len(webrtc.stun_urls) > 1 or len(webrtc.turn_servers) > 1:
        log.info("aiortc uses only the first STUN and the first TURN server of [webrtc]")
    return servers


def rtc_configuration(webrtc: WebrtcConfig) -> RTCConfiguration:
    """An explicit RTCConfiguration: never aiortc's default public STUN server.

    Everything on one transport (``max-bundle``): one ICE gathering (one TURN allocation)
    per connection, and aiortc's default ``balanced`` policy leaves every audio
    transceiver after the first on a transport it discards once bundled: they never send.
    """
    policy = RTCIceTransportPolicy.RELAY if webrtc.force_relay else RTCIceTransportPolicy.ALL
    return RTCConfiguration(
        iceServers=ice_servers(webrtc),
        iceTransportPolicy=policy,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


#: How long :func:`what_the_turn_server_says` waits for an allocation.
TURN_CHECK_S = 2.0


async def what_the_turn_server_says(webrtc: WebrtcConfig) -> str:
    """Why the first TURN server of ``webrtc`` gave no relay candidate, as far as an
    allocation of our own shows it: "it refused the allocation (401 Unauthorized)",
    "it did not answer within 2 s", or "" (it allocated, or the URL is not one aioice
    takes). aioice drops the reason when it gathers, and a refused credential read as
    an unreachable server (QA)."""
    kwargs = connection_kwargs(ice_servers(webrtc))
    server = kwargs.get("turn_server")
    if server is None:
        return ""
    try:
        async with asyncio.timeout(TURN_CHECK_S):
            transport, _ = await aioice.turn.create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=server,
                username=kwargs.get("turn_username"),
                password=kwargs.get("turn_password"),
                ssl=kwargs.get("turn_ssl", False),
                transport=kwargs.get("turn_transport", "udp"),
            )
    except aioice.stun.TransactionFailed as exc:
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, "refused"))
        return f"it refused the allocation ({code} {reason})"
    except (TimeoutError, aioice.stun.TransactionError, OSError):
        return f"it did not answer within {TURN_CHECK_S:g} s"
    transport.close()
    return ""


def local_candidate_count(pc: Any) -> int:
    """How many local candidates the peer connection gathered (0: it can never connect)."""
    count = 0
    for transceiver_transport in _ice_transports(pc):
        count += len(transceiver_transport.iceGatherer.getLocalCandidates())
    return count


def candidates(pc: Any) -> tuple[list[Any], list[Any]]:
    """The ICE candidates (aioice's) this side and the other offered, once both have
    some: ([], []) before (not negotiated yet)."""
    local: list[Any] = []
    remote: list[Any] = []
    try:
        for transport in _ice_transports(pc):
            local += transport.iceGatherer.getLocalCandidates()
            remote += transport.getRemoteCandidates()
    except AttributeError:
        return [], []
    return (local, remote) if local and remote else ([], [])


def loopback_only(pc: Any) -> bool:
    """True when both sides offered loopback candidates only: such a connection can form
    between two gateways on one host, never between two hosts (``ice_host_addresses``
    defaults to 127.0.0.1)."""
    local, remote = candidates(pc)
    try:
        addresses = [c.ip for c in local + remote]
        return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    except ValueError:  # a host name (mDNS)
        return False


def no_path_between(pc: Any) -> str:
    """What the two sides offered, for a connection that never formed: the usual cause is
    two hosts whose host addresses cannot reach each other ("" before both offered)."""
    local, remote = candidates(pc)
    if not local:
        return ""

    def shown(offered: list[Any]) -> str:
        return ", ".join(sorted({f"{c.ip} ({c.type})" for c in offered}))

    return (
        f"ICE found no path between our candidates {shown(local)} and theirs "
        f"{shown(remote)}: set [webrtc] ice_host_addresses to addresses the other host "
        "can reach, or give stun_urls / turn_urls"
    )


def candidate_type_in_use(pc: Any) -> str:
    """``host``, ``srflx``, ``prflx`` or ``relay`` for the nominated pair, or ``""``.

    aiortc's stats do not report the selected pair; the nominated pair lives in aioice's
    ``Connection._nominated`` (component 1). Read defensively: a missing attribute in a
    future aioice only makes this report ``""``.
    """
    for transport in _ice_transports(pc):
        connection = getattr(transport, "_connection", None)
        nominated = getattr(connection, "_nominated", None) or {}
        pair = nominated.get(1)
        if pair is not None:
            return str(getattr(pair.local_candidate, "type", ""))
    return ""


def host_pair_on_loopback(pc: Any) -> bool:
    """True when the nominated pair joins two host candidates on loopback addresses: a
    path inside one host, with no router and the loopback's MTU (module ``_sctp_packets``).
    """
    ends = _nominated_ends(pc)
    if ends is None:
        return False
    try:
        return all(c.type == "host" and ipaddress.ip_address(c.host).is_loopback for c in ends)
    except (AttributeError, ValueError):  # a future aioice; a host name (mDNS)
        return False


def host_pair(pc: Any) -> bool:
    """True when the nominated pair joins two host candidates: two interfaces that reach
    each other directly, with no NAT or relay between them (module ``_sctp_path``)."""
    ends = _nominated_ends(pc)
    return ends is not None and all(getattr(c, "type", None) == "host" for c in ends)


def _nominated_ends(pc: Any) -> tuple[Any, Any] | None:
    """The local and remote candidate of the connection's nominated pair, if any."""
    for transport in _ice_transports(pc):
        connection = getattr(transport, "_connection", None)
        pair = (getattr(connection, "_nominated", None) or {}).get(1)
        ends = (getattr(pair, "local_candidate", None), getattr(pair, "remote_candidate", None))
        return None if None in ends else ends
    return None


#: Linux's tables of UDP sockets, one line per socket with its inode and its drops.
_PROC_NET_UDP = (Path("/proc/net/udp"), Path("/proc/net/udp6"))


def udp_drops(pc: Any) -> int | None:
    """Datagrams the kernel dropped on the connection's UDP sockets, as their receive
    buffers were full (None where ``/proc/net/udp`` cannot say: not Linux).

    Counted per socket since it was opened: a new connection starts from zero.
    """
    inodes = set()
    for transport in _ice_transports(pc):
        for protocol in getattr(getattr(transport, "_connection", None), "_protocols", []):
            udp = getattr(protocol, "transport", None)
            sock = udp.get_extra_info("socket") if udp is not None else None
            if sock is not None:
                with contextlib.suppress(OSError, ValueError):  # closed meanwhile
                    inodes.add(str(os.fstat(sock.fileno()).st_ino))
    drops = None
    for table in _PROC_NET_UDP:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        drops = drops or 0
        for line in lines:
            fields = line.split()  # ... uid timeout inode ref pointer drops
            if len(fields) >= 13 and fields[9] in inodes:
                drops += int(fields[12])
    return drops


def _ice_transports(pc: Any) -> list[Any]:
    """The distinct RTCIceTransports of a peer connection (one when bundled)."""
    seen: dict[int, Any] = {}
    sctp = getattr(pc, "sctp", None)
    if sctp is not None:
        ice = sctp.transport.transport
        seen[id(ice)] = ice
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is not None:
            seen.setdefault(id(dtls.transport), dtls.transport)
    return list(seen.values())
