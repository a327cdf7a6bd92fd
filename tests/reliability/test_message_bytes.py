"""A broker whose default ``message.max.bytes`` is below the worker's 512 KiB record batches: the topics the worker
creates itself take that default, and would refuse its sends at the first full batch. The worker refuses to
start instead, naming the topics, as it does for topics made beforehand (``tests/kafka/test_worker_start.py``).

A dedicated broker: its default (broker 1's dynamic config) is lowered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from banditroute.app import Router
from banditroute.kafka.admin import TopicLayoutError, admin_client
from banditroute.kafka.local import LocalKafka
from banditroute.settings import Settings
from tests.kafka.router_world import write_config
from tests.reliability.support import wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

LOW = 100_000


async def test_topics_the_worker_creates_with_a_lower_broker_default_stop_it_at_start(
    own_broker: LocalKafka, unique_prefix: str, tmp_path: Path
) -> None:
    async with admin_client(own_broker.bootstrap) as admin:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.BROKER, "1", {"message.max.bytes": str(LOW)})]
        )

        async def applied() -> bool:
            (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
            entries = response.resources[0][4]
            return any(e[0] == "message.max.bytes" and e[1] == str(LOW) for e in entries)

        assert await wait_until(applied, 30), "the broker did not take the lower default"
    settings = Settings().model_copy(
        update={
            "kafka_bootstrap": own_broker.bootstrap,
            "topic_prefix": unique_prefix,
            "app_id": unique_prefix,
            "config_dir": write_config(tmp_path / "config"),
            "data_dir": tmp_path / "data",
        }
    )
    router = Router(settings)
    with pytest.raises(TopicLayoutError) as refused:
        await router.ensure_topics()  # none of the topics exists yet: the worker creates them
    for suffix in ("decisions", "state", "outcomes", "deadletter"):
        assert f"'{unique_prefix}.{suffix}' ({LOW})" in str(refused.value)
