"""A client that cannot reach Kafka says why once (no broker: a port nothing listens on)."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError

from banditroute import RouterClient
from banditroute.kafka.local import free_port


async def test_a_client_that_cannot_connect_names_the_error_once() -> None:
    client = RouterClient(bootstrap=f"127.0.0.1:{free_port()}", start_timeout_s=3.0)
    await client.start()
    try:
        assert client.degraded is not None
        assert client.degraded.count("KafkaConnectionError") == 1, client.degraded  # before review21: twice
    finally:
        await client.close()


def test_error_text_names_the_type_once() -> None:
    from banditroute.router_client import error_text  # here: the test above runs on code without it

    assert (
        error_text(KafkaConnectionError("Unable to bootstrap")) == "KafkaConnectionError: Unable to bootstrap"
    )
    assert error_text(ValueError("bad")) == "ValueError: bad"
    assert error_text(TimeoutError()) == "TimeoutError"
