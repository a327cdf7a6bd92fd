"""The pure policy core: cost-aware Thompson sampling over a model catalog, with no I/O.

Depends only on numpy, scipy and the standard library. Functions take a state and return a new one, so the
streaming layer can persist every change to a changelog; randomness comes from an explicit
``numpy.random.Generator``.
"""

from banditroute.core.baselines import POLICIES, RoutingPolicy, make_policy
from banditroute.core.capacity import CapacityTracker
from banditroute.core.choose import choose, choose_batch, propensities
from banditroute.core.codec import decode_state, encode_state
from banditroute.core.learn import update, update_many
from banditroute.core.models import (
    NO_CONSTRAINTS,
    Choice,
    Constraints,
    ModelSpec,
    Outcome,
    ScheduleEntry,
    TaskPolicy,
)
from banditroute.core.rules import Rule, RuleEffect, apply_rules
from banditroute.core.state import TaskState, new_state, sync_models

__all__ = [
    "NO_CONSTRAINTS",
    "POLICIES",
    "CapacityTracker",
    "Choice",
    "Constraints",
    "ModelSpec",
    "Outcome",
    "RoutingPolicy",
    "Rule",
    "RuleEffect",
    "ScheduleEntry",
    "TaskPolicy",
    "TaskState",
    "apply_rules",
    "choose",
    "choose_batch",
    "decode_state",
    "encode_state",
    "make_policy",
    "new_state",
    "propensities",
    "sync_models",
    "update",
    "update_many",
]
