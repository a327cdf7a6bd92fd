"""The ceiling of the decide path as a process to benchmark: ``python -m banditroute.bench.relay BOOTSTRAP
PREFIX`` runs :func:`banditroute.kafka.relay.relay` (a raw consume -> orjson -> produce loop with no routing)
from ``PREFIX.requests`` to ``PREFIX.decisions`` until SIGTERM (``--pad-bytes=N BOOTSTRAP PREFIX``: each record
padded by ``N`` characters, see :mod:`banditroute.bench.record_size`); ``python -m banditroute.bench.relay decide
BOOTSTRAP PREFIX`` runs the worker's decide loop alone the same way (the part of the worker between the relay
and the full router: validation, routing, the decision event).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from banditroute.kafka.relay import relay


async def decide_only(bootstrap: str, prefix: str, stop: asyncio.Event) -> None:
    """The worker's :class:`DecideService` alone (no faust app, no join or learn), on the same topics.

    The model catalog and policy come from ``BANDITROUTE_CONFIG_DIR``; the state view stays empty (priors).
    """
    import numpy as np

    from banditroute.agents.decide import DecideLogic, StateView
    from banditroute.codec import DeadLetterCounter
    from banditroute.config import Registry, RouterConfig
    from banditroute.kafka.decide_service import DecideService
    from banditroute.settings import Settings

    settings = Settings()
    registry = Registry(RouterConfig.load(settings.config_dir), settings.config_dir)
    service = DecideService(
        DecideLogic(registry, StateView(), np.random.default_rng(1), worker_id="bench-decide-only"),
        bootstrap=bootstrap,
        requests_topic=f"{prefix}.requests",
        decisions_topic=f"{prefix}.decisions",
        deadletter_topic=f"{prefix}.deadletter",
        group_id=f"{prefix}.decide",
        security={},
        max_payload_bytes=settings.max_payload_bytes,
        dead_letters=DeadLetterCounter(),
    )
    task = asyncio.create_task(service.run())
    await stop.wait()
    service.stop()
    await task


PAD_FLAG = "--pad-bytes="


MODES = ("relay", "decide")
USAGE = "usage: python -m banditroute.bench.relay [--pad-bytes=N] [relay|decide] BOOTSTRAP PREFIX"


def parse_argv(argv: list[str]) -> tuple[str, int, str, str]:
    """``(mode, pad_bytes, bootstrap, prefix)`` of ``[--pad-bytes=N] [relay|decide] BOOTSTRAP PREFIX``; a
    ``ValueError`` naming what is wrong otherwise (padding is for the relay only)."""
    pad = 0
    if argv and argv[0].startswith(PAD_FLAG):
        text = argv[0][len(PAD_FLAG) :]
        if not (text.isascii() and text.isdecimal()):
            raise ValueError(f"{PAD_FLAG}N: N must be a whole number of characters, 0 or more (got {text!r})")
        pad = int(text)
        argv = argv[1:]
    if len(argv) == 2:
        argv = ["relay", *argv]
    if len(argv) != 3:
        raise ValueError(USAGE)
    mode, bootstrap, prefix = argv
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (relay or decide); {USAGE}")
    if pad and mode != "relay":
        raise ValueError(f"{PAD_FLAG}N pads the relay's records; the decide loop writes its own decisions")
    return mode, pad, bootstrap, prefix


def main(argv: list[str]) -> None:
    """``[--pad-bytes=N] relay BOOTSTRAP PREFIX`` or ``decide BOOTSTRAP PREFIX``."""
    try:
        mode, pad, bootstrap, prefix = parse_argv(argv)
    except ValueError as err:
        sys.exit(f"error: {err}")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if mode == "decide":
            from banditroute.gc_tuning import tune_for_worker

            tune_for_worker()  # as the worker does
            await decide_only(bootstrap, prefix, stop)
        else:
            await relay(bootstrap, prefix, stop, pad_bytes=pad)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
