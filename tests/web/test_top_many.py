"""``TopTaskTypes.count_many`` (a polled batch's pairs at once, ``Router._on_decisions``) against ``count`` of each
pair in turn, on generated batches (fixed seed): floods of one-off names that fill the candidate table, window
ends, pinned and named task types, models that are None."""

from __future__ import annotations

import random
from collections import Counter

from banditroute.web.top import TopTaskTypes


def test_counting_a_batch_at_once_is_counting_each_pair_in_turn() -> None:
    rng = random.Random(41)
    one, many = (
        TopTaskTypes(n=3, window_s=5.0, pinned={"chat"}),
        TopTaskTypes(n=3, window_s=5.0, pinned={"chat"}),
    )
    ones: dict[tuple[str, str], int] = {}
    manys: dict[tuple[str, str], int] = {}
    now = 0.0
    for _ in range(400):
        now += rng.choice([0.0, 0.01, 0.5, 2.0])
        batch = [
            (
                rng.choice(
                    [
                        "chat",
                        "code",
                        "sum",
                        "x",
                        f"flood-{rng.getrandbits(32)}",
                        f"flood-{rng.getrandbits(32)}",
                    ]
                ),
                rng.choice(["m1", "m2", None, ""]),
            )
            for _ in range(rng.randint(0, 60))
        ]
        pairs = Counter(batch).items()
        for (task_type, model), n in pairs:
            one.count(ones, task_type, model or "<none>", now, n)
        many.count_many(manys, pairs, now)
        assert manys == ones
        assert (many.named, many._counts, many._window_end) == (one.named, one._counts, one._window_end)
    assert one.named and ("other", "m1") in ones  # the flood folded, the table filled and dropped
