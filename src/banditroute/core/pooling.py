"""Empirical-Bayes quality priors pooled over task types, shrinking only as much as the task types agree.

For each model, the task types' mean qualities are treated as draws from one distribution with a mean ``m``
and a between-task variance ``tau²``. ``tau²`` is estimated by the method of moments (DerSimonian-Laird)
from each task type's mean and its sampling variance (the observed within-task spread over its count, so
fractional scores are handled like 0/1 ones). A task type's prior for the model is then a Beta with mean
``m`` and the strength whose variance matches ``tau²``: ``m (1 - m) / tau² - 1`` pseudo-observations, capped
by the evidence the other task types hold and by ``max_strength``. Models whose quality differs much between
task types are thus shrunk little; models that behave alike everywhere share their evidence.

Each task type's prior uses only the *other* task types' evidence (leave one out), so no evidence counts
twice. With only one task type holding evidence for a model, ``tau²`` cannot be estimated and is taken as 0:
the task types without evidence get that one's mean as their prior, worth its evidence up to ``max_strength``
(the small-group weakness README "Learning" describes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from banditroute.core.state import PRIOR_A, PRIOR_B, Q_N, Q_SQ, Q_SUM, TaskState, replace_state

FloatArray = npt.NDArray[np.float64]
DEFAULT_MAX_STRENGTH = 200.0  # chosen by the evaluation suite; see README "Defaults and why"
MIN_WITHIN_VAR = 1e-4
TAU_GRID_POINTS = 64
TAU2_METHODS = (
    "dl",
    "posterior",
    "dl_k",
    "dl_offset",
    "dl_shared",
    "dl_conflict",
    "dl_shared_conflict",
    "posterior_shared",
    "dl_offset_shared",
    "sampled_shared",
    "sampled",
    "sampled_thin",
)
"""How ``tau²`` is estimated: ``dl`` the DerSimonian-Laird point estimate; ``posterior`` its posterior mean
under a uniform prior on ``tau`` (wide when few task types hold evidence); ``dl_k`` DerSimonian-Laird with the
strength scaled by ``(k - 1) / (k + 1)``, ``k`` the task types holding evidence for the model; ``dl_offset``
DerSimonian-Laird on means less each task type's offset (:func:`task_offsets`), and each prior's mean moved by
its task type's offset: a task type easier or harder for every model does not bias the others' priors;
``dl_shared`` each model's DerSimonian-Laird ``tau²`` moderated towards one estimate over all models of the
group, weighted by degrees of freedom (``k - 1`` for the model, ``shared_df`` for the common one), as limma
moderates per-gene variances: with three task types a model's own ``tau²`` rests on two degrees of freedom and
is often 0, while the task types' spread over every model is well estimated; ``posterior_shared`` the posterior
mean of each model's ``tau²`` under a half-Cauchy prior on ``tau`` (Gelman 2006's advice for few groups) whose
scale is the common ``tau`` of the group's models (``dl_shared``'s common estimate): never 0 from three task types
when the other models move between them, about 0 when none does, and the model's own evidence as task types
grow; ``dl_offset_shared`` the two-way model: each task type's offset for every model (``dl_offset``) taken out
of the means and added to the centres, and the interaction left moderated towards its common value
(``dl_shared``); ``sampled_shared`` a Thompson draw of each model's ``tau²`` from the posterior
``posterior_shared`` takes the mean of (one draw per model and group each time the table is computed, from the
``rng`` passed in): the prior is as strong as the draw says, so in the fraction of draws where ``tau²`` is large a
model the point estimate would lock out gets a wide prior and is tried, while in most draws the prior is about
as strong as the point estimate's; ``sampled`` the same draw under ``posterior``'s uniform prior on ``tau``;
``sampled_thin`` ``sampled_shared``'s draw only where the pooled prior outweighs the task type's own evidence for
the model (its observations fewer than DerSimonian-Laird's strength: where a lock-out can happen), DL elsewhere."""
SAMPLED_METHODS = ("sampled_shared", "sampled", "sampled_thin")
"""The methods that draw ``tau²`` (they need an ``rng``)."""
MIN_SHARED_SCALE2 = 1e-6
"""``posterior_shared``'s floor on the half-Cauchy scale² (quality units²: 0.001 of quality), where no model of
the group moves between its task types."""
SHARED_TAU2_DF = 4.0
"""``dl_shared``'s prior degrees of freedom for the common ``tau²`` (set a priori, limma's typical range)."""
DEFAULT_TAU2_METHOD = "dl"
DEFAULT_TRAFFIC_HALF = 0.0
"""Off (the default): a candidate, ``traffic_half`` of :func:`pooled_table`, scales each task type's pooled
strength by ``h / (h + n)``, ``n`` the observations the task type itself holds, so a model the pooled prior locked
out of a task type is tried again as the task type's own traffic grows."""


def between_task_variance(means: FloatArray, sampling_var: FloatArray, seen: FloatArray) -> FloatArray:
    """DerSimonian-Laird estimate, per column, of the variance of the true means behind ``means``.

    ``means``, ``sampling_var`` and ``seen`` (1 where the task type holds evidence, else 0) are (tasks, models);
    a column with fewer than two task types with evidence gets 0.
    """
    return _between_task_variance(means, sampling_var, seen, _all_rows)


ColumnSums = Callable[[FloatArray], FloatArray]
"""(tasks, models) -> column sums over the rows pooled together: (models,) for one group of every task type, or
(tasks, models) holding each task type's own group's sums."""


def _all_rows(x: FloatArray) -> FloatArray:
    return x.sum(axis=0)  # type: ignore[no-any-return]


def _group_sums(group: npt.NDArray[np.intp], n_groups: int) -> ColumnSums:
    """Column sums within each task type's group (``group``: the group index of each row)."""

    def sums(x: FloatArray) -> FloatArray:
        out = np.zeros((n_groups, x.shape[1]))
        np.add.at(out, group, x)
        return out[group]

    return sums


def _between_task_variance(
    means: FloatArray, sampling_var: FloatArray, seen: FloatArray, colsum: ColumnSums
) -> FloatArray:
    q, denom, k = _dl_moments(means, sampling_var, seen, colsum)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau2 = np.where((k >= 2) & (denom > 0), (q - (k - 1)) / denom, 0.0)
    return np.maximum(tau2, 0.0)


def _shared_between_task_variance(
    means: FloatArray, sampling_var: FloatArray, seen: FloatArray, colsum: ColumnSums, shared_df: float
) -> FloatArray:
    """(tasks, models): each model's DerSimonian-Laird ``tau²`` moderated towards the common one of its row's
    group, ``(df tau²_model + shared_df tau²_common) / (df + shared_df)``, ``df = k - 1``. The common estimate
    is the method of moments over every model with at least two task types holding evidence, ``sum(Q - df) /
    sum(denominator)`` (one ``tau²`` for all models); a model with fewer than two gets it whole."""
    q, denom, k = _dl_moments(means, sampling_var, seen, colsum)
    usable = (k >= 2) & (denom > 0)
    df = np.where(usable, k - 1.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.maximum(np.where(usable, (q - df) / np.where(usable, denom, 1.0), 0.0), 0.0)
    return (df * own + shared_df * _common_tau2(q, denom, k)) / (df + shared_df)


def _common_tau2(q: FloatArray, denom: FloatArray, k: FloatArray) -> FloatArray:
    """One method-of-moments ``tau²`` over every model (last axis) with at least two task types holding
    evidence, ``sum(Q - (k - 1)) / sum(denominator)``, at least 0; the last axis kept (size 1)."""
    usable = (k >= 2) & (denom > 0)
    excess = np.where(usable, q - (k - 1.0), 0.0).sum(axis=-1, keepdims=True)
    total = np.where(usable, denom, 0.0).sum(axis=-1, keepdims=True)
    return np.maximum(np.where(total > 0, excess / np.where(total > 0, total, 1.0), 0.0), 0.0)


def _conflict_tau2(
    mean: FloatArray, sampling_var: FloatArray, seen: FloatArray, centre: FloatArray, other_n: FloatArray
) -> FloatArray:
    """(tasks, models): the between-task variance one task type's own evidence shows against its pooled
    centre, the method of moments on that one pair: ``(mean - centre)² - var(mean) - var(centre)``, at least 0
    (0 where the task type holds no evidence for the model)."""
    centre_var = centre * (1.0 - centre) / (other_n + 1.0)
    excess = (mean - centre) ** 2 - sampling_var - centre_var
    return np.where(seen > 0, np.maximum(excess, 0.0), 0.0)


def _dl_moments(
    means: FloatArray, sampling_var: FloatArray, seen: FloatArray, colsum: ColumnSums
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """DerSimonian-Laird's Q, its denominator and the task types holding evidence, per column of each group."""
    w = seen / np.maximum(sampling_var, 1e-12)
    total = colsum(w)
    safe = np.where(total > 0, total, 1.0)
    centre = colsum(w * means) / safe
    q = colsum(w * (means - centre) ** 2)
    denom = total - colsum(w * w) / safe
    return q, denom, colsum(seen)


def task_offsets(n: FloatArray, mean: FloatArray, other_n: FloatArray, other_mean: FloatArray) -> FloatArray:
    """(tasks, models): how much better every model does in each task type than in the others, leaving the
    model itself out: the mean over the other models of ``mean - other_mean``, each weighted by
    ``1 / (1 / n + 1 / other_n)`` (0 where either side holds no evidence)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((n >= 1.0) & (other_n >= 1.0), n * other_n / np.maximum(n + other_n, 1.0), 0.0)
    wd = w * (mean - other_mean)
    rest_w = w.sum(axis=1, keepdims=True) - w
    rest_wd = wd.sum(axis=1, keepdims=True) - wd
    return np.where(rest_w > 0, rest_wd / np.where(rest_w > 0, rest_w, 1.0), 0.0)


def _tau_grid(points: int = TAU_GRID_POINTS) -> tuple[FloatArray, FloatArray]:
    """Points in [0, 1] (0, then geometric from 1e-3) and their trapezoid weights: a uniform prior's mass."""
    u = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, points - 1)])
    du = np.diff(u)
    weight = np.concatenate([[du[0]], du[:-1] + du[1:], [du[-1]]]) / 2.0
    return u, weight


