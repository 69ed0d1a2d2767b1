"""`sage init`: create .sage/ with an empty index and a commented config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sage.commands._common import relative
from sage.lib import project as projects


def command(
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> int:
    """Create .sage/ with an empty ticket index and a commented config.toml (nothing else)."""
    root, _ = projects.find_root(Path.cwd())
    made = projects.init(root, force=force)
    for path in made:
        typer.echo(f"created {relative(path)}")
    if not made:
        typer.echo(f"{relative(root / '.sage')} already set up (use --force to overwrite)")
    return 0
