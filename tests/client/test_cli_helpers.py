"""CLI helpers without a broker: --since/--offset parsing, k=v metadata, JSONL validation, output format."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from banditroute.cli import main
from banditroute.cli.catalog_cmd import merged_view
from banditroute.cli.feedback_cmd import parse_feedback_line
from banditroute.cli.output import (
    fmt_cell,
    json_line,
    parse_kv,
    parse_offset,
    parse_since,
    read_jsonl,
    resolve_format,
    split_names,
)
from banditroute.cli.route_cmd import parse_request_line
from banditroute.cli.tail_cmd import make_filter, row_of
from banditroute.client import DefaultRoute, build_request, default_decision
from banditroute.events import ModelCatalogEvent

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("90s", timedelta(seconds=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("1w ago", timedelta(weeks=1)),
    ],
)
def test_parse_since_relative(text: str, delta: timedelta) -> None:
    assert parse_since(text, NOW) == NOW - delta


def test_parse_since_absolute() -> None:
    assert parse_since("2025-01-30T10:00:00Z", NOW) == datetime(2025, 1, 30, 10, tzinfo=UTC)
    assert parse_since("2025-01-30T10:00:00", NOW) == datetime(2025, 1, 30, 10, tzinfo=UTC)
    assert parse_since("2025-01-30T12:00:00+02:00", NOW) == datetime(2025, 1, 30, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="relative time"):
        parse_since("yesterday", NOW)
    with pytest.raises(ValueError):
        parse_since("10x", NOW)


def test_parse_offset_and_kv() -> None:
    assert parse_offset("earliest") == "earliest" and parse_offset("LATEST") == "latest"
    assert parse_offset("42") == 42 and parse_offset("-5") == -5
    with pytest.raises(ValueError):
        parse_offset("start")
    assert parse_kv(["a=1", "b=1.5", "c=true", "d=x=y", "e="]) == {
        "a": 1,
        "b": 1.5,
        "c": True,
        "d": "x=y",
        "e": "",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_kv(["novalue"])
    assert split_names(("a,b", "c")) == ("a", "b", "c") and split_names(()) is None


def test_request_lines_are_filled_and_validated_strictly(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"task_type": "chat"}),
                "",
                "# a comment",
                json.dumps({"task_type": "chat", "request_id": "r2", "tenant": "acme"}),
                "{not json",
                json.dumps(
                    {"task_type": "chat", "constraints": {"max_cost_usd": "5"}}
                ),  # strict: no "5" for 5
                json.dumps(["a list"]),
                json.dumps({"task_type": "chat", "schema_version": 2}),
                json.dumps({"task_type": "chat", "bogus": 1}),
            ]
        )
    )
    requests, errors = read_jsonl(path, parse_request_line)
    assert [r.request_id for r in requests][1] == "r2" and len(requests) == 2
    assert requests[0].schema_version == 1 and requests[0].created_at.tzinfo is not None
    assert [e.line for e in errors] == [5, 6, 7, 8, 9]
    assert "malformed JSON" in errors[0].message
    assert "max_cost_usd" in errors[1].message
    assert "JSON object" in errors[2].message
    assert "unsupported_schema_version" in errors[3].message
    assert "bogus" in errors[4].message


def test_feedback_lines(tmp_path: Path) -> None:
    fb = parse_feedback_line({"decision_id": "d:r1", "model": "m", "quality": 1.0, "cost_usd": 0.0})
    assert fb.request_id == "r1" and fb.idempotency_key == "r1:m"
    with pytest.raises(ValueError, match="request_id"):
        parse_feedback_line({"model": "m", "quality": 1.0, "cost_usd": 0.0})
    with pytest.raises(ValueError, match="quality"):
        parse_feedback_line({"request_id": "r", "model": "m", "cost_usd": 0.0})
    _, errors = read_jsonl(tmp_path / "missing.jsonl", parse_feedback_line)
    assert errors and "cannot read" in errors[0].message


def test_output_format_and_cells() -> None:
    assert resolve_format(None, io.StringIO()) == "json"  # not a terminal

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format(None, Tty()) == "table" and resolve_format("json", Tty()) == "json"
    assert fmt_cell(None) == "-" and fmt_cell(True) == "yes" and fmt_cell(["a", "b"]) == "a, b"
    assert fmt_cell(0.5) == "0.5" and fmt_cell(0.00012) == "0.00012"
    assert fmt_cell(datetime(2025, 1, 1, tzinfo=UTC)) == "2025-01-01 00:00:00.000Z"
    decision = default_decision(build_request("chat", request_id="r1"), DefaultRoute("m"), "timeout")
    line = json.loads(json_line(decision))
    assert line["request_id"] == "r1" and line["is_default_route"] is True


def test_tail_filters() -> None:
    with pytest.raises(ValueError):
        make_filter("feedback", "chat", None, None, None)
    with pytest.raises(ValueError):
        make_filter("dlq", None, "m", None, None)
    decision = default_decision(build_request("chat", tenant="acme", request_id="r1"), DefaultRoute("m"), "x")
    assert make_filter("decisions", "chat", "m", "acme", None)(decision)
    assert not make_filter("decisions", "code", None, None, None)(decision)
    assert not make_filter("decisions", None, None, "other", None)(decision)
    assert row_of("decisions", decision)[4] == "m"


def test_catalog_merged_view() -> None:
    config = {"a": {"model": "a", "lifecycle": "active", "enabled": True, "source": "config"}}
    added = ModelCatalogEvent(
        action="added", model="b", price_in_per_1k_usd=1, price_out_per_1k_usd=2, updated_at=NOW
    )
    retired = ModelCatalogEvent(action="retired", model="a", updated_at=NOW)
    view = {e["model"]: e for e in merged_view(config, {"a": retired, "b": added, "c": None})}
    assert set(view) == {"a", "b"}
    assert view["a"]["lifecycle"] == "retired" and view["a"]["source"] == "catalog+config"
    assert view["b"]["price_out_per_1k_usd"] == 2 and view["b"]["source"] == "catalog"


def test_cli_validation_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["route"])
    assert result.exit_code == 1 and "--task-type" in result.output
    result = runner.invoke(main, ["route", "--task-type", "bad type"])
    assert result.exit_code == 1 and "task_type" in result.output
    result = runner.invoke(main, ["route", "--task-type", "chat", "-m", "novalue"])
    assert result.exit_code == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_type": "chat"}\n{oops\n')
    result = runner.invoke(main, ["route", "--file", str(bad)])
    assert result.exit_code == 1 and "line 2" in result.output and "nothing was sent" in result.output
    result = runner.invoke(main, ["tail", "feedback", "--task-type", "chat"])
    assert result.exit_code == 1
    result = runner.invoke(main, ["tail", "decisions", "--since", "soon"])
    assert result.exit_code == 1
    result = runner.invoke(main, ["tail", "nothing"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["feedback", "--request-id", "r"])
    assert result.exit_code == 1
    result = runner.invoke(main, ["catalog", "add", "m", "--format", "json"])
    assert result.exit_code == 1 and "price" in result.output


def test_state_summary_from_a_prior_state() -> None:
    from banditroute.cli.state_cmd import summarise
    from banditroute.core import ModelSpec, TaskPolicy, new_state

    models = [ModelSpec("a", 0.01, quality_prior=(2.0, 1.0)), ModelSpec("b", 0.001)]
    state = new_state(models, TaskPolicy())
    policy = TaskPolicy(objective="budget", budget_usd_per_min=1.0)
    summary = summarise("acme|chat", state, now_s=0.0, models={"a": {"lifecycle": "canary"}}, policy=policy)
    assert (summary["tenant"], summary["task_type"]) == ("acme", "chat")
    a, b = summary["models"]
    assert a["quality_mean"] == pytest.approx(2 / 3)
    low, high = a["quality_ci90"]
    assert 0 < low < 2 / 3 < high < 1
    assert a["mean_cost_usd"] == pytest.approx(0.01) and a["lifecycle"] == "canary"
    assert a["circuit"] == "closed" and a["observations"] == 0 and a["observation_share"] is None
    assert b["lifecycle"] == "unknown"
    assert summary["spend"]["budget_usd_per_min"] == 1.0
    json.loads(json_line(summary))


def test_bench_percentile() -> None:
    from banditroute.bench.route import percentile

    values = [float(i) for i in range(1, 101)]
    assert (
        percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    )
    assert percentile([3.0], 99) == 3.0
