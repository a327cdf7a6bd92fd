"""The foundation works on the real broker: plain aiokafka, and a faust agent with a changelogged table."""

from __future__ import annotations

import faust
import pytest

from tests.kafka.helpers import consume, create_topics, producer, run_faust_app, wait_for

pytestmark = pytest.mark.kafka


async def test_aiokafka_round_trip(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}.roundtrip"
    await create_topics(kafka_bootstrap, [topic])
    async with producer(kafka_bootstrap) as prod:
        for i in range(10):
            await prod.send_and_wait(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    records = await consume(kafka_bootstrap, topic, count=10)
    assert [r.value for r in records] == [f"v{i}".encode() for i in range(10)]
    assert [r.key for r in records] == [f"k{i}".encode() for i in range(10)]


async def test_faust_agent_with_changelogged_table(kafka_bootstrap: str, unique_prefix: str) -> None:
    app = faust.App(
        unique_prefix,
        broker=f"kafka://{kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
    )
    words = app.topic(f"{unique_prefix}.words", key_type=str, value_type=str, partitions=1)
    word_to_count = app.Table("word_to_count", default=int, partitions=1)

    @app.agent(words)
    async def count_words(stream: faust.StreamT[str]) -> None:
        async for word in stream:
            word_to_count[word] += 1

    await create_topics(kafka_bootstrap, [words.get_topic_name()])
    sent = ["a", "b", "a", "c", "a", "b"]
    async with run_faust_app(app):
        for w in sent:
            await words.send(key=w, value=w)
        assert await wait_for(lambda: sum(word_to_count.values()) == len(sent), timeout_s=90)
        assert dict(word_to_count.items()) == {"a": 3, "b": 2, "c": 1}
        changelog = word_to_count.changelog_topic.get_topic_name()
    # The table's changelog is a real compacted topic on the broker holding the latest counts.
    records = await consume(kafka_bootstrap, changelog, count=len(sent))
    assert len(records) == len(sent)
    assert records[-1].key is not None
