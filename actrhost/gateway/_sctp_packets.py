"""Larger SCTP packets between two gateways on one host (gateway process only).

aiortc cuts every message into SCTP packets of at most 1,189 bytes
(``SCTP_MAX_PACKET_LENGTH``), so that with DTLS and UDP around them they fit the smallest
IPv6 MTU of any path. Each packet then costs its own DTLS record, ``sendto``, datagram,
decryption and parse, all in Python: that per-packet work is what bounds a stream. On a
connection whose ICE pair is host to host on loopback addresses (two nodes on one host)
no path or router is in between and the kernel's MTU is 64 KiB: such a connection sends
packets of up to :data:`LARGE_PACKET_BYTES` once the other gateway's ``hello`` says it
reads them. Measured, plain aiortc on loopback, 32 MiB in 64 KiB messages: 11 to 12 MB/s
with 1,189-byte packets, 71 to 75 MB/s with 8 KiB and 111 to 118 MB/s with 16,000-byte ones.
Between two hosts joined directly, :mod:`._sctp_path` does the same once a probe showed
that the path carries such packets (in IP fragments); any other connection (a TURN relay,
a path through NAT) keeps aiortc's size.

Two things in aiortc stand in the way, both handled here:

* Its DTLS transport reads at most 1,500 bytes of a record (``SSL.Connection.recv`` and
  ``bio_read``): a larger packet arrived cut short and was dropped (a trial with 8 KiB
  packets on 2026-12-01 "never completed a transfer"). aiortc's DTLS module gets a
  ``Connection`` that reads up to :data:`RECORD_READ_BYTES` (a TLS record holds at most
  16 KiB of plaintext).
* Its SCTP association reads the packet size as module constants (with the largest DATA
  chunk payload derived from it) in four methods: fragmenting, the congestion window's
  growth and floors, the burst limit. :func:`install` puts a dispatcher on the class
  for each, which runs aiortc's function or, for an association :func:`enlarge` switched,
  the same code with larger constants (a copy of the function over a copy of the
  module's globals). The peer needs nothing for that: SCTP takes chunks of any size.

:func:`install` must run before the other SCTP patches (``_sctp``, ``_sctp_loss``,
``_sctp_scan``), whose wrappers then call the dispatchers as aiortc's methods.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from ._aiortc_parts import require

#: The SCTP packet size between two gateways on one host: the most a DTLS record holds.
LARGE_PACKET_BYTES = 16384
#: What aiortc's DTLS reads of a record at most here (ciphertext: plaintext + overhead).
RECORD_READ_BYTES = 18432
#: aiortc's methods that read ``SCTP_MAX_PACKET_LENGTH`` or ``USERDATA_MAX_LENGTH``.
_METHODS = ("_send", "_transmit", "_receive_sack_chunk", "_t3_expired")
#: The association's packet size, where :func:`enlarge` set one.
_ATTRIBUTE = "_actrhost_packet_bytes"

_installed = False
#: aiortc's own functions for :data:`_METHODS` (other patches wrap our dispatchers).
_originals: dict[str, Callable[..., Any]] = {}
#: Per packet size: aiortc's functions over globals that hold it.
_variants: dict[int, dict[str, Callable[..., Any]]] = {}


def installed() -> bool:
    """Whether this process reads large packets (its ``hello`` says so)."""
    return _installed


def install() -> None:
    """Patch aiortc's DTLS reads and SCTP packet constants in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from aiortc import rtcdtlstransport as dtls
    from aiortc import rtcsctptransport as sctp

    cls: Any = sctp.RTCSctpTransport
    constants = ("SCTP_MAX_PACKET_LENGTH", "USERDATA_MAX_LENGTH")
    require("aiortc changed", (cls, _METHODS), (sctp, constants), (dtls, ("SSL",)))
    originals = {name: getattr(cls, name) for name in _METHODS}
    if any(f.__module__ != sctp.__name__ for f in originals.values()):
        # Their copies would run another module's code over aiortc's globals.
        raise RuntimeError("_sctp_packets.install() must come before the other SCTP patches")
    dtls.SSL = _ssl_reading_large_records(dtls.SSL)
    for name, original in originals.items():
        _originals[name] = original
        setattr(cls, name, _dispatcher(name, original))
    _installed = True


def enlarge(transport: Any, packet_bytes: int) -> None:
    """Send SCTP packets of up to ``packet_bytes`` on association ``transport`` from now
    on (messages already cut keep their chunks). Its congestion window is raised to
    what aiortc starts with for that size, three full chunks."""
    if not _installed or packet_bytes <= _aiortc_packet_bytes():
        return
    _make_variant(packet_bytes)
    transport.__dict__[_ATTRIBUTE] = packet_bytes
    transport._cwnd = max(transport._cwnd, 3 * _userdata_bytes(packet_bytes))


def shrink(transport: Any) -> None:
    """Back to aiortc's packet size for what association ``transport`` cuts from now on
    (chunks cut already keep their size: SCTP sends each whole)."""
    transport.__dict__.pop(_ATTRIBUTE, None)


def packet_bytes(transport: Any) -> int:
    """The SCTP packet size association ``transport`` sends."""
    return int(transport.__dict__.get(_ATTRIBUTE) or _aiortc_packet_bytes())


# -- how -----------------------------------------------------------------------------------


def _ssl_reading_large_records(ssl: Any) -> Any:
    """A stand-in for pyOpenSSL's ``SSL`` module whose ``Connection`` reads whole large
    records; everything else is the module's own (its errors too)."""

    class Connection(ssl.Connection):  # type: ignore[misc]
        def recv(self, bufsiz: int, flags: Any = None) -> bytes:
            return super().recv(max(bufsiz, RECORD_READ_BYTES), flags)

        def bio_read(self, bufsiz: int) -> bytes:
            return super().bio_read(max(bufsiz, RECORD_READ_BYTES))

    module = types.SimpleNamespace(**vars(ssl))
    module.Connection = Connection
    return module


def _dispatcher(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch(self: Any, *args: Any, **kwargs: Any) -> Any:
        size = self.__dict__.get(_ATTRIBUTE)
        method = original if size is None else _variants[size][name]
        return method(self, *args, **kwargs)

    dispatch.__name__ = dispatch.__qualname__ = name
    dispatch.__doc__ = original.__doc__
    return dispatch


def _make_variant(size: int) -> None:
    if size in _variants:
        return
    from aiortc import rtcsctptransport as sctp

    scope = dict(vars(sctp))
    scope["SCTP_MAX_PACKET_LENGTH"] = size
    scope["USERDATA_MAX_LENGTH"] = _userdata_bytes(size)
    _variants[size] = {
        name: types.FunctionType(
            original.__code__, scope, name, original.__defaults__, original.__closure__
        )
        for name, original in _originals.items()
    }


def _userdata_bytes(packet: int) -> int:
    """The largest DATA chunk payload in a packet of ``packet`` bytes, as aiortc derives
    it (common header 12, chunk header 16, padded to 4)."""
    return (packet - 12 - 16) // 4 * 4


def _aiortc_packet_bytes() -> int:
    from aiortc import rtcsctptransport as sctp

    return int(sctp.SCTP_MAX_PACKET_LENGTH)
