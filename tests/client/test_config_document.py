"""The config-topic document: built from the three files, validated like them, versioned into decisions."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from banditroute.agents.decide import DecideLogic
from banditroute.config import (
    CONFIG_FILES,
    PACKAGED_CONFIG,
    ConfigError,
    Registry,
    RouterConfig,
    config_document,
    read_document,
)
from banditroute.messages import build_request
from banditroute.routing import StateView


def _texts() -> dict[str, str]:
    return {n: (PACKAGED_CONFIG / f"{n}.yaml").read_text() for n in CONFIG_FILES}


def test_a_pushed_document_replaces_the_folder_and_names_its_version() -> None:
    registry = Registry(RouterConfig.load(PACKAGED_CONFIG), PACKAGED_CONFIG)
    logic = DecideLogic(registry, StateView(), np.random.default_rng(1))
    before = logic.decide(build_request("chat"))["policy"]["version"]
    assert before.startswith("files-") and before == RouterConfig.load(PACKAGED_CONFIG).version
    texts = _texts()
    texts["rules"] = "rules:\n  - {name: pin-small, pin: small-fast}\n"
    assert registry.apply_document(config_document(texts, 7, "me@host", "2026-01-01T00:00:00Z")) == 7
    decision = logic.decide(build_request("chat"))
    assert decision["policy"]["version"] == "config-v7"
    assert decision["model"] == "small-fast" and decision["reasons"]["rules"] == ["pin-small"]
    assert registry.config_dir is None  # the folder is no longer watched: the topic wins
    assert not registry.reload_if_changed()


def test_invalid_documents_are_refused_with_the_reason() -> None:
    bad = _texts()
    bad["models"] = "models: [{name: x}]\n"
    with pytest.raises(ConfigError, match="config topic v2: models.yaml"):
        read_document(config_document(bad, 2, "me", "now"))
    with pytest.raises(ConfigError, match="not JSON"):
        read_document(b"{nope")
    with pytest.raises(ConfigError, match="integer version"):
        read_document(orjson.dumps({"files": {}, "version": "1"}))
    with pytest.raises(ConfigError, match="unknown configuration files"):
        config_document({"extra": ""}, 1, "me", "now")
    registry = Registry(RouterConfig.load(PACKAGED_CONFIG))
    with pytest.raises(ConfigError):
        registry.apply_document(config_document(bad, 3, "me", "now"))
    assert registry.snapshot.config_version.startswith("files-")  # the configuration in use stays
