"""The Kafka client errors that code above ``kafka/`` may catch, so that it need not import aiokafka."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError, KafkaError

__all__ = ["KafkaConnectionError", "KafkaError"]
