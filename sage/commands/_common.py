"""Options and helpers every command shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sage.lib import lazy, tickets
from sage.lib import project as projects
from sage.lib.errors import ValidationFailed

if TYPE_CHECKING:
    import networkx as nx

    from sage.lib import legacy
else:  # imported on first use: every command (and git hook) starts faster
    legacy = lazy.module("sage.lib.legacy")

IndexOpt = Annotated[
    str | None,
    typer.Option(
        "--index",
        metavar="PATH",
        help="Ticket index (default: [stream] index in .sage/config.toml, "
        "else .sage/tickets/index.json). Env: SAGE_INDEX.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def open_project(index: str | None, **overrides: Any) -> projects.Project:
    return projects.open_project(Path.cwd(), index=index, overrides=overrides)


def open_state(index: str | None, **overrides: Any) -> projects.Project:
    """The project, for a command that uses run state: what an older sage kept in `.sage/`
    moves to where this one keeps it first (`sage.lib.legacy`), and is said so on stderr."""
    project = open_project(index, **overrides)
    adopt(project)
    return project


def adopt(project: projects.Project) -> None:
    for note in legacy.adopt(project):
        typer.echo(f"note: {note}", err=True)


def load_index(index: str | None) -> tuple[projects.Project, tickets.Index]:
    project = open_project(index)
    return project, project.ticket_store().load()


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def minutes(value: float, unit: str = "minutes") -> str:
    if unit != "minutes":
        return f"{value:g} tickets"
    hours, mins = divmod(round(value), 60)
    return f"{value:g} min ({hours} h {mins:02d} min)" if hours else f"{value:g} min"


def load_valid_graph(index: str | None) -> tuple[projects.Project, tickets.Index, nx.DiGraph]:
    """The project, its index and the ticket graph; an index with any error is refused."""
    project = open_project(index)
    return (project, *checked(project))


def checked(project: projects.Project) -> tuple[tickets.Index, nx.DiGraph]:
    """The index, refused with a pointer to `sage validate` if it has any error, and the graph
    the check built (large indexes: build it once)."""
    from sage.lib import validation

    idx = project.ticket_store().load()
    report = validation.validate(idx, analysis=False)
    validation.require_no_errors(report)
    assert report.graph is not None  # validate always builds it
    return idx, report.graph


def sub_app(name: str, help: str) -> typer.Typer:
    """A command group (`sage hooks …`) set up like the root app."""
    return typer.Typer(
        name=name, help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None
    )


def show_problems(exc: ValidationFailed) -> None:
    """Every problem behind a refusal; the error line itself names the first."""
    if len(exc.problems) > 1:
        for problem in exc.problems:
            typer.echo(f"  error: {getattr(problem, 'message', problem)}", err=True)
