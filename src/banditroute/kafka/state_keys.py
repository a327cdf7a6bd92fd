"""The key codec of the state topic as faust reads it when it recovers the learner's table (and of the join
tables' changelogs, whose keys are request ids, JSON strings too).

Keys are JSON strings (the state key). A record that something other than a learner wrote there may have a key
that is not JSON, not UTF-8, or JSON but not a string: faust's JSON codec raised on it, or the table could not
hold it (a dict is not hashable), and faust's table recovery retried the same failure forever, so the worker
never became ready and decided nothing. This codec reads such a key as a string no state key can be (it begins
with a NUL character); the table holds it, and its value, without anyone asking for them.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from banditroute.kafka.state_reader import state_key_of

STATE_KEY_CODEC = "banditroute_state_key"
UNREADABLE = "\x00unreadable key "
"""The beginning of the key a record with an unreadable key is held under (then its bytes in hex)."""


class StateKeyCodec(codecs.Codec):
    """JSON for every key a learner writes; any other key is read as ``UNREADABLE`` + its bytes in hex."""

    def _loads(self, s: bytes) -> Any:
        key = state_key_of(s)  # as every state reader reads it
        return key if key is not None else UNREADABLE + bytes(s).hex()

    def _dumps(self, s: Any) -> bytes:
        return orjson.dumps(s)


def install() -> None:
    """Register the codec with faust (the worker's state topic names it as its key serializer)."""
    codecs.register(STATE_KEY_CODEC, StateKeyCodec())


__all__ = ["STATE_KEY_CODEC", "UNREADABLE", "StateKeyCodec", "install"]
