"""The decide loop's spill topic: requests of new or capped task types read while the priority lane is full.

Without it, a full lane (:mod:`banditroute.kafka.low_lane`) stops the decide loop from reading, and a request
of an established task type behind a flood of new ones waits until the flood is decided. With it, the loop reads
on: a request whose task type is not established (read from its JSON alone, ~1 µs, no validation) is copied as
is, key and value, to the same partition of ``<prefix>.requests-low`` (about 10 µs against 60-90 µs to
validate and decide it), and the requests offset is committed only once that copy is acknowledged (with the
decisions of the same poll). The loop decides ``SPILL_SHARE`` of the spill topic's requests, oldest first, in
every step whatever else waits, so that sustained traffic of new task types (which keeps the lane from
emptying) cannot hold them back until the topic's retention deletes them; and more, ``SPILL_CHUNK`` at a time
within the step's slice for low-priority work (``LOW_SLICE_S`` in the decide loop), once the lane is empty,
reading keeps up (the main poll not full, nothing spilled by it) and the producer is idle. The loop reads the
spill topic on a consumer of its own (same group): on the requests' consumer its unread records, taken 10 a
step, held back every fetch of the requests partitions for aiokafka's 100 ms prefetch backoff (issue #18).

Guarantees (see docs/guarantees.md): a request is never lost: its requests offset passes it only once the copy
is acknowledged, and the spill topic's offset passes a copy only once its decision (or dead letter) is. A crash
between the copy's acknowledgement and the commit copies it again: the second copy is dead-lettered as
``duplicate_id`` when it is decided within the duplicate window of the first, else decided again (a repeated
decision, as after any crash between publish and commit; the join keeps the first). Validation happens when a
copy is decided, so a malformed request that was spilled is dead-lettered with the spill topic's partition and
offset. Requests of new task types are then decided out of their read order (the lane's and the spill topic's in
turn).
"""

from __future__ import annotations

from banditroute.kafka.fast_request import json_object

SPILL_SUFFIX = "requests-low"
LANE_WITH_SPILL = (2_000, 1024 * 1024)
"""The priority lane's bounds (requests, payload bytes) when a spill topic takes its overflow: parked requests
cost ~1.5 KB of memory each, spilled ones nothing, and past 2,000 waiting requests parking buys no latency."""
SPILL_SHARE = 10
"""Spilled requests decided in every step of the decide loop, oldest first, whatever else waits: their
guaranteed share (a few hundred a second at least under a flood, ~1 ms of deciding per step)."""
SPILL_CHUNK = 50
"""Spilled requests taken at a time within a step's slice for low-priority work."""


def task_type_of(raw: bytes | None, max_bytes: int) -> str | None:
    """The ``task_type`` string of a JSON request, unvalidated; None when ``raw`` is too large, not a JSON
    object, or has no string ``task_type`` (such a request takes the full path and its dead letter there)."""
    obj = json_object(raw, max_bytes)
    task_type = None if obj is None else obj.get("task_type")
    return task_type if type(task_type) is str else None


__all__ = ["LANE_WITH_SPILL", "SPILL_CHUNK", "SPILL_SHARE", "SPILL_SUFFIX", "task_type_of"]
