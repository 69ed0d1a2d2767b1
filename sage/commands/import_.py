"""`sage import FILE`: a markdown task list (spec-kit tasks.md, TASK-NNN lists) into the index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sage.commands._common import (
    IndexOpt,
    JsonOpt,
    emit_json,
    open_project,
    relative,
    show_problems,
)
from sage.lib import lazy
from sage.lib.errors import ValidationFailed

if TYPE_CHECKING:
    from sage.lib import importer
else:  # imported on first use: every command (and git hook) starts faster
    importer = lazy.module("sage.lib.importer")


SHOWN = 8  # IDs listed per line before "…"


def command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The markdown task list.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
    ] = False,
    open_all: Annotated[
        bool,
        typer.Option("--all-open", help="Import every task as UNPROCESSED, even [x] ones."),
    ] = False,
    json: JsonOpt = False,
    index: IndexOpt = None,
) -> int:
    """Import a markdown task list into the ticket index; importing again merges by ID.

    spec-kit tasks.md (`- [ ] T012 [P] [US1] Text in path/file.py`): phases run in order, or
    as the document's Phase Dependencies bullets say (`- **User Story 2 (Phase 4)**: Depends on
    Foundational`); in a phase, consecutive [P] tasks are independent and an unmarked task waits
    for what is before it; priorities come from the user-story headings; paths become `files`. TASK-NNN lists
    (`- [ ] **TASK-001: Title**` with `**Dependencies:**`, `**Estimate:**`, `**Files:**`):
    stated dependencies only; priority by phase (P0, P1, …). Headings (`### Stream A: Title`,
    `### TASK-001: Title`) with `**Dependencies**:` / `**Duration**:` lines, when a document has
    no task lines. `[x]` is COMPLETED.

    A re-import takes the fields the document states (title, dependencies, estimate, files, …)
    and keeps everything else: states only move forward, fields you or sage added stay. Nothing
    is written if the result would have errors (exit 1).
    """
    project = open_project(index)
    try:
        result = importer.run(project, file, dry_run=dry_run, open_all=open_all)
    except ValidationFailed as exc:
        show_problems(exc)
        raise
    if json:
        emit_json(as_dict(result, dry_run))
    else:
        render(result, dry_run)
    return 0


def as_dict(r: importer.Result, dry_run: bool) -> dict[str, object]:
    m = r.merge
    return {
        "file": str(r.document.path),
        "form": r.document.form,
        "tasks": len(r.document.tasks),
        "index": str(r.index),
        "dry_run": dry_run,
        "written": r.written,
        "added": list(m.added),
        "updated": {k: list(v) for k, v in m.updated.items()},
        "completed": list(m.completed),
        "kept_state": dict(m.kept),
        "unchanged": list(m.unchanged),
        "not_in_file": list(m.elsewhere),
        "warnings": list(r.document.warnings),
        "id_pattern": r.id_pattern,
    }


def render(r: importer.Result, dry_run: bool) -> None:
    m, doc = r.merge, r.document
    typer.echo(f"{relative(doc.path)}: {len(doc.tasks)} tasks ({doc.form}) → {relative(r.index)}")
    would = "would be " if dry_run else ""
    _ids("would add" if dry_run else "added", m.added)
    _ids(f"{would}updated", [f"{k} ({', '.join(v)})" for k, v in m.updated.items()])
    _ids(f"{would}COMPLETED ([x])", m.completed)
    _ids("state kept", [f"{k} stays {v}" for k, v in m.kept.items()])
    _ids("unchanged", m.unchanged)
    _ids("not in the file (kept)", m.elsewhere)
    for warning in doc.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if r.id_pattern:
        typer.echo(f"set [tickets] id_pattern = {r.id_pattern!r} in .sage/config.toml "
                   "(the imported IDs are not PREFIX-123)")  # fmt: skip
    _verdict(r, dry_run)


def _ids(label: str, items: Sequence[str] | Mapping[str, str]) -> None:
    if items:
        shown = " ".join(list(items)[:SHOWN]) + (" …" if len(items) > SHOWN else "")
        typer.echo(f"  {label}: {len(items)}: {shown}")


def _verdict(r: importer.Result, dry_run: bool) -> None:
    if dry_run:
        typer.echo("dry run: nothing written")
    elif r.written:
        typer.echo("next: sage validate, then sage plan")
    else:
        typer.echo("nothing to change")
