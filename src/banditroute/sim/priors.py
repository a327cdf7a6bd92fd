"""Quality priors fitted from logged outcomes or offline benchmark results (``banditroute priors fit``).

Per model, the prior for a task type the data has not seen is the spread of the model's quality over the
task types it has: a Beta with the model's mean quality and the strength whose variance equals the
between-task variance (DerSimonian-Laird, as in ``core.pooling``), capped at ``max_strength``
pseudo-observations. A model that behaves alike on every task type thus starts confident anywhere; one whose
quality depends on the task starts nearly flat. Per task type the data has seen, the prior is that task
type's mean, worth at most ``max_strength`` observations (offline results are evidence about production,
not the same thing, so they are never worth more than that).

The file is YAML::

    source: outcomes.csv
    max_strength: 50
    models:            # for any task type
      gpt-4o: [31.2, 9.8]
    task_types:        # for task types the data has
      math:
        gpt-4o: [38.0, 13.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from banditroute.core.pooling import MIN_WITHIN_VAR, between_task_variance
from banditroute.sim.table import OutcomeTable

DEFAULT_PRIOR_STRENGTH = 50.0
Prior = tuple[float, float]


@dataclass(frozen=True)
class FittedPriors:
    """Beta quality priors per model, and per task type and model."""

    models: dict[str, Prior]
    task_types: dict[str, dict[str, Prior]] = field(default_factory=dict)
    source: str = ""
    max_strength: float = DEFAULT_PRIOR_STRENGTH

    def for_task(self, task_type: str) -> dict[str, Prior]:
        """The priors a task type starts from: its own where fitted, else the models'."""
        return {**self.models, **self.task_types.get(task_type, {})}

    def to_yaml(self) -> str:
        def pair(p: Prior) -> list[float]:
            return [round(p[0], 4), round(p[1], 4)]

        doc: dict[str, Any] = {
            "source": self.source,
            "max_strength": self.max_strength,
            "models": {m: pair(p) for m, p in self.models.items()},
            "task_types": {t: {m: pair(p) for m, p in ps.items()} for t, ps in self.task_types.items()},
        }
        header = (
            "# Beta quality priors [alpha, beta] fitted by `banditroute priors fit`.\n"
            "# models: for any task type (mean quality, strength from how much task types differ);\n"
            "# task_types: for the task types the data has (their own mean, at most max_strength observations).\n"
        )
        return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)

    @classmethod
    def load(cls, path: str | Path) -> FittedPriors:
        """Read a priors file; ``ValueError`` names what is wrong."""
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read priors: {exc}") from exc
        if not isinstance(doc, Mapping) or not isinstance(doc.get("models"), Mapping):
            raise ValueError(f"{path}: a priors file needs a 'models' mapping")

        def prior(where: str, value: Any) -> Prior:
            if (
                not isinstance(value, list | tuple)
                or len(value) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
            ):
                raise ValueError(f"{path}: {where} must be [alpha, beta] with both > 0, got {value!r}")
            return float(value[0]), float(value[1])

        models = {str(m): prior(f"models.{m}", v) for m, v in doc["models"].items()}
        tasks_doc = doc.get("task_types") or {}
        if not isinstance(tasks_doc, Mapping):
            raise ValueError(f"{path}: task_types must map task type -> model -> [alpha, beta]")
        task_types = {
            str(t): {str(m): prior(f"task_types.{t}.{m}", v) for m, v in (ps or {}).items()}
            for t, ps in tasks_doc.items()
        }
        return cls(models, task_types, str(doc.get("source", "")), float(doc.get("max_strength", 0.0)))


def fit_priors(table: OutcomeTable, max_strength: float = DEFAULT_PRIOR_STRENGTH) -> FittedPriors:
    """Fit per-model and per-task-type Beta quality priors from a table of recorded outcomes."""
    if max_strength <= 0:
        raise ValueError("max_strength must be > 0")
    n = np.array([len(t) for t in table.tasks.values()], dtype=np.float64)[:, None]
    mean = table.mean_quality()  # (tasks, models)
    sq = np.array([(t.quality**2).mean(axis=0) for t in table.tasks.values()])
    within = np.maximum(sq - mean**2, MIN_WITHIN_VAR)
    seen = np.ones_like(mean)
    tau2 = between_task_variance(mean, within / n, seen)
    overall = (n * mean).sum(axis=0) / n.sum()
    spread = np.clip(overall * (1.0 - overall), 1e-6, None)
    with np.errstate(divide="ignore"):
        strength = np.where(tau2 > 0, spread / np.where(tau2 > 0, tau2, 1.0) - 1.0, max_strength)
    strength = np.clip(strength, 0.0, max_strength)
    models = {
        m: (1.0 + float(s * q), 1.0 + float(s * (1.0 - q)))
        for m, s, q in zip(table.models, strength, overall, strict=True)
    }
    task_types: dict[str, dict[str, Prior]] = {}
    for i, task in enumerate(table.task_types):
        s_t = min(max_strength, float(n[i, 0]))
        task_types[task] = {
            m: (1.0 + s_t * float(mean[i, j]), 1.0 + s_t * (1.0 - float(mean[i, j])))
            for j, m in enumerate(table.models)
        }
    return FittedPriors(models, task_types, table.source, max_strength)
