"""banditroute: an event-stream adaptive router for AI models.

Requests, decisions and feedback travel as events on Kafka; a faust-streaming worker chooses a model per
request with cost-aware Thompson sampling and learns from the joined outcomes.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
