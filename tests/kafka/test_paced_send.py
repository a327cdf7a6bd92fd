"""The bench driver's paced sender on the real broker: every record once, at its key's partition, failures raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from banditroute.bench.e2e import _request, _request_parts
from banditroute.kafka.admin import ensure_topics, new_topic
from banditroute.kafka.load_producer import load_producer
from banditroute.kafka.paced_send import BATCH_BYTES, MAX_RECORD_BYTES, MAX_TRIES, PacedSender, SendFailed
from banditroute.kafka.topics import partition_for


async def _read_all(bootstrap: str, topic: str, partitions: int, n: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        for _ in range(100):
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            if len(records) >= n:
                break
        return records
    finally:
        await consumer.stop()


@pytest.mark.kafka
def test_every_record_arrives_once_at_its_keys_partition(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}.requests"

    async def run() -> tuple[PacedSender, list[Any], list[tuple[bytes, bytes]]]:
        await ensure_topics(kafka_bootstrap, None, [new_topic(topic, 4)])
        producer = load_producer(kafka_bootstrap)
        await producer.start()
        try:
            sender = PacedSender(producer, topic)
            await sender.start()
            head, tail = _request_parts("2026-12-05T00:00:00+00:00")
            sent: list[tuple[bytes, bytes]] = []
            for tick in range(40):  # ticks of 1 to 40 records, some queued while a request is in flight
                keys = [f"t-{tick}-{i}".encode() for i in range(tick + 1)]
                values = [head + k + tail for k in keys]
                sender.send_many(keys, values)
                sent.extend(zip(keys, values, strict=True))
                await asyncio.sleep(0)
            sender.send_many([], [])  # nothing to send: no request
            await sender.flush()
            return sender, await _read_all(kafka_bootstrap, topic, 4, len(sent)), sent
        finally:
            await producer.stop()

    sender, records, sent = asyncio.run(run())
    assert sorted((r.key, r.value) for r in records) == sorted(sent)
    for record in records:
        assert record.partition == partition_for(record.key, 4)
    assert 1 <= sender.requests < 40  # ticks that came while a request was in flight went out together
    assert not sender.failures
    rid = sent[0][0].decode()
    assert sent[0][1] == _request(
        rid, "2026-12-05T00:00:00+00:00"
    )  # the driver's request text, byte for byte


@pytest.mark.kafka
def test_a_refused_produce_request_is_raised_at_flush(kafka_bootstrap: str, unique_prefix: str) -> None:
    """The broker refuses a record batch above the topic's ``max.message.bytes``: the level must not count
    those requests as sent and merely slow."""
    topic = f"{unique_prefix}.small"

    async def run() -> PacedSender:
        await ensure_topics(kafka_bootstrap, None, [new_topic(topic, 1, {"max.message.bytes": "1024"})])
        producer = load_producer(kafka_bootstrap)
        await producer.start()
        try:
            sender = PacedSender(producer, topic)
            await sender.start()
            sender.send_many([b"k"], [b"x" * 4096])
            with pytest.raises(SendFailed, match="produce error code 10"):  # MESSAGE_TOO_LARGE
                await sender.flush()
            with pytest.raises(SendFailed):  # and no further sends once one failed
                sender.send_many([b"k2"], [b"y"])
            return sender
        finally:
            await producer.stop()

    sender = asyncio.run(run())
    assert len(sender.failures) == 1


class _Answer:
    """A produce response's ``topics`` field: (topic, [(partition, error_code, offset)])."""

    def __init__(self, topic: str, codes: dict[int, int]) -> None:
        self.topics = [(topic, [(p, code, 0) for p, code in codes.items()])]


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def leader_for_partition(self, tp: Any) -> int:
        return 1


