"""On the real broker: a request the decide loop fails on (a bug, not bad input) is dead-lettered as
``internal_error`` with its original payload and the exception type, counted, and the loop goes on."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import orjson
import pytest

from banditroute.agents.decide import DecideLogic, StateView
from banditroute.client import build_request
from banditroute.codec import DeadLetterCounter, encode
from banditroute.config import Registry, RouterConfig
from banditroute.events import DeadLetter, RoutingRequest
from banditroute.kafka.decide_service import DecideService
from banditroute.served import Decided, Served
from tests.kafka.helpers import consume, create_topics, producer

pytestmark = pytest.mark.kafka

MODELS = "models:\n  - {name: small, cost_per_call_usd: 0.001}\n  - {name: large, cost_per_call_usd: 0.01}\n"


class FailsOnBoom(DecideLogic):
    """The production logic, with a fault injected for one task type."""

    def decide_encoded(self, request: RoutingRequest) -> tuple[Decided, Served | None]:
        if request.task_type == "boom":
            raise ZeroDivisionError("injected fault")
        return super().decide_encoded(request)


async def test_a_failing_decision_is_an_internal_error_dead_letter(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    topics = {name: f"{unique_prefix}.{name}" for name in ("requests", "decisions", "deadletter")}
    await create_topics(kafka_bootstrap, topics.values())
    (tmp_path / "models.yaml").write_text(MODELS)
    registry = Registry(RouterConfig.load(tmp_path))
    counter = DeadLetterCounter()
    service = DecideService(
        FailsOnBoom(registry, StateView(), np.random.default_rng(3)),
        bootstrap=kafka_bootstrap,
        requests_topic=topics["requests"],
        decisions_topic=topics["decisions"],
        deadletter_topic=topics["deadletter"],
        group_id=f"{unique_prefix}.decide",
        security={},
        max_payload_bytes=65536,
        dead_letters=counter,
        own_thread=False,
    )
    boom = encode(build_request("boom", request_id="r-boom"))
    chat = encode(build_request("chat", request_id="r-chat"))
    task = asyncio.create_task(service.run())
    try:
        async with producer(kafka_bootstrap) as prod:
            await prod.send_and_wait(topics["requests"], boom, key=b"r-boom")
            await prod.send_and_wait(topics["requests"], chat, key=b"r-chat")
        (letter_record,) = await consume(kafka_bootstrap, topics["deadletter"], count=1)
        (decision_record,) = await consume(kafka_bootstrap, topics["decisions"], count=1)
    finally:
        service.stop()
        await task
    letter = DeadLetter.model_validate_json(letter_record.value)
    assert letter.reason == "internal_error"
    assert "ZeroDivisionError: injected fault" in letter.error
    assert base64.b64decode(letter.original) == boom and letter.original_size == len(boom)
    assert (letter.source_topic, letter.source_offset, letter.event_type) == (
        topics["requests"],
        0,
        "RoutingRequest",
    )
    assert orjson.loads(decision_record.value)["request_id"] == "r-chat"
    assert counter.get("internal_error") == 1 and counter.total == 1
