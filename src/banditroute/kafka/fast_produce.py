"""Encode aiokafka's produce requests in one pass instead of its generic nested schema encoder.

aiokafka 0.14 encodes a ``ProduceRequest`` (v3 to v8: the record-batch versions) with its generic ``Schema`` /
``Array`` / ``Bytes`` encoders, which join the bytes again at every level of nesting: each record batch is
copied about five times, and the generators and ``struct`` calls cost ~20 us per request however small it is.
py-spy put that encoding at 12 % of the decide thread during a drain and 20 % of it at 1,000 requests/s
(``banditroute bench e2e``), where nearly every decision goes out in a produce request of its own.

:func:`install` gives those request classes an ``encode`` that writes the same bytes (same schema: transactional
id, acks, timeout, then per topic its name and per partition its index and record batch) with one join, so each
record batch is copied once. A unit test holds it byte for byte equal to aiokafka's encoder; every test on the
broker produces through it.
"""

from __future__ import annotations

import struct
from typing import Any

from aiokafka.protocol import produce

_I16 = struct.Struct(">h").pack
_I32 = struct.Struct(">i").pack
_ACKS_TIMEOUT = struct.Struct(">hi").pack
_PARTITION = struct.Struct(">ii").pack
_CLASSES = tuple(getattr(produce, f"ProduceRequest_v{v}") for v in range(3, 9))
_FIELDS = ("transactional_id", "required_acks", "timeout", "topics")


def _string(value: str | None) -> bytes:
    if value is None:
        return _I16(-1)
    data = str(value).encode("utf-8")
    return _I16(len(data)) + data


def encode_produce(request: Any) -> bytes:
    """The wire bytes of a v3..v8 produce request struct (what ``request.SCHEMA.encode`` returns)."""
    return b"".join(produce_parts(request))


def produce_parts(request: Any) -> list[Any]:
    """:func:`encode_produce`'s bytes as the parts it joins, in order: the record batches as they are (not
    copied), the fields between them (:mod:`~banditroute.kafka.fast_send` writes them without the join)."""
    fields = request.__dict__
    topics = fields["topics"]
    parts: list[Any] = [
        _string(fields["transactional_id"]),
        _ACKS_TIMEOUT(fields["required_acks"], fields["timeout"]),
    ]
    if topics is None:
        parts.append(_I32(-1))
        return parts
    parts.append(_I32(len(topics)))
    for topic, partitions in topics:
        parts.append(_string(topic))
        if partitions is None:
            parts.append(_I32(-1))
            continue
        parts.append(_I32(len(partitions)))
        for partition, records in partitions:
            if records is None:
                parts.append(_PARTITION(partition, -1))
            else:
                parts.append(_PARTITION(partition, len(records)))
                parts.append(records)
    return parts


def _same_schema(cls: Any) -> bool:
    """The schema :func:`encode_produce` writes (else a later aiokafka changed it: keep its encoder)."""
    try:
        topics = cls.SCHEMA.fields[3].array_of
        partitions = topics.fields[1].array_of
        return (
            tuple(cls.SCHEMA.names) == _FIELDS
            and tuple(topics.names) == ("topic", "partitions")
            and tuple(partitions.names) == ("partition", "messages")
        )
    except (AttributeError, IndexError):
        return False


def install() -> None:
    """Encode aiokafka's v3..v8 produce requests with :func:`encode_produce` (idempotent)."""
    for cls in _CLASSES:
        if _same_schema(cls):
            cls.encode = encode_produce
