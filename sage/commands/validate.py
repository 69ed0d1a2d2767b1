"""`sage validate`: every problem in one run, prerequisites, and the parallelization analysis."""

from __future__ import annotations

from typing import Annotated

import typer

from sage.commands._common import IndexOpt, JsonOpt, emit_json, load_index, minutes, relative
from sage.lib import validation


def command(
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    json: JsonOpt = False,
    index: IndexOpt = None,
) -> int:
    """Check the ticket index and the prerequisites for parallel mode.

    Exit 0 when clean, 1 on errors (with --strict, on warnings too).
    """
    project, idx = load_index(index)
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


def render(report: validation.Report, code: int) -> None:
    typer.echo(f"{relative(report.index.path)}: {len(report.index.tickets)} tickets")
    for problem in report.problems:
        typer.echo(f"  {problem.level}: {problem.message}")
    typer.echo("prerequisites:")
    for check in report.checks:
        mark = "ok " if check.ok else ("!! " if check.level == "error" else "?? ")
        typer.echo(f"  {mark}{check.name}: {check.detail}")
    if report.analysis:
        _render_analysis(report.analysis)
    verdict = "ok" if code == 0 else "FAILED"
    typer.echo(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")


def _render_analysis(a: validation.Analysis) -> None:
    typer.echo("parallelization:")
    typer.echo(f"  ready now: {a.ready_now} of {a.remaining} remaining ({a.parallel_share:.0%})")
    typer.echo(f"  width per level: {' '.join(str(w) for w in a.widths) or '-'}")
    path = " → ".join(a.critical_path) or "-"
    typer.echo(f"  critical path: {minutes(a.critical_minutes)}: {path}")
    typer.echo(f"  total work: {minutes(a.total_minutes)}")
    typer.echo(f"  recommended workers: {a.recommended_workers}")
