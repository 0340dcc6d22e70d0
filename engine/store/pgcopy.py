"""Postgres binary COPY format: fields and the stream around them.

The fan-out writes its runs and tasks as binary COPY data built in Python (``engine.store.fanout``).
Most columns of those rows are the same for a whole batch (workflow, stage, trigger, times), so
they are encoded once per batch and each row costs a few byte joins: cheaper than the driver's
per-value codecs, and done in the job's own thread while the previous batch is written.

Format (Postgres docs, "COPY", "Binary Format"): a signature and two 32-bit header fields, then
per row a 16-bit field count and per field a 32-bit length (-1 for NULL) and the value's binary
send form, then a 16-bit -1.
"""

from __future__ import annotations

import datetime as dt
import struct

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)
NULL = struct.pack("!i", -1)

_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_LEN = struct.Struct("!i")
_INT4 = struct.Struct("!ii")
_INT8 = struct.Struct("!iq")


def row_start(n_fields: int) -> bytes:
    """The start of a row of ``n_fields`` fields."""
    return struct.pack("!h", n_fields)


def text(value: str | None) -> bytes:
    """A text field (or NULL)."""
    if value is None:
        return NULL
    data = value.encode()
    return _LEN.pack(len(data)) + data


def int4(value: int) -> bytes:
    """An integer field."""
    return _INT4.pack(4, value)


def timestamptz(value: dt.datetime) -> bytes:
    """A timestamptz field: microseconds since 2000-01-01 UTC."""
    delta = value - _EPOCH
    return _INT8.pack(8, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def jsonb(raw: str | None) -> bytes:
    """A jsonb field from JSON text (version byte 1, then the text)."""
    if raw is None:
        return NULL
    data = raw.encode()
    return _LEN.pack(len(data) + 1) + b"\x01" + data


def uuid(value: bytes) -> bytes:
    """A uuid field from its 16 bytes."""
    return b"\x00\x00\x00\x10" + value
