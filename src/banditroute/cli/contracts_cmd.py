"""``banditroute contracts``: regenerate or check the contract files in ``streams/``."""

from __future__ import annotations

from pathlib import Path

import click

from banditroute import contracts as gen


@click.command("contracts")
@click.option("--write", "mode", flag_value="write", help="Regenerate the files from the models.")
@click.option(
    "--check", "mode", flag_value="check", help="Fail and name each file that differs from the models."
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Contracts directory (default: the repository's streams/, found from the current directory).",
)
def contracts(mode: str | None, directory: Path | None) -> None:
    """Generate (--write) or verify (--check) streams/: JSON Schemas, examples, topics and AsyncAPI."""
    if mode is None:
        raise click.UsageError("choose --write or --check")
    if directory is None:
        try:
            directory = gen.find_streams_dir()
        except FileNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
    if mode == "write":
        directory.mkdir(parents=True, exist_ok=True)
        changed = gen.write(directory)
        for rel in changed:
            click.echo(f"wrote {directory / rel}")
        click.echo(f"{len(changed)} file(s) changed in {directory}")
        return
    if not directory.is_dir():
        raise click.ClickException(f"{directory} is not a directory")
    drift = gen.check(directory)
    for rel, problem in drift:
        click.echo(f"drifted: {directory / rel}: {problem}", err=True)
    if drift:
        raise click.ClickException(
            f"{len(drift)} contract file(s) out of date; run `banditroute contracts --write` and commit them"
        )
    click.echo(f"contracts up to date in {directory}")
