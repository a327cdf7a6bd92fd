"""On the real broker: a faust agent using the decode layer dead-letters every malformed message with its
reason, passes every valid one through, and the counts reconcile exactly."""

from __future__ import annotations

from collections import Counter

import faust
import pytest

from banditroute.codec import DeadLetterCounter, DecodeError, decode, decode_record, encode
from banditroute.events import DeadLetter, DeadLetterReason
from tests.contracts.catalogue import INPUT_EVENTS, event_type, interleaved, make_checks
from tests.kafka.helpers import consume, create_topics, producer, run_faust_app, wait_for

pytestmark = pytest.mark.kafka


async def test_malformed_inputs_land_on_dead_letter_topic(kafka_bootstrap: str, unique_prefix: str) -> None:
    stream = interleaved()
    in_topics = {name: f"{unique_prefix}.in.{name}" for name in INPUT_EVENTS}
    out_name, dlq_name = f"{unique_prefix}.out", f"{unique_prefix}.deadletter"
    await create_topics(kafka_bootstrap, [*in_topics.values(), out_name, dlq_name])

    app = faust.App(
        unique_prefix,
        broker=f"kafka://{kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=2_000_000,
    )
    out = app.topic(out_name, key_serializer="raw", value_serializer="raw", partitions=1)
    dlq = app.topic(dlq_name, key_serializer="raw", value_serializer="raw", partitions=1)
    counter = DeadLetterCounter()
    passed = Counter[str]()
    checks = make_checks()

    def make_agent(name: str) -> None:
        source = app.topic(in_topics[name], key_serializer="raw", value_serializer="raw", partitions=1)
        kind, event_checks = event_type(name), checks[name]

        async def route(events: faust.StreamT[bytes]) -> None:
            async for event in events.events():
                msg = event.message
                result = decode_record(
                    kind,
                    msg.value,
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    checks=event_checks,
                )
                if isinstance(result, DeadLetter):
                    await dlq.send(key=msg.topic.encode(), value=encode(result))
                    counter.record(result.reason)
                else:
                    await out.send(key=name.encode(), value=encode(result))
                    passed[name] += 1

        app.agent(source, name=f"decode-{name}")(route)

    for name in INPUT_EVENTS:
        make_agent(name)

    sent: dict[tuple[str, int], DeadLetterReason | None] = {}
    async with producer(kafka_bootstrap, max_request_size=2_000_000) as prod:
        for case in stream:
            meta = await prod.send_and_wait(in_topics[case.event], key=case.name.encode(), value=case.raw)
            sent[(meta.topic, meta.offset)] = case.reason

    n_bad = sum(r is not None for r in sent.values())
    n_good = len(sent) - n_bad
    assert n_bad >= 30
    async with run_faust_app(app):
        assert await wait_for(lambda: counter.total + sum(passed.values()) >= len(sent), timeout_s=45), (
            counter.nonzero(),
            passed,
        )

    expected = Counter(r.value for r in sent.values() if r is not None)
    assert counter.nonzero() == dict(expected)

    dead = await consume(kafka_bootstrap, dlq_name, count=n_bad, timeout_s=30)
    assert len(dead) == n_bad
    seen: set[tuple[str, int]] = set()
    for record in dead:
        letter = decode(DeadLetter, record.value)
        assert not isinstance(letter, DecodeError), letter
        where = (letter.source_topic, letter.source_offset)
        assert record.key == letter.source_topic.encode()
        assert sent[where] == letter.reason, (where, letter.error)
        assert letter.error
        seen.add(where)
    assert len(seen) == n_bad  # each bad message exactly once
    assert Counter(sent[w].value for w in seen if sent[w] is not None) == expected

    good = await consume(kafka_bootstrap, out_name, count=n_good, timeout_s=30)
    assert len(good) == n_good
    assert Counter(r.key.decode() for r in good) == Counter(
        name
        for (topic, _), reason in sent.items()
        if reason is None
        for name in INPUT_EVENTS
        if in_topics[name] == topic
    )
    for record in good:
        decoded = decode(event_type(record.key.decode()), record.value)
        assert not isinstance(decoded, DecodeError), decoded
