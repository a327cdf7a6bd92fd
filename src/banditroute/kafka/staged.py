"""A faust table view whose changelog writes are staged and then sent and awaited together.

faust writes a table's changelog through a background buffer, so a message sent right after a table write can
reach Kafka before the write does. The join must never let a joined outcome become durable while the record
that says "this request is joined" is not: after a crash the feedback would be replayed, find no trace of the
join, and be learnt a second time. Writing through this view, flushing it into an outbox and waiting for
the acknowledgements before publishing the outcomes gives that order.
"""

from __future__ import annotations

from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Container,
    Iterable,
    Iterator,
    MutableMapping,
    Sequence,
)
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

    def contains(self) -> Callable[[object], bool]:
        """``key in self`` as one callable, as direct as the store allows (faust's memory store keeps a plain
        dict behind two Python calls). Take it again for every batch: recovery may replace the store."""
        data = self.table.data
        inner = getattr(data, "data", None)
        return inner.__contains__ if type(inner) is dict else data.__contains__

    def disjoint(self) -> Callable[[Collection[str]], bool]:
        """None of ``keys`` in the table as one callable: the store's dict's key view's ``isdisjoint`` where
        it has one (see :meth:`contains`; take it again for every batch), else one lookup per key."""
        data = self.table.data
        inner = getattr(data, "data", None)
        if type(inner) is dict:
            return inner.keys().isdisjoint
        contains = data.__contains__
        return lambda keys: not any(map(contains, keys))

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

    async def flush(
        self, send: Callable[..., Awaitable[None]], held: Container[int] | None = None
    ) -> list[str]:
        """Hand every staged write (a tombstone for a deletion) to ``send(topic, key, value, partition)`` and
        return their keys; the caller then waits for the acknowledgements (see
        :class:`~banditroute.kafka.outbox.Outbox`) and, should that fail, gives the keys to :meth:`restage`.
        With ``held``, only the writes in those partitions: the others stay staged (a rebalance took their
        partitions, perhaps to another worker, which writes there now; see :meth:`drop_outside`)."""
        if not self.staged:
            return []
        from faust.serializers import codecs

        topic = self.table.changelog_topic.get_topic_name()
        serializer = self.table.key_serializer or "json"
        dumps = orjson.dumps if serializer == "json" else partial(codecs.dumps, serializer)  # the same JSON
        keys = list(self.staged)
        partitions = self._partitions(keys)
        staged, kept = self.staged, {}
        sent = keys if held is None else []
        for key, partition in zip(keys, partitions, strict=True):
            if held is not None:
                if partition not in held:
                    kept[key] = staged[key]
                    continue
                sent.append(key)
            await send(topic, dumps(key), staged[key], partition)
        self.staged = kept
        return sent

    def drop_outside(self, owned: Container[int]) -> tuple[int, list[str]]:
        """Let go of the keys outside the partitions ``owned`` (the assignment after a rebalance): their staged
        writes, and their entries in the local store. Whoever owns their partitions reads the inputs again from
        the committed offsets, which never pass an unacknowledged write, and writes them itself; and should a
        partition come back here, faust recovers it from its changelog (a partition not kept through a
        rebalance is read again from the start). faust's memory store drops only the entries it recovered
        itself (``on_recovery_completed``), not those written here: they stayed until a restart. Returns how
        many staged writes were dropped and the keys whose entries were."""
        data = self.table.data
        outside = self._outside(list(self.staged), owned)
        for key in outside:
            del self.staged[key]
        # faust's memory store knows the partition of each entry it recovered (an unreadable key's among them);
        # it forgets none deleted since (a deletion here goes to the store's dict): those are forgotten here
        recovered: dict[Any, int] = getattr(data, "_key_partition", None) or {}
        written = [key for key in data.keys() if key not in recovered]
        entries = [key for key, partition in recovered.items() if partition not in owned and key in data]
        entries += self._outside(written, owned)
        for key in entries:
            del data[key]
        for key in [key for key in recovered if key not in data]:
            del recovered[key]
        return len(outside), entries

    def drop_replaced(self) -> list[str]:
        """Let go of the staged writes whose key the local store no longer holds as staged: replaced (or gone)
        by something other than this view, i.e. faust's recovery reading the changelog on, over writes staged
        before it (e.g. a worker stalled past its session timeout, given its partition back without seeing it
        move: the records its interim owner wrote meanwhile). Returns their keys. Only for a table whose inputs
        are read again until its staged writes are acknowledged (the learner's; the join's, called once faust's
        recovery is done): they are made again from what the store holds, instead of a staged write replacing newer
        records on the changelog."""
        data = self.table.data
        replaced = [key for key, value in self.staged.items() if data.get(key) is not value]
        for key in replaced:
            del self.staged[key]
        return replaced

    def _outside(self, keys: list[str], owned: Container[int]) -> list[str]:
        """Those of ``keys`` whose changelog partition is not in ``owned``."""
        if not keys:
            return []
        return [
            key for key, partition in zip(keys, self._partitions(keys), strict=True) if partition not in owned
        ]

    def _partitions(self, keys: list[str]) -> list[int]:
        """The changelog partition of each of ``keys``, hashed together where the table can."""
        if self.partitions_of is not None:
            return self.partitions_of(keys)
        return [self.partition_of(key) for key in keys]

    def restage(self, keys: Iterable[str]) -> None:
        """Stage again the writes of ``keys`` whose acknowledgement failed, with each key's current value (a
        tombstone if it is gone), so the next :meth:`flush` sends them: the local store is already ahead of the
        changelog, and a reader restarted in the same process would otherwise commit past them (its in-memory
        state says they were handled) and a later recovery would rebuild the table without them."""
        data = self.table.data
        for key in keys:
            if key not in self.staged:
                self.staged[key] = data[key] if key in data else None


async def flush_acknowledged(
    views: Sequence[StagedTable],
    send: Callable[..., Awaitable[None]],
    drain: Callable[[], Awaitable[Any]],
    held: Container[int] | None = None,
) -> None:
    """Flush ``views`` in order (their writes in partitions ``held``, see :meth:`StagedTable.flush`) into an outbox
    (``send``) and wait until it is acknowledged (``drain``), one view after the other: a view's writes are sent
    only once the earlier views' are acknowledged, since a later view's write may undo what only an earlier one's
    makes good (the join's: the removal of parked feedback from the early-feedback table must not reach its
    changelog before the entry that joined it reaches the join table's; before 2026-12-03, with the join table's
    changelog refusing, it did, and a new owner recovering both found neither: the feedback, committed past, was
    never joined again). If a flush or its acknowledgement fails, that view's writes handed over are staged again
    (:meth:`StagedTable.restage`), the later views' stay staged, and the error goes on."""
    for view in views:
        keys: list[str] = []
        try:
            keys = await view.flush(send, held)
            await drain()
        except BaseException:
            view.restage(keys)
            raise
