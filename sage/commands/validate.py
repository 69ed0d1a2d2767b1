"""`sage validate`: every problem in one run, prerequisites, and the parallelization analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sage.commands._common import IndexOpt, JsonOpt, emit_json, minutes, open_project, relative
from sage.lib import validation
from sage.lib.errors import IndexFileError
from sage.lib.tickets import Problem
from sage.lib.words import counted


def command(
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    json: JsonOpt = False,
    index: IndexOpt = None,
) -> int:
    """Check the ticket index and the prerequisites for parallel mode.

    Exit 0 when clean, 1 on errors (with --strict, on warnings too).
    """
    project = open_project(index)
    try:
        idx = project.ticket_store().load()
    except IndexFileError as exc:
        if not json:
            raise
        emit_json(unreadable(project.index_path, exc))  # a script still gets its report
        typer.echo(f"error: {exc.message}", err=True)
        return 1
    report = validation.validate(idx, project)
    code = report.exit_code(strict)
    if json:
        emit_json(as_dict(report, code))
    else:
        render(report, code)
    return code


def as_dict(report: validation.Report, code: int) -> dict[str, object]:
    return {
        "ok": code == 0,
        "index": str(report.index.path),
        "tickets": len(report.index.tickets),
        "errors": [p.as_dict() for p in report.errors],
        "warnings": [p.as_dict() for p in report.warnings],
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
        "analysis": report.analysis.as_dict() if report.analysis else None,
    }


def unreadable(path: Path, exc: IndexFileError) -> dict[str, object]:
    problem = Problem(level="error", code="unreadable", message=exc.message, hint=exc.hint)
    return {"ok": False, "index": str(path), "tickets": 0, "errors": [problem.as_dict()],
            "warnings": [], "checks": [], "analysis": None}  # fmt: skip


def render(report: validation.Report, code: int) -> None:
    typer.echo(f"{relative(report.index.path)}: {len(report.index.tickets)} tickets")
    for problem in report.problems:
        typer.echo(f"  {problem.level}: {problem.message}")
        if problem.hint:
            typer.echo(f"    hint: {problem.hint}")
    typer.echo("prerequisites:")
    for check in report.checks:
        mark = "ok " if check.ok else ("!! " if check.level == "error" else "?? ")
        typer.echo(f"  {mark}{check.name}: {check.detail}")
    if report.analysis:
        _render_analysis(report.analysis)
    verdict = "ok" if code == 0 else "FAILED"
    typer.echo(
        f"{verdict}: {counted(len(report.errors), 'error')}, {counted(len(report.warnings), 'warning')}"
    )


def _render_analysis(a: validation.Analysis) -> None:
    typer.echo("parallelization:")
    typer.echo(f"  ready now: {a.ready_now} of {a.remaining} remaining ({a.parallel_share:.0%})")
    typer.echo(f"  width per level: {' '.join(str(w) for w in a.widths) or '-'}")
    path = " → ".join(a.critical_path) or "-"
    typer.echo(f"  critical path: {minutes(a.critical_minutes, a.unit)}: {path}")
    typer.echo(f"  total work: {minutes(a.total_minutes, a.unit)}")
    typer.echo(f"  recommended workers: {a.recommended_workers}")