def _posterior_tau2(
    means: FloatArray,
    sampling_var: FloatArray,
    seen: FloatArray,
    group: npt.NDArray[np.intp],
    n_groups: int,
    scale2: FloatArray | None = None,
    draw: FloatArray | None = None,
) -> FloatArray:
    """Posterior mean of ``tau²`` per column of each group of rows (``group``: each row's group index), under
    a uniform prior on ``tau`` in ``[0, sqrt(m (1 - m))]`` (``m`` the group's mean for the model: no
    between-task variance of means in [0, 1] is larger) and the normal random-effects likelihood of the task
    types' means with ``mu`` integrated out (a flat prior), on a grid of ``tau``. Returns (tasks, models).

    One task type with evidence says nothing of ``tau``: the posterior is the prior (mean ``m (1 - m) / 3``);
    two that agree leave it wide (mean about ``m (1 - m) / (2 log(sqrt(m (1 - m) / v)))``, ``v`` their
    sampling variance); from about five on it concentrates where the data put it, as the point estimate does.

    ``scale2`` (groups,): a half-Cauchy prior on ``tau`` with scale ``sqrt(scale2)`` instead (still truncated at
    ``sqrt(m (1 - m))``), density ``1 / (1 + tau² / scale2)``.

    ``draw`` (groups, models) of uniforms in [0, 1): a draw of ``tau²`` from the posterior instead of its mean,
    the grid point where the posterior's cumulative mass first reaches ``draw`` (inverse transform; the grid's
    points are about 25 % apart in ``tau²``).
    """
    u, prior = _tau_grid()
    tasks, models = means.shape
    member = np.zeros((n_groups, tasks))
    member[group, np.arange(tasks)] = 1.0

    def sums(x: FloatArray) -> FloatArray:  # (tasks, g, models) -> (groups, g, models)
        return (member @ x.reshape(tasks, -1)).reshape(n_groups, -1, models)

    n_seen = sums(seen[:, None, :])[:, 0, :]
    grand = sums((seen * means)[:, None, :])[:, 0, :] / np.maximum(n_seen, 1.0)
    upper2 = np.maximum(grand * (1.0 - grand), MIN_WITHIN_VAR)  # (groups, models)
    tau2 = (u * u)[None, :, None] * upper2[:, None, :]  # (groups, g, models)
    var = np.maximum(sampling_var, 1e-12)[:, None, :] + tau2[group]  # (tasks, g, models)
    w = seen[:, None, :] / var
    wy = w * means[:, None, :]
    total = sums(w)
    safe = np.where(total > 0, total, 1.0)
    # sum of w (y - centre)² over the group, centre = sum(w y) / sum(w)
    q = sums(wy * means[:, None, :]) - sums(wy) ** 2 / safe
    loglik = -0.5 * (sums(seen[:, None, :] * np.log(var)) + np.log(safe) + np.maximum(q, 0.0))
    weight = prior[None, :, None]
    if scale2 is not None:
        weight = weight / (1.0 + tau2 / scale2[:, None, None])
    post = np.exp(loglik - loglik.max(axis=1, keepdims=True)) * weight
    if draw is None:
        post_tau2 = (post * tau2).sum(axis=1) / post.sum(axis=1)  # (groups, models)
    else:
        mass = np.cumsum(post, axis=1)
        target = draw[:, None, :] * mass[:, -1:, :]
        index = np.minimum((mass <= target).sum(axis=1), len(u) - 1)  # first point whose mass passes the draw
        post_tau2 = np.take_along_axis(tau2, index[:, None, :], axis=1)[:, 0, :]
    return np.where(n_seen >= 1, post_tau2, 0.0)[group]


