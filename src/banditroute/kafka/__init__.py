"""A real Apache Kafka broker (KRaft, single node) for development and tests, fetched with Maven."""

from banditroute.kafka.local import BrokerError, BrokerStatus, LocalKafka

__all__ = ["BrokerError", "BrokerStatus", "LocalKafka"]
