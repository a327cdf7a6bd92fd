"""A faust table view whose changelog writes are staged and then sent and awaited together.

faust writes a table's changelog through a background buffer, so a message sent right after a table write can
reach Kafka before the write does. The join must never let a joined outcome become durable while the record
that says "this request is joined" is not: after a crash the feedback would be replayed, find no trace of the
join, and be learnt a second time. Writing through this view, flushing it into an outbox and waiting for
the acknowledgements before publishing the outcomes gives that order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from functools import partial
from typing import Any

import orjson


class StagedTable(MutableMapping[str, bytes]):
    """Reads and writes the table's local store; :meth:`flush` sends the staged changelog records."""

    def __init__(
        self,
        table: Any,
        partition_of: Callable[[str], int],
        partitions_of: Callable[[list[str]], list[int]] | None = None,
    ) -> None:
        self.table = table
        self.partition_of = partition_of
        self.partitions_of = partitions_of
        """Optional: ``partition_of`` of many keys at once (hashed together: a flush writes thousands)."""
        self.staged: dict[str, bytes | None] = {}

    def __getitem__(self, key: str) -> bytes:
        value: bytes = self.table.data[key]
        return value

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table.data[key] = value
        self.staged[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        data = self.table.data
        return data[key] if key in data else default  # no KeyError raised and caught per miss

    def pop(self, key: str, default: Any = None) -> Any:
        data = self.table.data
        if key not in data:
            return default  # the common case (no feedback parked): no KeyError raised and caught
        value = data[key]
        del self[key]
        return value

    def __delitem__(self, key: str) -> None:
        del self.table.data[key]
        self.staged[key] = None

    def __contains__(self, key: object) -> bool:
        return key in self.table.data

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.table.data.keys()))

    def __len__(self) -> int:
        return len(self.table.data)

    async def flush(self, send: Callable[..., Awaitable[None]]) -> int:
        """Hand every staged write (a tombstone for a deletion) to ``send(topic, key, value, partition)``;
        the caller then waits for the acknowledgements (see :class:`~banditroute.kafka.outbox.Outbox`)."""
        if not self.staged:
            return 0
        from faust.serializers import codecs

        topic = self.table.changelog_topic.get_topic_name()
        serializer = self.table.key_serializer or "json"
        dumps = orjson.dumps if serializer == "json" else partial(codecs.dumps, serializer)  # the same JSON
        keys = list(self.staged)
        if self.partitions_of is not None:
            partitions = self.partitions_of(keys)
        else:
            partitions = [self.partition_of(key) for key in keys]
        for key, partition in zip(keys, partitions, strict=True):
            await send(topic, dumps(key), self.staged[key], partition)
        n = len(self.staged)
        self.staged = {}
        return n
