"""banditroute: an event-stream adaptive router for AI models.

Requests, decisions and feedback travel as events on Kafka; a faust-streaming worker chooses a model per
request with cost-aware Thompson sampling and learns from the joined outcomes.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from banditroute.client import RouterClient, SyncRouterClient

__all__ = ["RouterClient", "SyncRouterClient", "__version__"]


def __getattr__(name: str) -> Any:
    """Import the client lazily, so ``import banditroute`` stays light."""
    if name in ("RouterClient", "SyncRouterClient"):
        from banditroute import client

        return getattr(client, name)
    raise AttributeError(f"module 'banditroute' has no attribute {name!r}")
