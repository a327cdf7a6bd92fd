"""kafka/fast_send.py writes exactly the bytes aiokafka's own ``AIOKafkaConnection.send`` writes, in order, with
the same correlation ids and response futures, and hands the record batches of a produce request to the transport
as views of the batches themselves (no whole copy); on the wire in every test on the broker."""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import pytest
from aiokafka import conn
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.produce import ProduceRequest

from banditroute.kafka import fast_send
from banditroute.kafka.fast_produce import encode_produce, produce_parts
from banditroute.kafka.fast_produce import install as install_fast_produce

VERSIONS = {0: (0, 8), 3: (0, 9)}  # produce v8, metadata v9 (what the test broker offers)


class _Writer:
    def __init__(self) -> None:
        self.chunks: list[Any] = []

    def write(self, data: Any) -> None:
        self.chunks.append(data)

    async def drain(self) -> None:
        return None


def _connection(loop: asyncio.AbstractEventLoop) -> Any:
    connection = conn.AIOKafkaConnection.__new__(conn.AIOKafkaConnection)
    connection._writer = _Writer()
    connection._versions = VERSIONS
    connection._correlation_id = 41
    connection._client_id = "banditroute-test"
    connection._host, connection._port = "127.0.0.1", 9092
    connection._loop = loop
    connection._requests = collections.deque()
    connection._request_timeout = 30.0
    return connection


def _produce(rng: random.Random) -> ProduceRequest:
    topics = [
        (
            f"t{t}.decisions",
            [
                (p, bytearray(rng.randbytes(rng.choice([0, 50, 3000, 20_000, 200_000]))))
                for p in range(rng.randint(1, 4))
            ],
        )
        for t in range(rng.randint(1, 2))
    ]
    return ProduceRequest(rng.choice([None, "txn-1"]), -1, 30_000, topics)


def _sent(send: Any, request: Any, expect_response: bool = True) -> tuple[bytes, list[Any], Any]:
    async def run() -> tuple[bytes, list[Any], Any]:
        connection = _connection(asyncio.get_running_loop())
        waiter = send(connection, request, expect_response)
        chunks = connection._writer.chunks
        queued = [(cid, type(struct).__name__) for cid, struct, _fut in connection._requests]
        if asyncio.iscoroutine(waiter):
            waiter.close()
        return b"".join(bytes(c) for c in chunks), chunks, (connection._correlation_id, queued)

    return asyncio.run(run())


def test_the_same_bytes_ids_and_futures_as_aiokafka() -> None:
    install_fast_produce()
    rng = random.Random(19)
    requests = [_produce(rng) for _ in range(40)] + [MetadataRequest(["a", "b"]), MetadataRequest(None)]
    for request in requests:
        for expect_response in (True, False):
            ours, _chunks, state = _sent(fast_send._send, request, expect_response)
            theirs, _their_chunks, their_state = _sent(fast_send._THEIRS, request, expect_response)
            assert ours == theirs
            assert state == their_state


def test_record_batches_are_written_as_views_of_themselves() -> None:
    install_fast_produce()
    big, small = bytearray(random.Random(1).randbytes(300_000)), bytearray(b"x" * 100)
    request = ProduceRequest(None, -1, 30_000, [("t.decisions", [(0, big), (1, small), (2, big)])])
    _wire, chunks, _state = _sent(fast_send._send, request)
    views = [c for c in chunks if isinstance(c, memoryview)]
    assert [v.obj for v in views] == [big, big] and all(v.obj is big for v in views)
    # the small batch and the fields around it travel joined, in order
    assert len(chunks) == 4 and isinstance(chunks[2], bytes) and bytes(small) in chunks[2]


def test_chunks_concatenate_to_size_head_and_parts() -> None:
    rng = random.Random(7)
    for _ in range(200):
        head = rng.randbytes(rng.randint(0, 40))
        parts = [
            rng.randbytes(rng.choice([0, 3, 100, fast_send.LARGE - 1, fast_send.LARGE])) for _ in range(5)
        ]
        body = head + b"".join(parts)
        chunks = fast_send.chunks(head, parts)
        assert b"".join(bytes(c) for c in chunks) == len(body).to_bytes(4, "big") + body
        views = [c.obj for c in chunks if isinstance(c, memoryview)]
        assert views == [p for p in parts if len(p) >= fast_send.LARGE]
        assert all(
            a is b for a, b in zip(views, [p for p in parts if len(p) >= fast_send.LARGE], strict=True)
        )


