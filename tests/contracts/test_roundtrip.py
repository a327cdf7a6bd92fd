"""Every event survives encode -> decode unchanged through the codec."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditroute.codec import DecodeError, decode, encode
from banditroute.events import EVENT_TYPES
from tests.contracts.strategies import EVENT_STRATEGIES

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
@FAST
@given(data=st.data())
def test_encode_decode_round_trip(name: str, data: Any) -> None:
    event = data.draw(EVENT_STRATEGIES[name])
    raw = encode(event)
    back = decode(EVENT_TYPES[name], raw)
    assert not isinstance(back, DecodeError), back
    assert back == event
    assert encode(back) == raw  # deterministic bytes
    doc = orjson.loads(raw)
    assert doc["schema_version"] == 1
    for key, value in doc.items():
        if key.endswith("_at"):
            assert value.endswith("Z"), (key, value)
