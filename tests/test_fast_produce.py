"""kafka/fast_produce.py writes exactly the bytes aiokafka's own schema encoder writes, for every produce request
version it replaces (random requests, fixed seed)."""

from __future__ import annotations

import random

import pytest
from aiokafka.protocol import produce

from banditroute.kafka.fast_produce import _CLASSES, encode_produce, install


def _request(rng: random.Random, cls: type) -> object:
    topics = [
        (
            rng.choice(["t.decisions", "t.replies-ü", "x" * rng.randint(1, 200)]),
            [
                (
                    rng.randint(0, 2**31 - 1),
                    rng.choice(
                        [None, b"", rng.randbytes(rng.randint(1, 3000)), bytearray(rng.randbytes(40))]
                    ),
                )
                for _ in range(rng.randint(0, 4))
            ],
        )
        for _ in range(rng.randint(0, 3))
    ]
    return cls(rng.choice([None, "", "txn-1"]), rng.choice([-1, 0, 1]), rng.randint(0, 2**31 - 1), topics)


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_same_bytes_as_aiokafka(cls: type) -> None:
    rng = random.Random(16)
    for _ in range(300):
        request = _request(rng, cls)
        assert encode_produce(request) == cls.SCHEMA.encode([request.__dict__[n] for n in cls.SCHEMA.names])


def test_install_replaces_encode_of_the_record_batch_versions_only() -> None:
    install()
    install()  # idempotent
    assert all(cls.encode is encode_produce for cls in _CLASSES)
    assert produce.ProduceRequest_v2.encode is not encode_produce