@dataclass(frozen=True, eq=False)
class PooledTable:
    """The pooled pseudo-observations of every task type for every model (``prior_a``, ``prior_b``: tasks x
    models, without any base prior); :meth:`row` reads one task type's priors."""

    tasks: Mapping[str, int]
    columns: Mapping[str, int]
    prior_a: FloatArray
    prior_b: FloatArray

    def row(
        self, task: str, names: Sequence[str], base: Mapping[str, tuple[float, float]] | None = None
    ) -> dict[str, tuple[float, float]] | None:
        """``task``'s prior per model of ``names``: ``base`` (default Beta(1, 1)) plus the pooled part; None
        when ``task`` was not in the pooled states."""
        i = self.tasks.get(task)
        if i is None:
            return None
        a, b = self.prior_a[i], self.prior_b[i]
        row: dict[str, tuple[float, float]] = {}
        for m in names:
            a0, b0 = (base or {}).get(m, (1.0, 1.0))
            j = self.columns.get(m)
            row[m] = (a0, b0) if j is None else (a0 + float(a[j]), b0 + float(b[j]))
        return row


def _evidence(states: Mapping[str, TaskState], col: Mapping[str, int]) -> tuple[FloatArray, ...]:
    """(tasks x models) count, sum and sum of squares of quality; states sharing one model list are copied
    with one numpy operation per list."""
    shape = (len(states), len(col))
    n, s, sq = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    by_names: dict[tuple[str, ...], list[int]] = {}
    listed = list(states.values())
    for i, state in enumerate(listed):
        by_names.setdefault(state.names, []).append(i)
    for names, rows in by_names.items():
        cols = np.array([col[m] for m in names], dtype=np.intp)
        stats = np.stack([listed[i].stats for i in rows])  # (k, models, fields)
        scale = np.array([listed[i].scale for i in rows])[:, None]
        where = np.ix_(np.array(rows, dtype=np.intp), cols)
        n[where] = stats[:, :, Q_N] * scale
        s[where] = stats[:, :, Q_SUM] * scale
        sq[where] = stats[:, :, Q_SQ] * scale
    return n, s, sq


