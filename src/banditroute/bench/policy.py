"""Micro-benchmark of the policy core against MABWiser's Thompson sampling on the same machine.

One task type with ``models`` arms. Ours: single ``choose`` calls, single ``update`` calls (each returning a new
state), ``choose_batch`` and the encoded state size. MABWiser: ``predict()`` and ``partial_fit()`` with one
decision/reward at a time. Both sides get the same untimed warm-up (``WARMUP`` calls) and then run in the same
loop for ``seconds`` each (or exactly ``iterations`` calls when given).

Extra keys (not replacing the single-call figures): ``update_then_read_per_s`` is ``update`` followed by a read
of ``state.stats`` (which pays the copy-on-write matrix build ``update`` defers); ``update_batch_per_s`` and
``mabwiser_update_batch_per_s`` are outcomes/s when applying ``UPDATE_BATCH`` outcomes per call
(``update_many`` vs ``partial_fit`` with arrays of the same size); ``plan_per_s`` is decision plans built per
second (the slow path a decision takes once per state version).

``pooled_prior_weight`` (``--pooled-prior-weight``): the warm state gets pooled quality priors (100
pseudo-observations per model, centred on the qualities in reverse order, so half of them conflict with the
evidence) and the policy that weight on them (``TaskPolicy.pooled_prior_weight``): 1 is the pooled default, < 1
the robust mixture prior (``core.robust``), whose cost on the decide path this measures.

What py-spy showed (15 models, ``py-spy record -r 2000 -f raw``), and what was done about it:

* ``choose`` at ~6 us/call was ~5 small-array numpy calls (normal draw 16 %, ``*= sd``/``+= mean`` 14 %,
  argsort + tolist 14 %), building the ``sampled`` dict (18 %), the fallbacks list comprehension (10 %),
  ``make_choice(**kwargs)`` (5 %) and the plan lookup (8 %, incl. hashing ``Constraints``). Per-call numpy
  overhead, not arithmetic: now each plan pre-draws blocks of independent decisions for the caller's rng
  (utility rows, winners, guard/probe coupling, fallback order, all vectorised; ``choose.Block``) and a call
  takes the next row, with ``sampled`` a lazy view over the row. Left per call (~1.6 us): the hot-block
  identity checks (~0.2), building the ``Choice`` dict and object (~0.5), the ``SampledUtilities`` view
  (~0.3) and the amortised block draw (~0.6 per row for 256-row blocks).
* ``update`` at ~6.5 us was: ``stats.copy()`` 0.4 us, row ``tolist()`` and write-back 0.9 us, the row math
  indexing a list by global column constants ~2 us, ``replace_state`` ~0.9 us, lru-cached ``_positions``
  re-hashing the names tuple. Now copy-on-write (no matrix copy; the row is one ``struct`` unpack into
  locals), positions cached per names object, no builtin ``min``/``max`` on scalars. Left (~3 us): the
  Python arithmetic of the posterior, change detector, circuit breaker and budget pacing (~2 us, about 60
  bytecode-level statements), building the new state (~0.4 us) and the benchmark loop itself (~0.3 us).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from banditroute.core import (
    ModelSpec,
    Outcome,
    TaskPolicy,
    choose,
    choose_batch,
    encode_state,
    new_state,
    update,
    update_many,
)
from banditroute.core.models import NO_CONSTRAINTS
from banditroute.core.plan import build_plan
from banditroute.core.pooling import with_priors
from banditroute.core.state import TaskState

WARMUP = 2000  # untimed calls before every timed loop, the same for both sides
UPDATE_BATCH = 256


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def _rate(
    step: Callable[[int], object], seconds: float, iterations: int | None, warmup: int = WARMUP
) -> float:
    """Calls per second of ``step(i)``, timed in blocks to keep clock overhead out of the loop.

    ``warmup`` untimed calls first (fewer when ``iterations`` is given, for smoke runs).
    """
    for i in range(warmup if iterations is None else min(warmup, iterations)):
        step(i)
    if iterations is not None:
        start = time.perf_counter()
        for i in range(iterations):
            step(i)
        return iterations / max(time.perf_counter() - start, 1e-9)
    done, block, elapsed = 0, 256, 0.0
    start = time.perf_counter()
    while elapsed < seconds:
        for i in range(done, done + block):
            step(i)
        done += block
        elapsed = time.perf_counter() - start
    return done / elapsed


def synthetic_catalog(n: int) -> tuple[ModelSpec, ...]:
    return tuple(
        ModelSpec(name=f"model-{i:02d}", cost_per_call_usd=0.0005 * (i + 1), latency_ms=300.0 + 40.0 * i)
        for i in range(n)
    )


def _warm_state(models: tuple[ModelSpec, ...], policy: TaskPolicy, quality: np.ndarray, n: int) -> TaskState:
    rng = np.random.default_rng(7)
    state = new_state(models, policy)
    for t in range(n):
        i = t % len(models)
        outcome = Outcome(
            models[i].name,
            quality=float(rng.random() < quality[i]),
            cost_usd=models[i].cost_per_call_usd,
            latency_ms=models[i].latency_ms,
            at_s=float(t),
        )
        state = update(state, models, policy, outcome)
    return state


def bench_task(
    models: int, pooled_prior_weight: float | None = None
) -> tuple[tuple[ModelSpec, ...], TaskPolicy, TaskState]:
    """The measured task type: its synthetic catalog, policy and warm state (with ``pooled_prior_weight``,
    pooled priors in that weight: see the module docstring; 0 puts all of it on the catalog's prior)."""
    catalog = synthetic_catalog(models)
    weight = 1.0 if pooled_prior_weight is None else pooled_prior_weight
    policy = TaskPolicy(lam=10.0, mu=0.0, pooled_prior_weight=weight)
    quality = np.linspace(0.55, 0.85, models)
    state = _warm_state(catalog, policy, quality, max(2000, 100 * models))
    if pooled_prior_weight is not None:
        pooled = {
            m.name: (1.0 + 100.0 * q, 1.0 + 100.0 * (1.0 - q))
            for m, q in zip(catalog, quality[::-1], strict=True)
        }
        state = with_priors(state, pooled)
    return catalog, policy, state


def run_policy_bench(
    models: int = 15,
    seconds: float = 1.0,
    iterations: int | None = None,
    batch: int = 1_000_000,
    pooled_prior_weight: float | None = None,
) -> dict[str, Any]:
    """Measure decisions/s and updates/s for banditroute and MABWiser; see the module docstring."""
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the policy benchmark needs mabwiser: pip install 'banditroute[bench]'") from exc

    catalog, policy, state = bench_task(models, pooled_prior_weight)
    rng = np.random.default_rng(11)
    now = 1_000_000.0
    plan_per_s = _rate(
        lambda i: build_plan(state, catalog, policy, NO_CONSTRAINTS, now), seconds, iterations, warmup=20
    )
    choose(state, catalog, policy, None, rng, now)  # build the cached plan once, as a worker would

    decide = _rate(lambda i: choose(state, catalog, policy, None, rng, now), seconds, iterations)

    rewards = (rng.random(4096) < 0.7).astype(float)
    outcomes = [
        Outcome(
            catalog[i % models].name,
            quality=float(rewards[i]),
            cost_usd=0.001,
            latency_ms=400.0,
            at_s=now + i,
        )
        for i in range(4096)
    ]
    current = [state]

    def one_update(i: int) -> None:
        current[0] = update(current[0], catalog, policy, outcomes[i & 4095])

    updates = _rate(one_update, seconds, iterations)
    current[0] = state

    def update_and_read(i: int) -> None:
        current[0] = update(current[0], catalog, policy, outcomes[i & 4095])
        current[0].stats  # noqa: B018 - the read materialises the copy-on-write matrix

    updates_read = _rate(update_and_read, seconds, iterations)
    batches = [outcomes[i : i + UPDATE_BATCH] for i in range(0, 4096, UPDATE_BATCH)]
    current[0] = state

    def batch_update(i: int) -> None:
        current[0] = update_many(current[0], catalog, policy, batches[i % len(batches)])

    batch_updates = UPDATE_BATCH * _rate(batch_update, seconds, iterations, warmup=20)

    n_batch = batch if iterations is None else max(iterations, 1)
    start = time.perf_counter()
    choose_batch(state, catalog, policy, n_batch, rng, now)
    batched = n_batch / max(time.perf_counter() - start, 1e-9)

    arms = [m.name for m in catalog]
    mab = MAB(arms, LearningPolicy.ThompsonSampling(), seed=11)
    history = [arms[i % models] for i in range(10 * models)]
    mab.fit(history, [float(rng.random() < 0.7) for _ in history])
    mab_decide = _rate(lambda i: mab.predict(), seconds, iterations)
    mab_update = _rate(
        lambda i: mab.partial_fit([arms[i % models]], [rewards[i & 4095]]), seconds, iterations
    )
    batch_arms = [arms[i % models] for i in range(UPDATE_BATCH)]
    mab_batch_updates = UPDATE_BATCH * _rate(
        lambda i: mab.partial_fit(batch_arms, rewards[:UPDATE_BATCH]), seconds, iterations, warmup=20
    )

    return {
        "models": models,
        "decide_per_s": decide,
        "mabwiser_decide_per_s": mab_decide,
        "decide_ratio_vs_mabwiser": decide / mab_decide,
        "update_per_s": updates,
        "mabwiser_update_per_s": mab_update,
        "update_ratio_vs_mabwiser": updates / mab_update,
        "update_then_read_per_s": updates_read,
        "update_batch_per_s": batch_updates,
        "mabwiser_update_batch_per_s": mab_batch_updates,
        "update_batch_ratio_vs_mabwiser": batch_updates / mab_batch_updates,
        "batched_decide_per_s": batched,
        "plan_per_s": plan_per_s,
        "pooled_prior_weight": None if pooled_prior_weight is None else policy.pooled_prior_weight,
        "state_bytes_per_task_type": len(encode_state(state)),
        "machine": machine_info(),
    }
