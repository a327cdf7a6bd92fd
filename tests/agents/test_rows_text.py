"""A block's rows' text written by the C extension (``_native.rows_text``) is the Python code's, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute import native
from banditroute.agents import decide

pytestmark = pytest.mark.skipif(
    native.loaded() is None, reason="the C extension is not built or switched off"
)


@pytest.mark.parametrize("seed", range(6))
def test_native_rows_text_is_the_python_text(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        size, k = int(rng.integers(1, 300)), int(rng.integers(1, 7))  # a block has rows
        scale = 10.0 ** rng.integers(-9, 9, size=(size, k))
        z = rng.normal(size=(size, k)) * scale
        z[rng.random((size, k)) < 0.05] = 0.0
        if size and rng.random() < 0.3:
            z = z.T.copy().T  # not C-contiguous
        names = tuple(f'm{j}-"é\\{seed}' for j in range(k))
        means = {name: float(rng.normal()) for name in names}
        heads = [
            bytes(rng.integers(32, 127, size=int(rng.integers(0, 40))).astype(np.uint8)) for _ in range(size)
        ]
        native_text = decide._rows_text(heads, z, names, means)
        monkeypatch.setattr(decide, "_NATIVE_ROWS", None)
        python_text = decide._rows_text(heads, z, names, means)
        monkeypatch.undo()
        assert native_text == python_text


def test_values_that_do_not_fit_the_rows_are_refused() -> None:
    extension = native.loaded()
    assert extension is not None
    heads = [b"a", b"b"]
    assert extension.rows_text(heads, b"1,2,3,4", b"[", [b";"], b"]") == [b"a[1;2]", b"b[3;4]"]
    for values in (b"1,2,3", b"1,2,3,4,5", b""):
        with pytest.raises(ValueError, match="len\\(heads\\) \\* k"):
            extension.rows_text(heads, values, b"[", [b";"], b"]")
    assert extension.rows_text([], b"", b"[", [], b"]") == []
    with pytest.raises(TypeError):
        extension.rows_text([b"a", "b"], b"1,2", b"[", [], b"]")
