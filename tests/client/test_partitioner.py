"""The fast murmur2 equals Kafka's (aiokafka's pure-Python reference) for every length and tail."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as reference

from banditroute.kafka.topics import murmur2, partition_for


def test_murmur2_equals_the_reference() -> None:
    rng = random.Random(7)
    for length in range(0, 300):
        for _ in range(5):
            data = bytes(rng.getrandbits(8) for _ in range(length))
            assert murmur2(data) == reference(data), length
    # Kafka's documented vectors (Java client: Utils.murmur2 & 0x7fffffff)
    assert partition_for(b"21", 1 << 31) == (-973932308 & 0x7FFFFFFF)
    assert partition_for(b"foobar", 1 << 31) == (-790332482 & 0x7FFFFFFF)
