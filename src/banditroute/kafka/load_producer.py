"""The benchmark driver's producer: requests sent as fast as one process can (``acks=1``, no linger)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer


def load_producer(bootstrap: str) -> AIOKafkaProducer:
    """An unstarted producer for pre-filling and pacing bench requests (``await start()``, ``send()``)."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_batch_size=256 * 1024, acks=1)
