"""``banditroute worker`` in two steps, for a test that must time the second: the imports and the Router (most of a
worker's start-up, 5-24 s under load), then, once the file named by its one argument exists, the rest as
``banditroute worker`` runs it (the check of the topics, then faust). Prints :data:`HELD` in between, and
:data:`CHECKED` once the check of the topics has passed.

Run as a script (``python held_worker.py GO_FILE``), with the worker's environment."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

HELD = "held worker built: waiting for its go file"
CHECKED = "held worker: the topics are checked"


def main(go: Path) -> None:
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
    load_special()  # run_worker imports it on a thread as it checks the topics: done here, it does not slow that
    check = router.ensure_topics

    async def ensure_topics(**kwargs: Any) -> int:
        present = await check(**kwargs)
        print(CHECKED, flush=True)
        return present

    router.ensure_topics = ensure_topics  # type: ignore[method-assign]
    print(HELD, flush=True)
    while not go.exists():
        time.sleep(0.02)
    quiet_kafka_logs()  # as the `banditroute` command group does
    run_worker(router)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
