"""Pre-drawn decision blocks: a plan's decisions for one rng, drawn in one go and handed out one per call."""

from __future__ import annotations

import numpy as np

from banditroute.core.models import Choice, Constraints, SampledUtilities
from banditroute.core.plan import FIRST_BLOCK, Plan
from banditroute.core.state import TaskState

MAX_BLOCK = 512
"""Block size cap for up to :data:`MAX_BLOCK_CELLS` / ``MAX_BLOCK`` eligible models (memory: k x 8 bytes of draws
and a shared row per row). The numpy calls of a block cost about as much for 256 rows as for 512: in process the
decide path took 24,278 instructions a request with 512-row blocks against 25,932 with 256 (callgrind,
``bench.decide_path``, three models), and 1,024 rows gave no more (24,444)."""
MAX_BLOCK_CELLS = 4096
"""Draws a block may hold (rows x eligible models): more models get fewer rows, down to :data:`MIN_CAP`."""
MIN_CAP = 256
BLOCK_GROWTH = 4
MAX_CODED_MODELS = 15
"""Up to this many eligible models a row's chosen model and fallback order are coded as one int64 (base k),
so that rows of the same kind are made once."""

__all__ = [
    "BLOCK_GROWTH",
    "FIRST_BLOCK",
    "MAX_BLOCK",
    "MAX_BLOCK_CELLS",
    "MIN_CAP",
    "Block",
    "block_cap",
    "block_for",
]


