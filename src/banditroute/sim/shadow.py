"""Shadow comparison: a candidate policy's would-be decisions (``shadow: true``) against the live ones.

Shadow and live decisions are matched by ``request_id``. Because the shadow policy samples independently of
the live one, ``1[shadow model == live model] / live propensity`` is an unbiased importance weight for the
shadow policy's value (IPS); SNIPS and DR (with ``rhat(shadow model)`` as the direct-method term) follow as
in :mod:`banditroute.sim.ope`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from banditroute.events import Feedback, RoutingDecision
from banditroute.sim.ope import RewardModel, estimate, join_logs


def compare_shadow(
    live: Sequence[RoutingDecision],
    shadow: Sequence[RoutingDecision],
    feedback: Sequence[Feedback],
    *,
    lam: float,
    mu: float = 0.0,
) -> dict[str, Any]:
    """Agreement rate (overall and per task type) and the OPE estimate of the shadow policy from live logs."""
    steps = join_logs(live, feedback, lam=lam, mu=mu)
    by_request = {d.request_id: d for d in shadow if d.shadow and d.model is not None}
    rhat = RewardModel(steps)
    matched = agree = 0
    per_task: dict[str, list[int]] = {}
    rewards, logged_p, target_p, dm_t, dm_l = [], [], [], [], []
    for step in steps:
        s = by_request.get(step.request_id)
        if s is None or s.model is None:
            continue
        same = int(s.model == step.model)
        matched += 1
        agree += same
        counts = per_task.setdefault(step.task_type, [0, 0])
        counts[0] += same
        counts[1] += 1
        if step.reward is None:
            continue
        rewards.append(step.reward)
        logged_p.append(step.propensity)
        target_p.append(float(same))
        dm_t.append(rhat(step.task_type, s.model))
        dm_l.append(rhat(step.task_type, step.model))
    result = estimate(
        np.array(rewards), np.array(logged_p), np.array(target_p), np.array(dm_t), np.array(dm_l)
    )
    return {
        "live_decisions": len(steps),
        "shadow_decisions": len(by_request),
        "matched": matched,
        "agreement": agree / matched if matched else None,
        "agreement_by_task_type": {t: a / n for t, (a, n) in sorted(per_task.items())},
        "ope": result.to_json(),
    }
