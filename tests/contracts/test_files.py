"""The checked-in streams/ files match the models, and every example validates and decodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from banditroute.cli import main
from banditroute.codec import DecodeError, decode
from banditroute.events import EVENT_TYPES

STREAMS = Path(__file__).resolve().parents[2] / "streams"


def test_contracts_check_passes_on_checked_in_files() -> None:
    result = CliRunner().invoke(main, ["contracts", "--check", "--dir", str(STREAMS)])
    assert result.exit_code == 0, result.output


def test_contracts_check_names_each_drifted_file(tmp_path: Path) -> None:
    copy = tmp_path / "streams"
    shutil.copytree(STREAMS, copy)
    (copy / "schemas" / "Feedback.json").write_text("{}\n")
    (copy / "examples" / "RoutingRequest.json").unlink()
    (copy / "schemas" / "Old.json").write_text("{}\n")
    result = CliRunner().invoke(main, ["contracts", "--check", "--dir", str(copy)])
    assert result.exit_code != 0
    for name in ("schemas/Feedback.json", "examples/RoutingRequest.json", "schemas/Old.json"):
        assert name in result.output
    result = CliRunner().invoke(main, ["contracts", "--write", "--dir", str(copy)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(main, ["contracts", "--check", "--dir", str(copy)]).exit_code == 0


def test_contracts_without_streams_dir_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["contracts", "--check"])
    assert result.exit_code != 0 and "--dir" in result.output


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_example_validates_against_schema_and_decodes(name: str) -> None:
    schema = json.loads((STREAMS / "schemas" / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    raw = (STREAMS / "examples" / f"{name}.json").read_bytes()
    jsonschema.Draft202012Validator(schema).validate(json.loads(raw))
    decoded = decode(EVENT_TYPES[name], raw)
    assert not isinstance(decoded, DecodeError), decoded


def test_schema_rejects_what_the_codec_rejects() -> None:
    schema = json.loads((STREAMS / "schemas" / "Feedback.json").read_text())
    doc = json.loads((STREAMS / "examples" / "Feedback.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for bad in ({"quality": 1.5}, {"cost_usd": -1}, {"extra": 1}, {"schema_version": 2}, {"model": ""}):
        assert not validator.is_valid({**doc, **bad}), bad
    missing = dict(doc)
    del missing["schema_version"]
    assert not validator.is_valid(missing)


def test_topics_and_asyncapi_reference_existing_schemas() -> None:
    topics = yaml.safe_load((STREAMS / "topics.yaml").read_text())
    names = {t["name"]: t for t in topics["topics"]}
    assert set(names) == {
        f"banditroute.{s}"
        for s in (
            "requests",
            "requests-low",
            "decisions",
            "shadow-decisions",
            "feedback",
            "catalog",
            "config",
            "state",
            "outcomes",
            "deadletter",
        )
    }
    assert names["banditroute.catalog"]["cleanup_policy"] == "compact"
    assert names["banditroute.state"]["cleanup_policy"] == "compact"
    assert names["banditroute.config"]["cleanup_policy"] == "compact"
    api = yaml.safe_load((STREAMS / "asyncapi.yaml").read_text())
    assert api["asyncapi"].startswith("3.")
    for message in api["components"]["messages"].values():
        assert (STREAMS / message["payload"]["$ref"]).is_file()
    for op in api["operations"].values():
        channel = op["channel"]["$ref"].split("/")[-1]
        assert channel in api["channels"]