def pooled_table(
    states: Mapping[str, TaskState],
    *,
    max_strength: float = DEFAULT_MAX_STRENGTH,
    min_tau2: float = 0.0,
    group_of: Callable[[str], str] | None = None,
    tau2_method: str = DEFAULT_TAU2_METHOD,
    traffic_half: float = DEFAULT_TRAFFIC_HALF,
    shared_df: float = SHARED_TAU2_DF,
    rng: np.random.Generator | None = None,
) -> PooledTable:
    """The pooled pseudo-observations of every task type in ``states`` (see :func:`pooled_priors`). With
    ``group_of`` (state key -> group), each task type pools only with the task types of its own group, as if
    each group were pooled on its own (one numpy pass for all groups). ``tau2_method``: see
    :data:`TAU2_METHODS`. ``traffic_half`` ``h`` > 0 scales each task type's strength by ``h / (h + n)``, ``n``
    the observations it holds over all models (see :data:`DEFAULT_TRAFFIC_HALF`); 0 leaves it unscaled.
    ``shared_df``: ``dl_shared``'s weight of the common ``tau²`` (:data:`SHARED_TAU2_DF`). ``rng``: where the
    methods of :data:`SAMPLED_METHODS` draw from (required by them, unused by the others)."""
    if tau2_method not in TAU2_METHODS:
        raise ValueError(f"unknown tau2_method {tau2_method!r}; known: {', '.join(TAU2_METHODS)}")
    if tau2_method in SAMPLED_METHODS and rng is None:
        raise ValueError(f"tau2_method {tau2_method!r} draws tau²: pass an rng")
    colsum: ColumnSums = _all_rows
    group, n_groups = np.zeros(len(states), dtype=np.intp), 1
    if group_of is not None:
        ids: dict[str, int] = {}
        group = np.array([ids.setdefault(group_of(t), len(ids)) for t in states], dtype=np.intp)
        n_groups = len(ids)
        colsum = _group_sums(group, n_groups)
    col = {m: j for j, m in enumerate(sorted({m for st in states.values() for m in st.names}))}
    n, s, sq = _evidence(states, col)
    finite = np.isfinite(n) & np.isfinite(s) & np.isfinite(sq)
    if not finite.all():  # a corrupt state counts as no evidence: NaN would spread to every other row's prior
        n, s, sq = np.where(finite, n, 0.0), np.where(finite, s, 0.0), np.where(finite, sq, 0.0)
    seen = (n >= 1.0).astype(np.float64)
    safe_n = np.maximum(n, 1.0)
    mean = s / safe_n
    within = np.maximum(sq / safe_n - mean * mean, MIN_WITHIN_VAR)
    # leave one out: task i's prior uses the evidence of the other task types only
    n_seen, s_seen = n * seen, s * seen
    other_n = colsum(n_seen) - n_seen
    other_s = colsum(s_seen) - s_seen
    offset = np.zeros_like(mean)
    if tau2_method in ("dl_offset", "dl_offset_shared"):
        offset = task_offsets(n_seen, mean, other_n, other_s / np.maximum(other_n, 1.0))
    draw = None
    if tau2_method in SAMPLED_METHODS:
        assert rng is not None
        draw = rng.random((n_groups, n.shape[1]))
    if tau2_method in ("posterior", "sampled"):
        tau2 = _posterior_tau2(mean, within / safe_n, seen, group, n_groups, draw=draw)
    elif tau2_method in ("posterior_shared", "sampled_shared", "sampled_thin"):
        common = _common_tau2(*_dl_moments(mean, within / safe_n, seen, colsum))
        scale2 = np.zeros(n_groups)
        scale2[group] = np.broadcast_to(common, n.shape)[:, 0]  # every row of a group holds its group's value
        scale2 = np.maximum(scale2, MIN_SHARED_SCALE2)
        tau2 = _posterior_tau2(mean, within / safe_n, seen, group, n_groups, scale2, draw)
    elif tau2_method in ("dl_shared", "dl_shared_conflict"):
        tau2 = _shared_between_task_variance(mean, within / safe_n, seen, colsum, shared_df)
    elif tau2_method == "dl_offset_shared":
        tau2 = _shared_between_task_variance(mean - offset, within / safe_n, seen, colsum, shared_df)
    else:
        tau2 = _between_task_variance(mean - offset, within / safe_n, seen, colsum)
    tau2 = np.maximum(tau2, min_tau2)
    centre = (other_s + 0.5) / (other_n + 1.0)
    if tau2_method in ("dl_conflict", "dl_shared_conflict"):
        tau2 = np.maximum(tau2, _conflict_tau2(mean, within / safe_n, seen, centre, other_n))
    if tau2_method in ("dl_offset", "dl_offset_shared"):
        centre = np.clip(centre + offset, 0.01, 0.99)
    spread = centre * (1.0 - centre)
    strength = _raw_strength(spread, tau2, max_strength)
    if tau2_method == "dl_k":
        k = np.broadcast_to(colsum(seen), n.shape)
        strength = strength * (k - 1.0) / (k + 1.0)
    strength = np.minimum(np.clip(strength, 0.0, max_strength), other_n)
    if tau2_method == "sampled_thin":
        dl_tau2 = np.maximum(_between_task_variance(mean, within / safe_n, seen, colsum), min_tau2)
        dl = np.minimum(np.clip(_raw_strength(spread, dl_tau2, max_strength), 0.0, max_strength), other_n)
        strength = np.where(n_seen < dl, strength, dl)
    if traffic_half > 0:
        own = n_seen.sum(axis=1, keepdims=True)
        strength = strength * (traffic_half / (traffic_half + own))
    tasks = {t: i for i, t in enumerate(states)}
    return PooledTable(tasks, col, strength * centre, strength * (1.0 - centre))


