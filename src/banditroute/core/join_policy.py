"""How the join treats feedback for one task type: the reward wait window and what a missing one means.

Plain data, shared by the configuration (which reads it from ``policy.yaml``) and the join (which applies it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JoinPolicy:
    """Per task type: how long to wait for feedback, and what a missing or late one means."""

    wait_s: float = 300.0
    on_timeout: str = "none"  # "none" (learn nothing) or "default_reward"
    default_reward: float = 0.0
    learn_late: bool = False
    keep_joined_s: float = 60.0  # how long a joined entry stays to recognise duplicates