def test_produce_parts_are_the_encoding_with_batches_uncopied() -> None:
    rng = random.Random(3)
    for _ in range(50):
        struct = _produce(rng).prepare(VERSIONS)
        parts = produce_parts(struct)
        assert b"".join(parts) == encode_produce(struct)
        batches = [records for _topic, partitions in struct.topics for _p, records in partitions]
        assert all(any(part is batch for part in parts) for batch in batches)


def test_install_leaves_another_release_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conn.AIOKafkaConnection, "send", fast_send._THEIRS)
    assert not fast_send.install("0.14.1") and not fast_send.installed()
    assert not fast_send.install(python=(3, 12)) and not fast_send.installed()
    assert fast_send.install() and fast_send.install() and fast_send.installed()


def test_a_response_is_awaited_with_one_timer_and_times_out_as_aiokafkas() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        # answered in time: its result, and no timer left behind
        fut: asyncio.Future[Any] = loop.create_future()
        loop.call_later(0.01, fut.set_result, "response")
        scheduled = len(loop._scheduled)  # type: ignore[attr-defined]
        assert await fast_send.response(loop, fut, 5.0) == "response"
        assert sum(not h.cancelled() for h in loop._scheduled) <= scheduled - 1  # type: ignore[attr-defined]
        # not answered in time: asyncio.TimeoutError (what AIOKafkaClient.send catches), the future cancelled
        late: asyncio.Future[Any] = loop.create_future()
        with pytest.raises(asyncio.TimeoutError):
            await fast_send.response(loop, late, 0.02)
        assert late.cancelled()
        # a failed response: its error; no timeout
        failed: asyncio.Future[Any] = loop.create_future()
        failed.set_exception(ConnectionError("gone"))
        with pytest.raises(ConnectionError):
            await fast_send.response(loop, failed, 5.0)
        # the caller cancelled: CancelledError, not a timeout, and the future cancelled with it
        waiting: asyncio.Future[Any] = loop.create_future()
        task = asyncio.ensure_future(fast_send.response(loop, waiting, 5.0))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert waiting.cancelled()
        # no timeout: waits as long as it takes
        slow: asyncio.Future[Any] = loop.create_future()
        loop.call_later(0.05, slow.set_result, 1)
        assert await fast_send.response(loop, slow, None) == 1

    asyncio.run(run())


def test_a_request_waits_without_looking_up_the_running_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    looks = 0
    plain = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        nonlocal looks
        looks += 1
        return plain()

    async def run() -> None:
        connection = _connection(asyncio.get_running_loop())
        monkeypatch.setattr(asyncio, "get_running_loop", counted)
        waiter = fast_send._send(connection, MetadataRequest(["a"]))
        _cid, _struct, fut = connection._requests[0]
        fut.set_result("metadata")
        assert await waiter == "metadata"

    asyncio.run(run())
    assert looks == 0


@pytest.mark.parametrize("waiter", ["fast_send", "aiokafka"])
def test_a_caller_cancelled_as_the_timer_fires_is_cancelled_not_timed_out(waiter: str) -> None:
    """The timer and a cancellation of the caller in the same turn of the loop (the response future cancelled by
    the timer, then the task cancelled before it resumes): the caller's cancellation wins, as under aiokafka's
    ``wait_for`` (``asyncio.Timeout`` on 3.11 counts the cancellations); a timeout instead would swallow it, and
    ``AIOKafkaClient.send`` turns a timeout into ``RequestTimedOutError``, which its callers retry."""
    from aiokafka.util import wait_for

    async def run() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        task: asyncio.Task[Any] | None = None

        def cancel_caller(_fut: Any) -> None:  # added to fut before the task awaits it: runs before it wakes
            assert task is not None
            task.cancel()

        fut.add_done_callback(cancel_caller)
        waiting = fast_send.response(loop, fut, 0.01) if waiter == "fast_send" else wait_for(fut, 0.01)
        task = asyncio.ensure_future(waiting)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(run())
