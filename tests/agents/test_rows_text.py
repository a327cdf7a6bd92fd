"""The block rows' text (``agents.decide._rows_text``): each row's head, then its candidates as ``orjson.dumps``
writes the decision dict's ``candidates`` list, byte for byte, for any number of models and rows."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from banditroute.agents.decide import _rows_text


def expected(head: bytes, row: np.ndarray, names: tuple[str, ...], means: dict[str, float]) -> bytes:
    candidates = [
        {"model": name, "sampled_utility": float(value), "mean_utility": means[name]}
        for name, value in zip(names, row.tolist(), strict=True)
    ]
    return head + b',"candidates":' + orjson.dumps(candidates)


@pytest.mark.parametrize("seed", range(6))
def test_rows_text_is_the_dumps_of_each_rows_candidates(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k, size in ((1, 1), (1, 7), (2, 1), (3, 256), (4, 33), (15, 64), (16, 5)):
        z = rng.beta(0.5, 0.5, size=(size, k)) - 0.3 * seed  # negative utilities too
        z[0, 0] = 1e-300 if seed % 2 else -2.5e-7  # exponent forms
        if seed % 3 == 0:
            z = np.asfortranarray(z)  # the block's draws need not be C-ordered
        names = tuple(f'm{j}"\\é' for j in range(k))  # text that JSON escapes
        means = {name: float(rng.normal()) for name in names}
        heads = [b'"model":"h%d"' % (i % 3) for i in range(size)]
        got = _rows_text(heads, z, names, means)
        assert got == [expected(h, z[i], names, means) for i, h in enumerate(heads)]
