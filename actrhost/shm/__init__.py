"""Shared-memory fast path: segments and single-producer/single-consumer rings.

A low-level namespace (like ``trio.lowlevel``): the runtime builds the stream and media
lanes on top of it; actors never use it directly. See docs/shm.md.
"""

from ._descriptor import DESCRIPTOR_FIXED_BYTES as DESCRIPTOR_FIXED_BYTES
from ._descriptor import Descriptor as Descriptor
from ._descriptor import decode_array_meta as decode_array_meta
from ._descriptor import encode_array_meta as encode_array_meta
from ._ring import RING_HEADER_BYTES as RING_HEADER_BYTES
from ._ring import RING_RECORD_HEADER_BYTES as RING_RECORD_HEADER_BYTES
from ._ring import RingStatistics as RingStatistics
from ._ring import RingWriterStatistics as RingWriterStatistics
from ._ring import WouldBlock as WouldBlock
from ._ring import ring_record_bytes as ring_record_bytes
from ._ring_reader import RingReader as RingReader
from ._ring_writer import RingWriter as RingWriter
from ._segment import SEGMENT_NAME_PREFIX as SEGMENT_NAME_PREFIX
from ._segment import SHM_DIR as SHM_DIR
from ._segment import Segment as Segment
from ._segment import list_prefix as list_prefix
from ._segment import node_segment_prefix as node_segment_prefix
from ._segment import segment_name as segment_name
from ._segment import unlink_prefix as unlink_prefix
from ._segment import validate_name as validate_name

__all__ = [
    "DESCRIPTOR_FIXED_BYTES",
    "RING_HEADER_BYTES",
    "RING_RECORD_HEADER_BYTES",
    "SEGMENT_NAME_PREFIX",
    "SHM_DIR",
    "Descriptor",
    "RingReader",
    "RingStatistics",
    "RingWriter",
    "RingWriterStatistics",
    "Segment",
    "WouldBlock",
    "decode_array_meta",
    "encode_array_meta",
    "list_prefix",
    "node_segment_prefix",
    "ring_record_bytes",
    "segment_name",
    "unlink_prefix",
    "validate_name",
]

# Tracebacks and reprs show the public namespace, not the private module (STYLE §1).
for _name in (
    "Descriptor",
    "RingReader",
    "RingStatistics",
    "RingWriter",
    "RingWriterStatistics",
    "Segment",
    "WouldBlock",
):
    globals()[_name].__module__ = __name__
del _name
