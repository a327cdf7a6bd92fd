"""``banditroute config push|show``: the routing configuration on the compacted ``<prefix>.config`` topic.

``push`` validates ``models.yaml``, ``policy.yaml`` and ``rules.yaml`` of a folder exactly as a worker would,
then publishes them as one document with the next version number; every worker and local-mode client applies
it like a file edit (and stops watching its config folder, which stays the bootstrap default). Decisions record
the version as ``policy.version`` (``config-v<N>``; ``files-<hash>`` for configuration read from files).
"""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from banditroute.cli.output import Ctx, client_options, emit_json, fail, print_record, run_async


async def latest_document(ctx: Ctx) -> dict[str, Any] | None:
    """The newest document on the config topic (None when it holds none or does not exist)."""
    from banditroute.kafka.topics import read_topic

    latest: dict[str, Any] | None = None
    try:
        async for record in read_topic(ctx.settings, ctx.settings.topic("config")):
            if record.value is not None:
                doc = orjson.loads(record.value)
                if isinstance(doc, dict) and (latest is None or doc.get("version", 0) >= latest["version"]):
                    latest = doc
    except LookupError:  # no config topic yet
        return None
    return latest


@click.group()
def config() -> None:
    """The routing configuration on the config topic: push a folder, show what is there."""


@config.command("push")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("config"))
@click.option("--dry-run", is_flag=True, help="Validate only; publish nothing.")
@client_options
def push(directory: Path, dry_run: bool, ctx: Ctx) -> None:
    """Validate DIRECTORY's models.yaml, policy.yaml and rules.yaml (default ./config) and publish them as the
    next version. Exits 1 when invalid (nothing published), 3 when Kafka cannot be reached."""
    from banditroute.config import CONFIG_FILES, CONFIG_KEY, ConfigError, RouterConfig, config_document

    try:
        RouterConfig.load(directory)
        texts = {
            n: p.read_text(encoding="utf-8") for n in CONFIG_FILES if (p := directory / f"{n}.yaml").exists()
        }
    except (ConfigError, OSError) as exc:
        fail(f"configuration not valid, nothing published: {exc}")
    if dry_run:
        click.echo(f"{directory}: valid ({', '.join(f'{n}.yaml' for n in texts)})")
        return

    async def run() -> int:
        from banditroute.client import ensure_topics
        from banditroute.kafka.client_io import produce_records
        from banditroute.kafka.topics import KafkaUnavailable

        await ensure_topics(ctx.settings, ["config"])
        current = await latest_document(ctx)
        version = int(current["version"]) + 1 if current else 1
        by = f"{getpass.getuser()}@{socket.gethostname()}"[:128]
        raw = config_document(texts, version, by, datetime.now(UTC).isoformat())
        try:
            await produce_records(ctx.settings, ctx.settings.topic("config"), [(CONFIG_KEY, raw)])
        except Exception as exc:  # aiokafka's errors: broker unreachable or refusing
            raise KafkaUnavailable(f"could not publish to {ctx.settings.topic('config')}: {exc!r}") from exc
        return version

    try:
        version = run_async(run())
    except ConfigError as exc:
        fail(str(exc))
    result = {
        "topic": ctx.settings.topic("config"),
        "version": version,
        "policy_version": f"config-v{version}",
    }
    if ctx.json:
        emit_json(result)
    else:
        click.echo(f"published {directory} as version {version} to {result['topic']}")


@config.command("show")
@click.option(
    "--file", "which", type=click.Choice(["models", "policy", "rules"]), help="Print one file only."
)
@client_options
def show(which: str | None, ctx: Ctx) -> None:
    """Print the newest configuration on the config topic. Exits 1 when the topic holds none."""
    doc = run_async(latest_document(ctx))
    if doc is None:
        fail(f"no configuration on {ctx.settings.topic('config')} (workers use their config folder)")
    files: dict[str, str] = doc.get("files") or {}
    if which is not None:
        click.echo(files.get(f"{which}.yaml", ""), nl=False)
        return
    if ctx.json:
        emit_json(doc)
        return
    print_record({k: doc.get(k) for k in ("version", "pushed_by", "pushed_at")}, ctx, "config topic")
    for name, text in files.items():
        click.echo(f"\n# --- {name} " + "-" * 60)
        click.echo(text, nl=False)