class Block:
    """``size`` pre-drawn, independent decisions for one plan and one rng; ``choose`` hands out one row per call.

    Row ``i`` holds a utility vector ``z[i]`` drawn from the plan's posterior (``core.sampling``),
    its Thompson winner, the guard/probe coupling already applied with the row's own uniforms, the chosen
    model, its propensity (the plan's target share: the true marginal choice probability) and the fallback
    order (the other eligible models by sampled utility). The state is fixed within a version, so these are
    exactly the draws that successive single calls would make, only taken from the rng in one go.
    """

    __slots__ = (
        "rng",
        "models",
        "policy",
        "constraints",
        "since_s",
        "until_s",
        "names",
        "positions",
        "pos",
        "size",
        "z",
        "rows",
        "static",
        "memo",
    )

    def __init__(self, plan: Plan, rng: np.random.Generator, size: int, state_version: int) -> None:
        self.rng = rng  # held (not just its id) so a recycled id can never pick up these draws
        self.models = plan.models
        self.policy = plan.policy
        self.constraints: Constraints | None = None
        self.since_s = plan.since_s
        self.until_s = plan.until_s
        # the plan's names, not the plan: the plan holds this block, and a cycle would keep every replaced plan
        # and its block (up to MAX_BLOCK rows of tuples) alive until the cyclic collector runs
        self.names = plan.name_tuple
        self.positions = plan.positions
        self.pos = 0
        self.size = size
        k = len(plan.names)
        z = plan.posterior.draw(rng, size)
        self.z = z
        names = plan.name_tuple
        order = np.argsort(-z, axis=1)  # descending sampled utility
        win = plan.posterior.pick(z, rng) if k else np.zeros(size, dtype=np.intp)  # the Thompson winner
        if k == 0:  # only half-open probes are eligible: every row probes
            u_probe = rng.random(size)
            picked = np.full(size, -1, dtype=np.intp)
        elif plan.mixing:
            u = rng.random((size, 3)).T  # row i's three uniforms do not depend on the block's size
            u_probe = u[0]
            keep = u[1] < plan.ratio[win]
            redirect = np.minimum(np.searchsorted(plan.excess_cum, u[2], side="right"), k - 1)
            picked = np.where(keep, win, redirect)
            if plan.probes:
                picked[u_probe < plan.probe_total] = -1
        else:
            picked = win.copy()
            unseen = plan.target[picked] == 0.0  # Monte Carlo never saw this winner: use the estimate
            if unseen.any():
                # one uniform per row, so row i's answer does not depend on the block's size
                u_redo = rng.random(size)[unseen]
                redo = np.searchsorted(np.cumsum(plan.target), u_redo, side="right")
                picked[unseen] = np.minimum(redo, k - 1)
        probe_rows = np.flatnonzero(picked < 0).tolist()
        model_idx = picked.tolist()
        prop = plan.target[np.maximum(picked, 0)].tolist() if k else [0.0] * size
        # fallbacks: the row's order without the chosen model (a probe keeps all k closed models)
        fallback_idx = order[order != picked[:, None]]
        if probe_rows:
            cut = np.cumsum(np.where(picked < 0, k, k - 1))[:-1]
            fallbacks = [tuple(names[i] for i in part.tolist()) for part in np.split(fallback_idx, cut)]
            for r in probe_rows:
                slot = min(int(u_probe[r] / plan.probe_share), len(plan.probes) - 1)
                model_idx[r] = -1 - slot
                prop[r] = plan.probe_share
        elif k <= MAX_CODED_MODELS:
            fallbacks = []  # unused: the rows are made from their distinct kinds
        else:
            lookup = np.array(names, dtype=object)
            fallbacks = list(map(tuple, lookup[fallback_idx.reshape(size, k - 1)].tolist()))
        best = plan.best
        if probe_rows or k > MAX_CODED_MODELS:
            rows = []
            for m, fb, p in zip(model_idx, fallbacks, prop, strict=True):
                model = names[m] if m >= 0 else plan.probes[-1 - m]
                rows.append((model, fb, p, model != best))
        else:
            # a row without a probe is its chosen model and fallback order (its propensity is the model's target
            # share): rows repeat (at most k! kinds), so each kind is made once and shared by its rows
            order_rest = fallback_idx.reshape(size, k - 1)
            codes = picked.astype(np.int64) * k ** (k - 1)
            if k > 1:
                codes += order_rest @ (k ** np.arange(k - 1, dtype=np.int64))  # the order's base-k digits
            _, first, kind = np.unique(codes, return_index=True, return_inverse=True)
            kinds = []
            for r in first.tolist():
                model = names[model_idx[r]]
                kinds.append(
                    (model, tuple([names[j] for j in order_rest[r].tolist()]), prop[r], model != best)
                )
            rows = list(map(kinds.__getitem__, kind.tolist()))
        self.rows = rows
        self.static = (plan.means, plan.filtered, plan.circuit_open, state_version, plan.policy_name)
        self.memo: object = None
        """Free for the block's user (the decide logic keeps the rows' encoded text here); the core never
        reads it."""

    def take(self) -> Choice:
        i = self.pos
        self.pos = i + 1
        model, fallbacks, propensity, explored = self.rows[i]
        means, filtered, circuit_open, version, policy_name = self.static
        choice = _new_choice(Choice)
        choice.__dict__.update(
            {
                "model": model,
                "fallbacks": fallbacks,
                "propensity": propensity,
                "sampled": SampledUtilities(self.names, self.positions, self.z, i),
                "means": means,
                "explored": explored,
                "filtered": filtered,
                "circuit_open": circuit_open,
                "no_eligible": None,
                "state_version": version,
                "policy_name": policy_name,
            }
        )
        return choice


_new_choice = object.__new__


def block_cap(k: int) -> int:
    """The largest block for ``k`` eligible models: :data:`MAX_BLOCK` rows while they hold at most
    :data:`MAX_BLOCK_CELLS` draws, fewer for more models, never under :data:`MIN_CAP`."""
    return max(MIN_CAP, min(MAX_BLOCK, MAX_BLOCK_CELLS // max(k, 1)))


def block_for(state: TaskState, plan: Plan, rng: np.random.Generator) -> Block:
    """The plan's current block for ``rng``, drawing a new one when it is used up or belongs to another rng.

    Block sizes grow FIRST_BLOCK, x BLOCK_GROWTH, ..., :func:`block_cap` per plan, so a state version that serves only
    a few decisions (the usual case when feedback arrives between requests) draws only a few rows.
    """
    block: Block | None = plan.block
    if block is None or block.rng is not rng or block.pos >= block.size:
        block = Block(plan, rng, plan.block_size, state.version)
        plan.block_size = min(block_cap(len(plan.names)), plan.block_size * BLOCK_GROWTH)
        plan.block = block
    return block
