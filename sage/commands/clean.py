"""`sage clean [--dry-run]`: remove what runs left behind and no longer need."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sage.commands._common import IndexOpt, adopt, open_project, relative
from sage.lib import lazy

if TYPE_CHECKING:
    from sage.lib import clean, legacy, runs
    from sage.lib.clean import Item
    from sage.lib.project import Project
else:  # imported on first use: every command (and git hook) starts faster
    clean = lazy.module("sage.lib.clean")
    legacy = lazy.module("sage.lib.legacy")
    runs = lazy.module("sage.lib.runs")


DryRun = Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")]
Keep = Annotated[int, typer.Option("--keep-runs", metavar="N", min=1, help="Run folders to keep.")]
Target = Annotated[
    str | None,
    typer.Option("--target", metavar="BRANCH", help="The branch work must be on to count as "
                 "landed (default: [stream] target_branch, else the one checked out)."),
]  # fmt: skip


def command(
    dry_run: DryRun = False,
    keep_runs: Keep = clean.KEEP_RUNS,
    target: Target = None,
    index: IndexOpt = None,
) -> int:
    """Remove ticket branches whose work has landed (also those a recovery or a deferral kept),
    the commit queue's verify worktree, and run folders older than the newest few.

    Each item is listed with why it is safe to remove. A branch with work the target branch does
    not have is never removed (it is listed as kept, with why), nor one queued to land or checked
    out. Refused while a stream or a queue landing runs (--dry-run works then too).
    """
    project = open_project(index, target_branch=target)
    project.require_git()
    branch = runs.target_branch(project, project.config.target_branch)
    if dry_run:
        _say_leftovers(project)
        return _report(clean.survey(project, branch, keep_runs=keep_runs), dry_run=True)
    adopt(project)
    with clean.quiet(project):
        items = clean.survey(project, branch, keep_runs=keep_runs)
        for item in items:
            clean.remove(project, item)
    return _report(items, dry_run=False)


def _say_leftovers(project: Project) -> None:
    found = legacy.leftovers(project)
    if found:
        folders = ", ".join(f".sage/{name}/" for name in found)
        typer.echo(f"note: {folders}: an older sage's run state, which `sage clean` (or any "
                   f"command that uses run state) moves to {project.shown(project.state_dir)}",
                   err=True)  # fmt: skip


def _report(items: list[Item], *, dry_run: bool) -> int:
    verb = "would remove" if dry_run else "removed"
    for item in items:
        label = "kept" if not item.safe else verb
        typer.echo(f"{label:<12}  {item.kind} {_name(item)}: {item.why}")
    gone, kept = sum(i.safe for i in items), sum(not i.safe for i in items)
    if not items:
        typer.echo("nothing to clean")
    elif dry_run:
        typer.echo(
            f"{gone} to remove, {kept} kept (dry run: nothing removed; `sage clean` removes them)"
        )
    else:
        typer.echo(f"{gone} removed, {kept} kept")
    return 0


def _name(item: Item) -> str:
    return item.name if item.kind == "branch" else relative(Path(item.name))


def register(app: typer.Typer) -> None:
    app.command("clean")(command)
