"""`sage report [RUN]`: a run as one self-contained HTML page; prints its path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sage.commands._common import IndexOpt, checked, open_state, relative
from sage.lib import lazy

if TYPE_CHECKING:
    from sage.lib import history, report
else:  # imported on first use: every command (and git hook) starts faster
    history = lazy.module("sage.lib.history")
    report = lazy.module("sage.lib.report")


Run = Annotated[
    str | None, typer.Argument(metavar="[RUN]", help="Run id, or its start (default: the newest).")
]
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", metavar="FILE", help="Where to write it "
                 "(default: report.html in the run's folder, .git/sage/runs/<run-id>/)."),
]  # fmt: skip


def command(run: Run = None, output: Output = None, index: IndexOpt = None) -> int:
    """Write an HTML page for a run: a timeline of every attempt per worker slot and in the
    commit queue, the ticket graph with final states, and the summary figures.

    The page is self-contained (inline CSS and SVG, no script, nothing fetched): open it in any
    browser, attach it to a ticket, archive it.
    """
    project = open_state(index)
    folder = history.find_run(project, run)
    idx, _ = checked(project)
    live = history.stream_holder(project) is not None and folder == history.run_dirs(project)[0]
    path = report.write(history.load(folder, live=live), idx.tickets, output)
    typer.echo(relative(path.resolve()))
    return 0


def register(app: typer.Typer) -> None:
    app.command("report")(command)
