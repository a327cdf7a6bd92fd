"""Turn an in-process simulation into RoutingDecision / Feedback JSON lines, as the router would log them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from banditroute.events import CandidateScore, Feedback, PolicyRef, RoutingDecision
from banditroute.sim.simulator import SECONDS_PER_REQUEST, Simulation

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_logs(sim: Simulation, folder: Path, *, shadow_of: Simulation | None = None) -> dict[str, Path]:
    decisions, feedback, shadows = [], [], []
    for i in range(len(sim.task)):
        at = T0 + timedelta(seconds=i * SECONDS_PER_REQUEST)
        model = sim.models[int(sim.model[i])]
        common = {
            "request_id": f"r{i}",
            "task_type": sim.task_types[int(sim.task[i])],
            "candidates": [
                CandidateScore(model=m, sampled_utility=0.0, mean_utility=0.0) for m in sim.models
            ],
            "state_version": 0,
            "decided_at": at,
            "decision_ms": 0.1,
        }
        decisions.append(
            RoutingDecision(
                decision_id=f"d{i}",
                model=model,
                propensity=float(sim.propensity[i]),
                policy=PolicyRef(name="live", version="1"),
                **common,
            )
        )
        if shadow_of is not None:
            shadows.append(
                RoutingDecision(
                    decision_id=f"s{i}",
                    model=shadow_of.models[int(shadow_of.model[i])],
                    propensity=float(shadow_of.propensity[i]),
                    policy=PolicyRef(name="shadow", version="1"),
                    shadow=True,
                    **common,
                )
            )
        failed = bool(sim.error[i])
        feedback.append(
            Feedback(
                request_id=f"r{i}",
                decision_id=f"d{i}",
                model=model,
                quality=None if failed else float(sim.quality[i]),
                cost_usd=float(sim.cost_usd[i]),
                latency_ms=float(sim.latency_ms[i]),
                error="provider_error" if failed else None,
                observed_at=at + timedelta(seconds=0.5),
                idempotency_key=f"k{i}",
            )
        )
    paths = {"decisions": folder / "decisions.jsonl", "feedback": folder / "feedback.jsonl"}
    paths["decisions"].write_text("".join(d.model_dump_json() + "\n" for d in decisions))
    paths["feedback"].write_text("".join(f.model_dump_json() + "\n" for f in feedback))
    if shadow_of is not None:
        paths["shadow"] = folder / "shadow.jsonl"
        paths["shadow"].write_text("".join(d.model_dump_json() + "\n" for d in shadows))
    return paths
