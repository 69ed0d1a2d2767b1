"""`sage add ID TITLE`: one ticket from the command line, checked before it is written."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from sage.commands._common import IndexOpt, open_project, relative, show_problems
from sage.lib import importer
from sage.lib.errors import UsageError, ValidationFailed


def command(
    ticket_id: Annotated[str, typer.Argument(metavar="ID", help="The new ticket's ID.")],
    title: Annotated[str, typer.Argument(metavar="TITLE", help="What the ticket is about.")],
    dep: Annotated[
        list[str] | None,
        typer.Option("--dep", metavar="ID", help="A dependency (repeat, or comma-separate)."),
    ] = None,
    priority: Annotated[str, typer.Option("--priority", metavar="P0-P3")] = "P2",
    estimate: Annotated[
        str | None,
        typer.Option("--estimate", metavar="TIME", help="Minutes, or '1.5 hours', '1h 30m'."),
    ] = None,
    files: Annotated[
        list[str] | None,
        typer.Option(
            "--files", metavar="PATH", help="A path it touches (repeat, or comma-separate)."
        ),
    ] = None,
    kind: Annotated[str, typer.Option("--type", metavar="TYPE")] = "implementation",
    run: Annotated[
        str | None,
        typer.Option("--command", metavar="CMD", help="The ticket's own argv (no worker needed)."),
    ] = None,
    parent: Annotated[str | None, typer.Option("--parent", metavar="ID")] = None,
    index: IndexOpt = None,
) -> int:
    """Add one ticket to the index (UNPROCESSED), refused if its ID is taken or unsafe, or if it
    would give the index an error (an unknown dependency, a cycle, a bad priority): exit 1, and
    nothing is written. Example: sage add AUTH-003 "Logout" --dep AUTH-002 --estimate 30
    """
    entry = _entry(ticket_id, title, dep, priority, estimate, files, kind, run, parent)
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


def _entry(
    tid: str,
    title: str,
    deps: list[str] | None,
    priority: str,
    estimate: str | None,
    paths: list[str] | None,
    kind: str,
    run: str | None,
    parent: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": tid, "title": title, "state": "UNPROCESSED",
                             "priority": priority.upper(), "type": kind,
                             "dependencies": _split(deps)}  # fmt: skip
    if estimate is not None:
        entry["estimate_minutes"] = _minutes(estimate)
    optional = {"files": _split(paths), "command": shlex.split(run or ""), "parent": parent}
    entry.update({k: v for k, v in optional.items() if v})
    return entry


def _split(values: list[str] | None) -> list[str]:
    items = (part.strip() for value in values or [] for part in value.split(","))
    return list(dict.fromkeys(item for item in items if item))


def _minutes(text: str) -> float:
    minutes = importer.parse_estimate(text)
    if minutes is None:
        raise UsageError(
            f"--estimate {text!r} is not a duration",
            hint="use minutes (30) or '1.5 hours', '1h 30m'",
        )
    return minutes
