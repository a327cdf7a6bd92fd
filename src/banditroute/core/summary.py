"""Posterior summaries shown to people: one credible interval, shared by the CLI and the dashboard.

Both show the equal-tailed 90% Beta credible interval of each model's quality (``banditroute state`` as
``quality_ci90``; ``/api/state``, the dashboard and the Prometheus gauges as ``quality_low``/``quality_high``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CREDIBLE_MASS = 0.90
"""Probability mass inside the interval."""


def credible_interval(alpha: Any, beta: Any, mass: float = CREDIBLE_MASS) -> tuple[Any, Any]:
    """Equal-tailed Beta(alpha, beta) credible interval, vectorised over models: (lows, highs)."""
    # imported here: scipy.special costs every worker and CLI start about a quarter of a second (the web
    # module imports this one), and only a snapshot or ``banditroute state`` needs it
    from scipy.special import betaincinv

    tail = (1.0 - mass) / 2.0
    a = np.maximum(alpha, 1e-9)
    b = np.maximum(beta, 1e-9)
    return betaincinv(a, b, tail), betaincinv(a, b, 1.0 - tail)


def load_special() -> None:
    """Import scipy.special now: the worker calls this on a thread of its own as it starts, so that the first
    dashboard or ``/metrics`` request does not stall the event loop on the import (about a quarter of a
    second)."""
    import scipy.special  # noqa: F401


__all__ = ["CREDIBLE_MASS", "credible_interval", "load_special"]