class _Client:
    """What the sender uses of aiokafka's client, without a broker (the retry rules only): every request it is
    sent stays unanswered, and is recorded."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.cluster = _Cluster()
        self.sent: list[Any] = []

    def force_metadata_update(self) -> asyncio.Future[bool]:
        self.refreshes += 1
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done

    async def send(self, node: int, request: Any) -> Any:
        self.sent.append(request)
        await asyncio.Event().wait()


def _answer(sender: PacedSender, batches: dict[int, tuple[bytes, int]], codes: dict[int, int]) -> None:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(_Answer(sender.topic, codes))
    sender._in_flight.add(future)
    sender._answered(batches, future)


def test_retriable_errors_are_sent_again_first_after_a_refresh_and_others_fail() -> None:
    async def run() -> tuple[PacedSender, _Client]:
        client = _Client()
        sender = PacedSender(type("P", (), {"client": client})(), "t")
        sender._learn_leaders()
        sender._sealed.append((0, b"newer", 0))  # waits behind the retried batch of its partition
        sender.max_in_flight = 0  # the answer alone ships nothing: the retry waits for the refresh
        _answer(sender, {0: (b"a", 0), 1: (b"b", 0), 2: (b"c", 0)}, {0: 6, 1: 0, 2: 3})
        assert sorted(sender._retry) == [(0, b"a", 1), (2, b"c", 1)]
        assert sender.retried == 2 and not sender.failures and sender._refresh is not None
        assert client.refreshes == 0  # not before RETRY_S
        await sender._refresh
        assert client.refreshes == 1 and not sender._retry
        assert list(sender._sealed)[:2] == [(0, b"a", 1), (2, b"c", 1)]  # before anything newer
        sender.max_in_flight = 1
        sender._ship()
        await asyncio.sleep(0)  # the request's task starts
        (request,) = client.sent
        assert sorted(request._topics[0][1]) == [(0, b"a"), (2, b"c")]  # one batch per partition per request
        assert list(sender._sealed) == [(0, b"newer", 0)]
        _answer(sender, {0: (b"a", MAX_TRIES - 1)}, {0: 6})  # the last try: it fails for good
        assert sender.failures and "code 6" in sender.failures[-1]
        return sender, client

    sender, _ = asyncio.run(run())
    with pytest.raises(SendFailed):
        sender.send_many([b"k"], [b"v"])

    async def not_retriable() -> PacedSender:
        fresh = PacedSender(type("P", (), {"client": _Client()})(), "t")
        _answer(fresh, {0: (b"a", 0)}, {0: 10})
        return fresh

    fresh = asyncio.run(not_retriable())
    assert fresh.failures == ["t[0]: produce error code 10 (not retriable)"] and not fresh._retry


def test_a_record_too_large_for_a_batch_is_refused_at_once() -> None:
    sender = PacedSender(type("P", (), {"client": _Client()})(), "t")
    sender.partitions = 3
    with pytest.raises(SendFailed, match="does not fit"):
        sender.send_many([b"k"], [b"x" * (MAX_RECORD_BYTES + 1)])


@pytest.mark.kafka
def test_records_queued_past_one_batch_go_out_in_several(kafka_bootstrap: str, unique_prefix: str) -> None:
    """A backlog larger than one record batch (a slow answer at a high rate) is split, not refused."""
    topic = f"{unique_prefix}.backlog"
    value = b"v" * 1000

    async def run() -> tuple[PacedSender, list[Any], int]:
        await ensure_topics(kafka_bootstrap, None, [new_topic(topic, 2)])
        producer = load_producer(kafka_bootstrap)
        await producer.start()
        try:
            sender = PacedSender(producer, topic, max_in_flight=0)  # nothing goes out until flush
            await sender.start()
            n = 3 * BATCH_BYTES // len(value)
            for start in range(0, n, 500):
                keys = [f"b-{i}".encode() for i in range(start, min(n, start + 500))]
                sender.send_many(keys, [value] * len(keys))
            assert sender.requests == 0 and len(sender._sealed) >= 2
            sender.max_in_flight = 1
            await sender.flush()
            return sender, await _read_all(kafka_bootstrap, topic, 2, n), n
        finally:
            await producer.stop()

    sender, records, n = asyncio.run(run())
    assert sorted(r.key for r in records) == sorted(f"b-{i}".encode() for i in range(n))
    assert sender.requests >= 2 and not sender.failures
