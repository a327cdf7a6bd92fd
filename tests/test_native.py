"""``banditroute.native``: the optional extension found, switched off by the environment, or missing (no broker)."""

from __future__ import annotations

import pytest

from banditroute import native


def test_missing_switched_off_or_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_module", None)  # as installed without a C compiler
    assert native.loaded() is None
    assert native.describe().startswith("not built")
    extension = pytest.importorskip(
        "banditroute._native", reason="the C extension was not built (no compiler)"
    )
    monkeypatch.setattr(native, "_module", extension)
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert native.loaded() is None
    assert native.describe().startswith("built, switched off")
    monkeypatch.delenv(native.DISABLE_ENV)
    assert native.loaded() is extension
    assert native.describe().startswith("on (")
