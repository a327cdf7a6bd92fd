"""The fast murmur2 equals Kafka's (aiokafka's pure-Python reference) for every length and tail."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as reference

from banditroute.kafka.topics import VECTOR_FROM, murmur2, murmur2_many, partition_for, partitions_for


def test_murmur2_equals_the_reference() -> None:
    rng = random.Random(7)
    for length in range(0, 300):
        for _ in range(5):
            data = bytes(rng.getrandbits(8) for _ in range(length))
            assert murmur2(data) == reference(data), length
    # Kafka's documented vectors (Java client: Utils.murmur2 & 0x7fffffff)
    assert partition_for(b"21", 1 << 31) == (-973932308 & 0x7FFFFFFF)
    assert partition_for(b"foobar", 1 << 31) == (-790332482 & 0x7FFFFFFF)


def test_murmur2_many_equals_the_reference() -> None:
    """Keys hashed together (numpy, per key length) hash as Kafka's partitioner does, one by one."""
    rng = random.Random(11)
    for length in range(0, 70):
        for count in (1, VECTOR_FROM - 1, VECTOR_FROM, 57):
            keys = [bytes(rng.getrandbits(8) for _ in range(length)) for _ in range(count)]
            assert murmur2_many(keys) == [reference(k) for k in keys], (length, count)
    mixed = [bytes(rng.getrandbits(8) for _ in range(rng.choice([3, 32, 32, 36]))) for _ in range(500)]
    mixed += [b"\xff" * 32] * 20  # every bit set: the uint32 arithmetic must wrap, never widen
    assert murmur2_many(mixed) == [reference(k) for k in mixed]
    assert partitions_for(mixed, 7) == [partition_for(k, 7) for k in mixed]
    same = [bytes(rng.getrandbits(8) for _ in range(32)) for _ in range(300)] + [b"\xff" * 32] * 3
    for partitions in (1, 4, 7, 1 << 31):  # keys of one length: numpy to the end
        assert partitions_for(same, partitions) == [partition_for(k, partitions) for k in same]
    assert murmur2_many([]) == [] and partitions_for([b"21", b"foobar"], 1 << 31) == [
        -973932308 & 0x7FFFFFFF,
        -790332482 & 0x7FFFFFFF,
    ]