def _raw_strength(spread: FloatArray, tau2: FloatArray, max_strength: float) -> FloatArray:
    """Pseudo-observations of a Beta whose variance is ``tau²`` (``spread`` = m (1 - m)); ``max_strength`` where
    ``tau²`` is 0 (not yet clipped)."""
    with np.errstate(divide="ignore"):
        return np.where(tau2 > 0, spread / np.where(tau2 > 0, tau2, 1.0) - 1.0, max_strength)


def pooled_priors(
    states: Mapping[str, TaskState],
    base: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    *,
    max_strength: float = DEFAULT_MAX_STRENGTH,
    min_tau2: float = 0.0,
    tau2_method: str = DEFAULT_TAU2_METHOD,
    traffic_half: float = DEFAULT_TRAFFIC_HALF,
    shared_df: float = SHARED_TAU2_DF,
    rng: np.random.Generator | None = None,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per task type, per model: a Beta quality prior ``base + pooled pseudo-observations``.

    ``base`` is, per task type, each model's own prior (the catalog's ``quality_prior``; default Beta(1, 1)).
    Models a task type's state does not know are skipped. ``min_tau2`` floors the between-task variance (less
    pooling); ``tau2_method``: see :data:`TAU2_METHODS`; ``traffic_half``, ``rng``: see :func:`pooled_table`.
    """
    table = pooled_table(
        states,
        max_strength=max_strength,
        min_tau2=min_tau2,
        tau2_method=tau2_method,
        traffic_half=traffic_half,
        shared_df=shared_df,
        rng=rng,
    )
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for t, state in states.items():
        row = table.row(t, state.names, (base or {}).get(t))
        assert row is not None
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
