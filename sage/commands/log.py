"""`sage log ID [--follow]`: a ticket's newest worker log."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sage.commands._common import IndexOpt, open_state
from sage.lib import logs

Follow = Annotated[
    bool, typer.Option("--follow", "-f", help="Keep printing until the attempt ends (tail -f).")
]
RunOpt = Annotated[
    str | None, typer.Option("--run", metavar="RUN", help="Run id or its start (default: newest).")
]


def command(
    ticket_id: Annotated[str, typer.Argument(metavar="ID", help="The ticket.")],
    follow: Follow = False,
    run: RunOpt = None,
    index: IndexOpt = None,
) -> int:
    """Print the ticket's worker log from the newest run that started it.

    With --follow, keep printing what the worker writes until its attempt ends (or the stream
    stops); Ctrl+C stops following and leaves the worker alone.
    """
    project = open_state(index)
    path = logs.find(project, ticket_id, run)
    if not follow:
        sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
        return 0
    logs.follow(path, lambda: logs.attempt_over(project, path), _write)
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("log")(command)
