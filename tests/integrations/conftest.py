"""One worker for all the integration tests (its start is most of their time); each test uses its own task type."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integrations.worker import Worker, start_worker


@pytest.fixture(scope="session")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from start_worker(kafka_bootstrap, tmp_path_factory.mktemp("integrations"))
