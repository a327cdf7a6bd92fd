"""A local-mode client in its own process, for the kill test: route, send feedback, publish, report, wait.

``python -m tests.kafka.local_client_proc BOOTSTRAP PREFIX CONFIG_DIR COUNT SEED`` routes COUNT requests of
task type ``chat`` in local mode, answers each with simulated feedback (``router_world.TRUTH``), waits until
the decisions and the feedback are on the broker, prints one JSON line and then sleeps until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import orjson

from banditroute.client import RouterClient
from banditroute.settings import Settings
from tests.kafka.router_world import TRUTH


async def main(bootstrap: str, prefix: str, config_dir: str, count: int, seed: int) -> None:
    settings = Settings.model_validate(
        {
            "kafka_bootstrap": bootstrap,
            "topic_prefix": prefix,
            "config_dir": config_dir,
            "partitions": 4,
            "state_partitions": 2,
        }
    )
    rng = np.random.default_rng(seed)
    async with RouterClient(
        settings, mode="local", local_fallback="default", seed=seed, start_timeout_s=30.0
    ) as client:
        local = 0
        for _ in range(count):
            decision = await client.route("chat")
            assert decision.model is not None
            local += decision.worker_id == client.client_id
            quality_p, cost = TRUTH[decision.model]
            await client.feedback(
                request_id=decision.request_id,
                model=decision.model,
                quality=float(rng.random() < quality_p),
                cost_usd=cost,
                latency_ms=100.0,
            )
        await client.flush()
        print(orjson.dumps({"client_id": client.client_id, "local": local}).decode(), flush=True)
        await asyncio.sleep(3600)  # killed here, after publishing


if __name__ == "__main__":
    b, p, c, n, s = sys.argv[1:6]
    asyncio.run(main(b, p, c, int(n), int(s)))
