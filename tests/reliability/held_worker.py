"""``banditroute worker`` in three steps, for a test that must time them: the imports and the Router (most of a
worker's start-up, 5-24 s under load), then, once the file named by its first argument exists, the check of the
topics (``Router.ensure_topics``, as ``banditroute worker`` runs it), then, once the file named by its second
argument exists, the rest (faust), without checking the topics again. Prints :data:`HELD` after the first step
and :data:`CHECKED` after the second.

Run as a script (``python held_worker.py CHECK_FILE GO_FILE``), with the worker's environment."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

HELD = "held worker built: waiting for its check file"
CHECKED = "held worker: the topics are checked"


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.02)


def main(check_file: Path, go: Path) -> None:
    from banditroute.app import Router
    from banditroute.cli.worker_cmd import prepare_data_dir, run_worker
    from banditroute.config import config_dir_of
    from banditroute.core.summary import load_special
    from banditroute.logs import quiet_kafka_logs
    from banditroute.settings import Settings

    settings = Settings()
    config_dir, _packaged = config_dir_of(settings)
    settings = settings.model_copy(update={"config_dir": config_dir})
    prepare_data_dir(settings.data_dir)
    router = Router(settings)
    load_special()  # run_worker imports it on a thread as it checks the topics: done here
    print(HELD, flush=True)
    _wait_for(check_file)
    quiet_kafka_logs()  # as the `banditroute` command group does, before the check
    present = asyncio.run(asyncio.wait_for(router.ensure_topics(), 60.0))
    print(CHECKED, flush=True)

    async def checked(**_kwargs: object) -> int:
        return present

    router.ensure_topics = checked  # type: ignore[method-assign]
    _wait_for(go)
    run_worker(router)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
