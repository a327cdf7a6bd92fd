"""One worker for all the integration tests (its start is most of their time); each test uses its own task type.

It is stopped when the last integration test is done (package scope), not at the end of the whole run: its stop
took 2 s there, and was part of a 39 s session teardown when it ran after every later test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integrations.worker import Worker, start_worker


@pytest.fixture(scope="package")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from start_worker(kafka_bootstrap, tmp_path_factory.mktemp("integrations"))
