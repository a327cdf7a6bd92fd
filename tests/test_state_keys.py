"""The state topic's key codec (kafka/state_keys.py) reads and writes every key a learner writes byte for byte
as faust's ``json`` codec did before it (earlier releases), and as every other reader and writer of the topic
does: the state reader, ``banditroute state forget``'s tombstones and the outcomes' keys (orjson)."""

from __future__ import annotations

import orjson
import pytest
from faust.serializers import codecs

from banditroute.kafka.state_keys import UNREADABLE, StateKeyCodec
from banditroute.kafka.state_reader import state_key_of

KEYS = ["chat", "acme|chat", "café|résumé", 'a"b\\c', "日本語|code", "tab\tnl\n", "x" * 128, ""]


@pytest.mark.parametrize("key", KEYS)
def test_keys_a_learner_writes_read_and_write_as_before(key: str) -> None:
    codec, before = StateKeyCodec(), codecs.get_codec("json")
    written = before.dumps(key)  # what faust's json codec (earlier releases' table) wrote
    assert codec.dumps(key) == written == orjson.dumps(key)  # the learner's StagedTable and `state forget`
    assert codec.loads(written) == before.loads(written) == state_key_of(written) == key


@pytest.mark.parametrize("raw", [b"123", b'{"a": 1}', b"null", b"\xff", b"chat", b'"chat'])
def test_other_keys_are_read_as_no_task_type_by_the_table_and_every_reader(raw: bytes) -> None:
    assert StateKeyCodec().loads(raw) == UNREADABLE + raw.hex()
    assert state_key_of(raw) is None
