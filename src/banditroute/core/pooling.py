"""Empirical-Bayes quality priors pooled over task types, shrinking only as much as the task types agree.

For each model, the task types' mean qualities are treated as draws from one distribution with a mean ``m``
and a between-task variance ``tau²``. ``tau²`` is estimated by the method of moments (DerSimonian-Laird)
from each task type's mean and its sampling variance (the observed within-task spread over its count, so
fractional scores are handled like 0/1 ones). A task type's prior for the model is then a Beta with mean
``m`` and the strength whose variance matches ``tau²``: ``m (1 - m) / tau² - 1`` pseudo-observations, capped
by the evidence the other task types hold and by ``max_strength``. Models whose quality differs much between
task types are thus shrunk little; models that behave alike everywhere share their evidence.

Each task type's prior uses only the *other* task types' evidence (leave one out), so no evidence counts
twice. With fewer than two task types holding evidence for a model, nothing is pooled.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from banditroute.core.state import PRIOR_A, PRIOR_B, Q_N, Q_SQ, Q_SUM, TaskState, replace_state

FloatArray = npt.NDArray[np.float64]
DEFAULT_MAX_STRENGTH = 200.0  # chosen by the evaluation suite; see README "Defaults and why"
MIN_WITHIN_VAR = 1e-4


def between_task_variance(means: FloatArray, sampling_var: FloatArray, seen: FloatArray) -> FloatArray:
    """DerSimonian-Laird estimate, per column, of the variance of the true means behind ``means``.

    ``means``, ``sampling_var`` and ``seen`` (1 where the task type holds evidence, else 0) are (tasks, models);
    a column with fewer than two task types with evidence gets 0.
    """
    w = seen / np.maximum(sampling_var, 1e-12)
    total = w.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    centre = (w * means).sum(axis=0) / safe
    q = (w * (means - centre) ** 2).sum(axis=0)
    denom = total - (w * w).sum(axis=0) / safe
    k = seen.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau2 = np.where((k >= 2) & (denom > 0), (q - (k - 1)) / denom, 0.0)
    return np.maximum(tau2, 0.0)


def pooled_priors(
    states: Mapping[str, TaskState],
    base: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    *,
    max_strength: float = DEFAULT_MAX_STRENGTH,
    min_tau2: float = 0.0,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per task type, per model: a Beta quality prior ``base + pooled pseudo-observations``.

    ``base`` is, per task type, each model's own prior (the catalog's ``quality_prior``; default Beta(1, 1)).
    Models a task
    type's state does not know are skipped. ``min_tau2`` floors the between-task variance (less pooling).
    """
    tasks = list(states)
    names = sorted({n for s in states.values() for n in s.names})
    col = {n: j for j, n in enumerate(names)}
    shape = (len(tasks), len(names))
    n, s, sq = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, t in enumerate(tasks):
        state = states[t]
        cols = [col[m] for m in state.names]
        n[i, cols] = state.stats[:, Q_N] * state.scale
        s[i, cols] = state.stats[:, Q_SUM] * state.scale
        sq[i, cols] = state.stats[:, Q_SQ] * state.scale
    seen = (n >= 1.0).astype(np.float64)
    safe_n = np.maximum(n, 1.0)
    mean = s / safe_n
    within = np.maximum(sq / safe_n - mean * mean, MIN_WITHIN_VAR)
    tau2 = np.maximum(between_task_variance(mean, within / safe_n, seen), min_tau2)
    # leave one out: task i's prior uses the evidence of the other task types only
    n_seen, s_seen = n * seen, s * seen
    other_n = n_seen.sum(axis=0) - n_seen
    other_s = s_seen.sum(axis=0) - s_seen
    centre = (other_s + 0.5) / (other_n + 1.0)
    spread = centre * (1.0 - centre)
    with np.errstate(divide="ignore"):
        strength = np.where(tau2 > 0, spread / np.where(tau2 > 0, tau2, 1.0) - 1.0, max_strength)
    strength = np.clip(strength, 0.0, max_strength)
    strength = np.minimum(strength, other_n)
    prior_a = strength * centre
    prior_b = strength * (1.0 - centre)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for i, t in enumerate(tasks):
        row: dict[str, tuple[float, float]] = {}
        own = (base or {}).get(t, {})
        for m in states[t].names:
            a0, b0 = own.get(m, (1.0, 1.0))
            j = col[m]
            row[m] = (a0 + float(prior_a[i, j]), b0 + float(prior_b[i, j]))
        out[t] = row
    return out


def with_priors(state: TaskState, priors: Mapping[str, tuple[float, float]]) -> TaskState:
    """The same evidence under new Beta priors (the prior columns are not discounted, so this is exact)."""
    stats = state.stats.copy()
    changed = False
    for j, name in enumerate(state.names):
        prior = priors.get(name)
        if prior is not None and (stats[j, PRIOR_A], stats[j, PRIOR_B]) != prior:
            stats[j, PRIOR_A], stats[j, PRIOR_B] = prior
            changed = True
    if not changed:
        return state
    return replace_state(state, stats=stats, version=state.version + 1)
