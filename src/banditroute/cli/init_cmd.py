"""``banditroute init [DIR]``: write a commented starting configuration to edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from banditroute.cli.output import EXIT_INVALID, fail


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("config"))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(folder: Path, force: bool) -> None:
    """Write a commented starting configuration to FOLDER (default ./config): models.yaml (the catalog),
    policy.yaml (objectives and the reward wait window), rules.yaml and scenarios/default.yaml (a synthetic
    world for `banditroute demo` and `simulate`). A worker started next to it reads it; elsewhere set
    BANDITROUTE_CONFIG_DIR. Existing files are kept unless --force.
    """
    from banditroute.config import PACKAGED_CONFIG

    sources = sorted(p for p in PACKAGED_CONFIG.rglob("*.yaml") if p.is_file())
    targets = [(src, folder / src.relative_to(PACKAGED_CONFIG)) for src in sources]
    existing = [str(dst) for _, dst in targets if dst.exists()]
    if existing and not force:
        fail(f"not overwriting {', '.join(existing)} (use --force to replace them)", EXIT_INVALID)
    try:
        for src, dst in targets:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    except OSError as exc:
        fail(f"cannot write {folder}: {exc.strerror or exc} ({exc.filename or folder})", EXIT_INVALID)
    for _, dst in targets:
        click.echo(f"wrote {dst}")
    hint = (
        "" if folder.resolve() == (Path.cwd() / "config").resolve() else f"BANDITROUTE_CONFIG_DIR={folder} "
    )
    click.echo(f"next: {hint}banditroute worker   (edit the files; a running worker reloads them within 5 s)")
