"""Shared pieces of the client commands: global options, output (rich tables or JSON lines), exit codes and
parsing of ``--since``, ``k=v`` metadata and JSONL files.

Output: a rich table when stdout is a terminal, JSON lines (one object per line) when it is not or with
``--format json``. Exit codes: 0 ok, 1 invalid input, 2 click usage error, 3 timeout or Kafka unavailable.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click
import orjson
from pydantic import BaseModel, ValidationError

from banditroute.settings import Settings

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class Ctx:
    """What every client command needs: the settings (with CLI overrides) and the output format."""

    settings: Settings
    fmt: str

    @property
    def json(self) -> bool:
        return self.fmt == "json"


def resolve_format(fmt: str | None, stream: IO[str] | None = None) -> str:
    """``table``/``json`` as asked; by default ``table`` on a terminal and ``json`` otherwise."""
    if fmt:
        return fmt
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "table" if isatty is not None and isatty() else "json"


def make_ctx(bootstrap: str | None, topic_prefix: str | None, fmt: str | None) -> Ctx:
    try:
        settings = Settings.model_validate({})
    except ValidationError as exc:
        fail(f"invalid BANDITROUTE_* settings: {exc}", EXIT_INVALID)
    updates: dict[str, Any] = {}
    if bootstrap:
        updates["kafka_bootstrap"] = bootstrap
    if topic_prefix:
        updates["topic_prefix"] = topic_prefix
    return Ctx(settings.model_copy(update=updates) if updates else settings, resolve_format(fmt))


def client_options(func: F) -> F:
    """Add ``--bootstrap``, ``--topic-prefix`` and ``--format``; the command receives ``ctx: Ctx``."""

    @click.option(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: BANDITROUTE_KAFKA_BOOTSTRAP or 127.0.0.1:9092).",
    )
    @click.option(
        "--topic-prefix",
        default=None,
        help="Topic prefix (default: BANDITROUTE_TOPIC_PREFIX or banditroute).",
    )
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default=None,
        help="table for people, json for JSON lines (default: table on a terminal, json otherwise).",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any, bootstrap: str | None, topic_prefix: str | None, fmt: str | None, **kwargs: Any
    ) -> Any:
        return func(*args, ctx=make_ctx(bootstrap, topic_prefix, fmt), **kwargs)

    return wrapper  # type: ignore[return-value]


# -- errors ---------------------------------------------------------------------------------------------------


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Kafka trouble exits 3, LookupError (missing topic) exits 3 too."""
    from banditroute.kafka.topics import KafkaUnavailable

    try:
        return asyncio.run(coro)
    except KafkaUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except TimeoutError as exc:
        fail(f"timed out: {exc}" if str(exc) else "timed out talking to Kafka", EXIT_UNAVAILABLE)
    except LookupError as exc:
        fail(str(exc.args[0]) if exc.args else str(exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        sys.exit(130)


def validation_message(exc: ValidationError) -> str:
    from banditroute.codec import describe_validation_error

    return describe_validation_error(exc)


# -- output ---------------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return obj


def json_line(obj: Any) -> str:
    return orjson.dumps(to_jsonable(obj), default=str).decode()


def emit_json(obj: Any) -> None:
    """Print one JSON object on one line (flushed, so pipes see it at once)."""
    click.echo(json_line(obj))
    sys.stdout.flush()


def fmt_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return (
            f"{value:.4g}"
            if abs(value) < 1e-3 or abs(value) >= 1e6
            else f"{value:,.4f}".rstrip("0").rstrip(".")
        )
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    return str(value)


def make_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(fmt_cell(v) for v in row))
    return table


def console() -> Any:
    from rich.console import Console

    return Console()


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    console().print(make_table(title, columns, rows))


def print_record(obj: Any, ctx: Ctx, title: str | None = None) -> None:
    """A single object: a JSON line, or a two-column field/value table."""
    if ctx.json:
        emit_json(obj)
        return
    data = to_jsonable(obj)
    rows = [(k, v) for k, v in _flatten(data)]
    print_table(title, ["field", "value"], rows)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping) and value and key != "metadata" and key != "filtered":
            yield from _flatten(value, f"{prefix}{key}.")
        elif key == "candidates" and isinstance(value, list) and value and isinstance(value[0], Mapping):
            yield (
                prefix + key,
                ", ".join(f"{c.get('model')} ({c.get('sampled_utility', 0):.3f})" for c in value),
            )
        else:
            yield prefix + key, value


# -- parsing --------------------------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_RELATIVE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*)+(?:ago)?\s*$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``1h30m``, ``2d``, ``90s`` (before now) or an ISO 8601 time (naive means UTC) -> UTC time."""
    now = now or datetime.now(UTC)
    if _RELATIVE.match(text):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        return now - timedelta(seconds=seconds)
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a relative time such as 10m, 2h, 1d or an ISO time such as "
            "2025-01-31T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def parse_offset(text: str) -> str | int:
    """``earliest``, ``latest`` or an integer offset (negative: that many before the end)."""
    lowered = text.strip().lower()
    if lowered in ("earliest", "latest"):
        return lowered
    try:
        return int(lowered)
    except ValueError:
        raise ValueError(f"--offset {text!r}: give earliest, latest or an integer") from None


def parse_scalar(value: str) -> str | int | float | bool:
    """Metadata values: ``true``/``false``, integers and finite numbers are typed; anything else a string."""
    if value in ("true", "false"):
        return value == "true"
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", value):
        return float(value)
    return value


def parse_kv(items: Sequence[str], what: str = "--metadata") -> dict[str, Any]:
    """``["k=v", ...]`` -> dict, values typed by :func:`parse_scalar`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = parse_scalar(value)
    return out


def split_names(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Repeated and/or comma-separated names -> tuple (None when none given)."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",")]
    return tuple(n for n in names if n)


@dataclass(frozen=True)
class JsonlError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_jsonl(path: Path | str, parse: Callable[[Any], T]) -> tuple[list[T], list[JsonlError]]:
    """Parse every non-blank line of ``path`` (``-`` is stdin) with ``parse``; collect errors by line number."""
    if str(path) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            return [], [JsonlError(0, f"cannot read {path}: {exc.strerror or exc}")]
        except UnicodeDecodeError as exc:
            return [], [JsonlError(0, f"{path} is not UTF-8: {exc}")]
    items: list[T] = []
    errors: list[JsonlError] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(JsonlError(number, f"malformed JSON: {exc}"))
            continue
        if not isinstance(data, dict):
            errors.append(JsonlError(number, f"expected a JSON object, got {type(data).__name__}"))
            continue
        try:
            items.append(parse(data))
        except ValidationError as exc:
            errors.append(JsonlError(number, validation_message(exc)))
        except (ValueError, TypeError) as exc:
            errors.append(JsonlError(number, str(exc)))
    return items, errors


def report_jsonl_errors(errors: Sequence[JsonlError], path: Path | str, limit: int = 20) -> NoReturn:
    for err in errors[:limit]:
        click.echo(f"{path}: {err}", err=True)
    if len(errors) > limit:
        click.echo(f"{path}: ... and {len(errors) - limit} more", err=True)
    fail(f"{len(errors)} invalid line(s) in {path}; nothing was sent", EXIT_INVALID)


__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Ctx",
    "JsonlError",
    "client_options",
    "emit_json",
    "fail",
    "fmt_cell",
    "json_line",
    "make_ctx",
    "parse_kv",
    "parse_offset",
    "parse_scalar",
    "parse_since",
    "print_record",
    "print_table",
    "read_jsonl",
    "resolve_format",
    "run_async",
    "split_names",
]
