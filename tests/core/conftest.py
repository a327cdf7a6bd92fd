from __future__ import annotations

import numpy as np
import pytest

from banditroute.core import ModelSpec, TaskPolicy


def catalog(n: int = 5, **overrides: object) -> tuple[ModelSpec, ...]:
    return tuple(
        ModelSpec(name=f"m{i}", cost_per_call_usd=0.001 * (i + 1), latency_ms=200.0 + 100.0 * i, **overrides)  # type: ignore[arg-type]
        for i in range(n)
    )


@pytest.fixture
def models() -> tuple[ModelSpec, ...]:
    return catalog()


@pytest.fixture
def policy() -> TaskPolicy:
    return TaskPolicy()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
