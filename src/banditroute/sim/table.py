"""Recorded outcomes of several models on the same prompts, as dense arrays per task type.

The CSV format is ``task_type,prompt_id,model,quality,cost_usd,latency_ms`` with one row per (prompt, model);
``latency_ms`` may be empty. Prompts that were not answered by every model are dropped, so that every policy
can be replayed on every prompt (counterfactual outcomes exist for each arm).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
REQUIRED_COLUMNS = ("task_type", "prompt_id", "model", "quality", "cost_usd")
EXAMPLE_NAME = "example_outcomes.csv"


def example_path() -> Path:
    """Path of the small generated example shipped with the package (``banditroute/data``)."""
    return Path(str(resources.files("banditroute").joinpath("data", EXAMPLE_NAME)))


@dataclass(frozen=True, eq=False)
class TaskOutcomes:
    """All prompts of one task type: ``quality``/``cost``/``latency`` have shape (prompts, models)."""

    prompts: tuple[str, ...]
    quality: FloatArray
    cost: FloatArray
    latency: FloatArray  # NaN where not recorded

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True, eq=False)
class OutcomeTable:
    """Per task type outcome matrices over a shared, sorted list of models."""

    models: tuple[str, ...]
    tasks: dict[str, TaskOutcomes]
    source: str = ""

    @property
    def task_types(self) -> tuple[str, ...]:
        return tuple(self.tasks)

    def mix(self) -> dict[str, float]:
        """The task mix of the file: each task type's share of prompts."""
        total = sum(len(t) for t in self.tasks.values())
        return {name: len(t) / total for name, t in self.tasks.items()}

    def mean_quality(self) -> FloatArray:
        """(tasks, models) mean quality."""
        return np.array([t.quality.mean(axis=0) for t in self.tasks.values()])

    def mean_cost(self) -> FloatArray:
        """(tasks, models) mean cost per call in USD."""
        return np.array([t.cost.mean(axis=0) for t in self.tasks.values()])

    def mean_latency(self) -> FloatArray:
        """(tasks, models) mean latency in ms (NaN where never recorded)."""
        out = []
        for t in self.tasks.values():
            lat = t.latency
            seen = ~np.isnan(lat)
            with np.errstate(invalid="ignore"):
                out.append(np.where(seen.any(axis=0), np.nansum(lat, axis=0) / seen.sum(axis=0), np.nan))
        return np.array(out)

    def catalog_cost(self) -> dict[str, float]:
        """Mean cost of one call per model over all rows: the "catalog price" a router would know."""
        total = sum(t.cost.sum(axis=0) for t in self.tasks.values())
        count = sum(len(t) for t in self.tasks.values())
        return {m: float(c) / count for m, c in zip(self.models, total, strict=True)}

    def restrict(self, models: tuple[str, ...]) -> OutcomeTable:
        """The same table with only ``models`` (in that order)."""
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(self.models)}")
        cols = [self.models.index(m) for m in models]
        tasks = {
            k: TaskOutcomes(t.prompts, t.quality[:, cols], t.cost[:, cols], t.latency[:, cols])
            for k, t in self.tasks.items()
        }
        return OutcomeTable(models=models, tasks=tasks, source=self.source)


def _float(value: str, what: str, where: str, *, optional: bool = False) -> float:
    text = value.strip() if value is not None else ""
    if not text:
        if optional:
            return math.nan
        raise ValueError(f"{where}: {what} is empty")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {what} must be finite, got {value!r}")
    return number


def load_outcomes(path: str | Path | None = None) -> OutcomeTable:
    """Read an outcomes CSV (default: the shipped example); raise ``ValueError`` naming the bad line."""
    file = example_path() if path is None else Path(path)
    rows: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {}
    models: set[str] = set()
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{file}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            where = f"{file}:{line}"
            task, prompt, model = row["task_type"], row["prompt_id"], row["model"]
            if not task or not prompt or not model:
                raise ValueError(f"{where}: task_type, prompt_id and model must be non-empty")
            quality = _float(row["quality"], "quality", where)
            if not 0.0 <= quality <= 1.0:
                raise ValueError(f"{where}: quality must be in [0, 1], got {quality}")
            cost = _float(row["cost_usd"], "cost_usd", where)
            if cost < 0:
                raise ValueError(f"{where}: cost_usd must be >= 0, got {cost}")
            latency = _float(row.get("latency_ms") or "", "latency_ms", where, optional=True)
            rows.setdefault(task, {}).setdefault(prompt, {})[model] = (quality, cost, latency)
            models.add(model)
    if not rows:
        raise ValueError(f"{file}: no outcome rows")
    names = tuple(sorted(models))
    tasks: dict[str, TaskOutcomes] = {}
    for task in sorted(rows):
        complete = sorted(p for p, by_model in rows[task].items() if len(by_model) == len(names))
        if not complete:
            continue
        data = np.array([[rows[task][p][m] for m in names] for p in complete], dtype=np.float64)
        tasks[task] = TaskOutcomes(
            prompts=tuple(complete),
            quality=np.ascontiguousarray(data[:, :, 0]),
            cost=np.ascontiguousarray(data[:, :, 1]),
            latency=np.ascontiguousarray(data[:, :, 2]),
        )
    if not tasks:
        raise ValueError(f"{file}: no prompt has outcomes for every model ({', '.join(names)})")
    return OutcomeTable(models=names, tasks=tasks, source=str(file))


def write_outcomes(table: OutcomeTable, path: str | Path) -> Path:
    """Write ``table`` as an outcomes CSV: numbers as Python's shortest exact text, a latency not recorded as an
    empty field. :func:`load_outcomes` reads back the same outcomes, with task types, prompt ids and models in
    sorted order (the same table when they were sorted already). Raises ``ValueError`` for a quality or cost
    that is not finite (which :func:`load_outcomes` would refuse), before writing anything."""
    for task, outcomes in table.tasks.items():
        if not (np.isfinite(outcomes.quality).all() and np.isfinite(outcomes.cost).all()):
            raise ValueError(f"task type {task!r}: every quality and cost must be finite")
    file = Path(path)
    with file.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow([*REQUIRED_COLUMNS, "latency_ms"])
        for task, outcomes in table.tasks.items():
            for p, prompt in enumerate(outcomes.prompts):
                for j, model in enumerate(table.models):
                    latency = float(outcomes.latency[p, j])
                    out.writerow(
                        [
                            task,
                            prompt,
                            model,
                            repr(float(outcomes.quality[p, j])),
                            repr(float(outcomes.cost[p, j])),
                            "" if math.isnan(latency) else repr(latency),
                        ]
                    )
    return file


def parse_mix(text: str | Mapping[str, float], task_types: tuple[str, ...]) -> dict[str, float]:
    """``"gsm8k=0.3,mmlu-stem=0.7"`` (or a mapping) -> normalised shares over known task types."""
    if isinstance(text, str):
        pairs: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"mix entry {part!r} must look like task_type=weight")
            pairs[name.strip()] = _float(value, f"weight of {name.strip()!r}", "mix")
    else:
        pairs = {str(k): float(v) for k, v in text.items()}
    unknown = sorted(set(pairs) - set(task_types))
    if unknown:
        raise ValueError(f"mix: unknown task type(s) {', '.join(unknown)}; known: {', '.join(task_types)}")
    if any(v < 0 or not math.isfinite(v) for v in pairs.values()) or sum(pairs.values()) <= 0:
        raise ValueError("mix: weights must be >= 0 and add up to more than 0")
    total = sum(pairs.values())
    return {t: pairs.get(t, 0.0) / total for t in task_types}
