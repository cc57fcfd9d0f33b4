"""What travels out of band next to a ring: the descriptor of one record (where it sits)
and, for arrays, the dtype and shape of its payload.

Both are parsed from bytes another process sent, so both refuse anything malformed with
:class:`~actrhost._errors.BadRequest`; the reader then checks the descriptor against the
record header in the ring (``_ring.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import BadRequest
from ._segment import validate_name

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DESCRIPTOR_FIXED_BYTES", "Descriptor", "decode_array_meta", "encode_array_meta"]


# ---------------------------------------------------------------------------- descriptor

_DESC = struct.Struct("<BIIQBH")  # version, offset, length, sequence, name_len, meta_len
_DESC_VERSION = 1
DESCRIPTOR_FIXED_BYTES = _DESC.size  #: 20; to_bytes() is this + len(ring) + len(meta)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """Where one record sits in a ring: sent from writer to reader out of band.

    ``offset`` is the record header's offset in the data area, ``length`` the payload size
    in bytes, ``sequence`` the record's number in its ring (0, 1, 2, ...). ``meta`` is
    opaque to the ring; :meth:`RingWriter.write_array_nowait` puts the array's dtype and
    shape there (:func:`encode_array_meta`).
    """

    ring: str
    offset: int
    length: int
    sequence: int
    meta: bytes = b""

    def to_bytes(self) -> bytes:
        """Encode as ``20 + len(ring) + len(meta)`` bytes (little-endian, versioned)."""
        name = self.ring.encode("ascii")
        return (
            _DESC.pack(
                _DESC_VERSION, self.offset, self.length, self.sequence, len(name), len(self.meta)
            )
            + name
            + bytes(self.meta)
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Descriptor:
        """Decode :meth:`to_bytes` output. Raises BadRequest for anything malformed."""
        data = bytes(data)
        if len(data) < _DESC.size:
            raise BadRequest(f"ring descriptor too short: {len(data)} bytes")
        version, offset, length, sequence, name_len, meta_len = _DESC.unpack_from(data)
        if version != _DESC_VERSION:
            raise BadRequest(f"ring descriptor version {version} is not {_DESC_VERSION}")
        if len(data) != _DESC.size + name_len + meta_len:
            raise BadRequest(
                f"ring descriptor is {len(data)} bytes, header says "
                f"{_DESC.size + name_len + meta_len}"
            )
        try:
            name = validate_name(data[_DESC.size : _DESC.size + name_len].decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"ring descriptor has an invalid ring name: {exc}") from None
        return cls(name, offset, length, sequence, data[_DESC.size + name_len :])


# ---------------------------------------------------------------------------- numpy meta

_META_VERSION = 1
_ALLOWED_KINDS = frozenset("biufcSUVMm")  # never "O": object arrays hold pointers


def _np() -> Any:
    # numpy is imported on first use: it costs ~130 ms (DESIGN §10) and a worker that
    # never sends arrays should not pay it.
    import numpy

    return numpy


def encode_array_meta(dtype: np.dtype[Any] | str | type, shape: tuple[int, ...]) -> bytes:
    """Encode a dtype and shape as compact bytes: version, dtype string, ndim, u64 dims.

    A 2-D float64 array takes 21 bytes. Plain dtypes only (any byte order, datetimes,
    fixed-width strings and raw void included); object, structured, subarray and
    zero-itemsize dtypes raise :class:`BadRequest` because their bytes cannot be shared or
    their description would not round-trip.
    """
    np = _np()
    dt = np.dtype(dtype)
    if (
        dt.kind not in _ALLOWED_KINDS
        or dt.hasobject
        or dt.fields is not None
        or dt.subdtype is not None
        or dt.itemsize == 0
    ):
        raise BadRequest(f"dtype {dt!r} cannot travel through shared memory")
    text = dt.str.encode("ascii")
    if len(shape) > 255:
        raise BadRequest(f"array has {len(shape)} dimensions; at most 255")
    if any(d < 0 for d in shape):
        raise BadRequest(f"invalid shape {shape!r}")
    return (
        bytes((_META_VERSION, len(text)))
        + text
        + bytes((len(shape),))
        + struct.pack(f"<{len(shape)}Q", *shape)
    )


def decode_array_meta(meta: bytes | memoryview) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """Inverse of :func:`encode_array_meta`. Raises BadRequest for malformed or unsafe input."""
    np = _np()
    meta = bytes(meta)
    try:
        if meta[0] != _META_VERSION:
            raise BadRequest(f"array metadata version {meta[0]} is not {_META_VERSION}")
        n = meta[1]
        text = meta[2 : 2 + n].decode("ascii")
        ndim = meta[2 + n]
        dims = meta[3 + n :]
        if len(text) != n or len(dims) != 8 * ndim:
            raise BadRequest("array metadata has the wrong length")
        shape = struct.unpack(f"<{ndim}Q", dims)
        # Only a plain type string reaches np.dtype(): no comma lists, no dicts.
        if not (2 <= len(text) <= 16 and text[0] in "<>|=" and text[1] in _ALLOWED_KINDS):
            raise BadRequest(f"array metadata has a disallowed dtype {text!r}")
        dt = np.dtype(text)
    except (IndexError, UnicodeDecodeError, TypeError, ValueError, struct.error) as exc:
        raise BadRequest(f"malformed array metadata: {exc}") from None
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None or dt.itemsize == 0:
        raise BadRequest(f"array metadata has a disallowed dtype {text!r}")
    return dt, tuple(shape)
