"""`sage add ID TITLE`: one ticket from the command line, checked before it is written."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sage.commands._common import IndexOpt, open_project, relative, show_problems
from sage.lib import lazy
from sage.lib.errors import UsageError, ValidationFailed

if TYPE_CHECKING:
    from sage.lib import importer, tasklist
else:  # imported on first use: every command (and git hook) starts faster
    importer = lazy.module("sage.lib.importer")
    tasklist = lazy.module("sage.lib.tasklist")


IdArg = Annotated[str, typer.Argument(metavar="ID", help="The new ticket's ID.")]
TitleArg = Annotated[str, typer.Argument(metavar="TITLE", help="What the ticket is about.")]
DepOpt = Annotated[
    list[str] | None,
    typer.Option("--dep", metavar="ID", help="A dependency (repeat, or comma-separate)."),
]
PriorityOpt = Annotated[str, typer.Option("--priority", metavar="P0-P3")]
EstimateOpt = Annotated[
    str | None,
    typer.Option("--estimate", metavar="TIME", help="Minutes, or '1.5 hours', '1h 30m'."),
]
FilesOpt = Annotated[
    list[str] | None,
    typer.Option("--files", metavar="PATH", help="A path it touches (repeat, or comma-separate)."),
]
TypeOpt = Annotated[str, typer.Option("--type", metavar="TYPE")]
CommandOpt = Annotated[
    str | None,
    typer.Option("--command", metavar="CMD", help="The ticket's own argv (no worker needed)."),
]
ParentOpt = Annotated[str | None, typer.Option("--parent", metavar="ID")]


def command(
    ticket_id: IdArg,
    title: TitleArg,
    dep: DepOpt = None,
    priority: PriorityOpt = "P2",
    estimate: EstimateOpt = None,
    files: FilesOpt = None,
    kind: TypeOpt = "implementation",
    run: CommandOpt = None,
    parent: ParentOpt = None,
    index: IndexOpt = None,
) -> int:
    """Add one ticket to the index (UNPROCESSED), refused if its ID is taken or unsafe, or if it
    would give the index an error (an unknown dependency, a cycle, a bad priority): exit 1, and
    nothing is written. Example: sage add AUTH-003 "Logout" --dep AUTH-002 --estimate 30
    """
    entry: dict[str, Any] = {"id": ticket_id, "title": title, "state": "UNPROCESSED",
                             "priority": priority.upper(), "type": kind,
                             "dependencies": _split(dep)}  # fmt: skip
    if estimate is not None:
        entry["estimate_minutes"] = _minutes(estimate)
    optional = {"files": _split(files), "command": shlex.split(run or ""), "parent": parent}
    entry.update({k: v for k, v in optional.items() if v})
    project = open_project(index)
    try:
        warnings = importer.add(project, entry)
    except ValidationFailed as exc:
        show_problems(exc)
        raise
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"added {ticket_id} to {relative(project.index_path)}")
    return 0


def _split(values: list[str] | None) -> list[str]:
    items = (part.strip() for value in values or [] for part in value.split(","))
    return list(dict.fromkeys(item for item in items if item))


def _minutes(text: str) -> float:
    minutes = tasklist.parse_estimate(text)
    if minutes is None:
        raise UsageError(
            f"--estimate {text!r} is not a duration",
            hint="use minutes (30) or '1.5 hours', '1h 30m'",
        )
    return minutes
