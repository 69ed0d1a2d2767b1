"""`sage import` and `sage add`: tasks merged into the ticket index by ID, checked before the
store writes them (the markdown itself is read by `tasklist`)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sage.lib import config as configuration
from sage.lib import files, tickets
from sage.lib.errors import SageError, UsageError, ValidationFailed
from sage.lib.project import Project
from sage.lib.tasklist import HEADING_ID, SPEC_KIT_ID, Document, Task, read
from sage.lib.tickets import Problem, record_state
from sage.lib.words import counted


@dataclass(frozen=True, slots=True, kw_only=True)
class Merge:
    """What an import did (or, in a dry run, would do) to the index."""

    added: tuple[str, ...] = ()
    updated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # ID → fields changed
    completed: tuple[str, ...] = ()  # checked in the document, now COMPLETED
    kept: Mapping[str, str] = field(default_factory=dict)  # ID → state kept over the document
    unchanged: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()  # in the index, not in the document: kept as they are

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.completed)


def merge(raw: dict[str, Any], document: Document, *, source: str) -> Merge:
    """Merge the document into the raw index by ID. Fields the document states are taken from
    it; every other field (state, history, anything the user or sage added) is kept, and a
    state only moves forward: a checked task becomes COMPLETED, nothing is ever un-done."""
    entries = {e.get("id"): e for e in raw["tickets"] if isinstance(e, dict)}
    found: dict[str, list[str]] = {"added": [], "completed": [], "unchanged": []}
    updated: dict[str, tuple[str, ...]] = {}
    kept: dict[str, str] = {}
    for task in document.tasks:
        entry = entries.get(task.id)
        changes: tuple[str, ...] = ("new",)
        if entry is None:
            entry = _new_entry(task)
            raw["tickets"].append(entry)
            found["added"].append(task.id)
        elif changes := _update(entry, task):
            updated[task.id] = changes
        if _move_state(entry, task, source, kept):
            found["completed"].append(task.id)
        elif not changes:
            found["unchanged"].append(task.id)
    elsewhere = tuple(str(i) for i in entries if i not in {t.id for t in document.tasks})
    return Merge(added=tuple(found["added"]), updated=updated, kept=kept,
                 completed=tuple(found["completed"]), unchanged=tuple(found["unchanged"]),
                 elsewhere=elsewhere)  # fmt: skip


def _move_state(entry: dict[str, Any], task: Task, source: str, kept: dict[str, str]) -> bool:
    """A checked task completes an UNPROCESSED ticket; any other difference keeps the ticket's
    state (and is reported). True when the state moved."""
    state = entry.get("state", "UNPROCESSED")
    if task.done and state == "UNPROCESSED":
        record_state(entry, "COMPLETED", reason=f"checked in {source}")
        return True
    if state != ("COMPLETED" if task.done else "UNPROCESSED"):
        kept[task.id] = state
    return False


def _new_entry(task: Task) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": task.id, "title": task.fields["title"], "state": "UNPROCESSED",
                             "priority": "P2", "type": "implementation"}  # fmt: skip
    entry.update(task.defaults)
    entry.update(task.fields)
    return entry


def _update(entry: dict[str, Any], task: Task) -> tuple[str, ...]:
    changed = tuple(k for k, v in task.fields.items() if entry.get(k) != v)
    entry.update({k: task.fields[k] for k in changed})
    return changed


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    document: Document
    merge: Merge
    index: Path
    written: bool
    id_pattern: str | None = None  # set in config.toml by this import


def run(project: Project, path: Path, *, dry_run: bool = False, open_all: bool = False) -> Result:
    """Import `path` into the project's index: checked first, then written under the lock."""
    document = read(path)
    if open_all:
        tasks = tuple(replace(t, done=False) for t in document.tasks)
        document = replace(document, tasks=tasks)
    index = project.index_path
    before = _current(index)
    after = copy.deepcopy(before)
    preview = merge(after, document, source=path.name)
    if new := new_errors(before, after, index):
        raise _failed(new, path.name)
    if dry_run or not preview.changed:
        return Result(document=document, merge=preview, index=index, written=False)
    if not index.exists():
        files.write_json(index, {"tickets": []})
    store = project.ticket_store()
    done = store.update(lambda raw: _checked_merge(raw, document, index, path.name))
    pattern = adopt_id_pattern(project, store.load().tickets)
    return Result(document=document, merge=done, index=index, written=True, id_pattern=pattern)


def _current(index: Path) -> dict[str, Any]:
    return tickets.load(index).raw if index.exists() else {"tickets": []}


def _checked_merge(raw: dict[str, Any], document: Document, index: Path, source: str) -> Merge:
    before = copy.deepcopy(raw)
    done = merge(raw, document, source=source)
    new = new_errors(before, raw, index)
    if new:
        raise _failed(new, source)
    return done


def new_errors(before: dict[str, Any], after: dict[str, Any], index: Path) -> list[Problem]:
    """Errors `after` has that `before` did not (an index that was already broken stays
    editable: only what a change adds is refused)."""
    old = {p.message for p in _errors(before, index)}
    return [p for p in _errors(after, index) if p.message not in old]


def _errors(raw: dict[str, Any], index: Path) -> list[Problem]:
    from sage.lib import validation  # it pulls in git and the workers: only when checking

    parsed = tickets.parse(json.dumps(raw), index)
    return validation.validate(parsed, analysis=False).errors


def _failed(problems: Sequence[Problem], source: str) -> ValidationFailed:
    first = problems[0].message
    return ValidationFailed(
        f"{source} would give the index {counted(len(problems), 'error')}, first: {first}; "
        "nothing written",
        problems,
        hint=problems[0].hint or "fix the task list (or the index) and import again",
    )


def adopt_id_pattern(project: Project, found: Sequence[tickets.Ticket]) -> str | None:
    """Spec-kit IDs (T001) are not PREFIX-123: when the user has not chosen an ID pattern, set
    one in config.toml that accepts both, so `sage validate` does not warn about every task."""
    if project.config.id_pattern:
        return None
    conventional = re.compile(tickets.ID_PATTERN, re.ASCII)
    odd = [t.id for t in found if not conventional.fullmatch(t.id)]
    families = [f for f in (SPEC_KIT_ID, HEADING_ID) if any(re.fullmatch(f, i) for i in odd)]
    if not odd or not all(any(re.fullmatch(f, i) for f in families) for i in odd):
        return None  # IDs of no known family: `sage validate` warns, and says how to set one
    if len(odd) < len(found):
        families.insert(0, tickets.ID_PATTERN)
    pattern = "|".join(families)
    configuration.set_value(project.root, "tickets", "id_pattern", pattern)
    return pattern


def add(project: Project, entry: dict[str, Any]) -> list[str]:
    """Add one ticket through the store: refused, with nothing written, if its ID is taken or
    unsafe or it would give the index an error. Returns warnings (an unusual ID format)."""
    tid = str(entry["id"])
    reason = tickets.unsafe_id_reason(tid)
    if reason:
        raise UsageError(
            f"ID {tid!r} {reason}: IDs become branch and folder names",
            hint="use letters, digits, '.', '_' and '-', such as AUTH-001",
        )
    index = project.index_path
    if not index.exists():
        files.write_json(index, {"tickets": []})
    store = project.ticket_store()
    store.update(lambda raw: _append(raw, entry, index))
    pattern = project.config.id_pattern
    if re.fullmatch(pattern or tickets.ID_PATTERN, tid, re.ASCII):
        return []
    if pattern:
        return [f"{tid} does not match [tickets] id_pattern {pattern!r}"]
    return [
        f"{tid} does not look like PREFIX-123 (such as AUTH-001): `sage validate` warns about "
        "it; [tickets] id_pattern in .sage/config.toml sets the format you use"
    ]


def _append(raw: dict[str, Any], entry: dict[str, Any], index: Path) -> None:
    tid = entry["id"]
    if any(isinstance(e, dict) and e.get("id") == tid for e in raw["tickets"]):
        raise SageError(
            f"ticket {tid} already exists in {index}",
            hint="pick another ID, or change that ticket in the index (or re-import its list)",
        )
    before = copy.deepcopy(raw)
    raw["tickets"].append(entry)
    if new := new_errors(before, raw, index):
        raise ValidationFailed(f"{tid} not added: {new[0].message}", new, hint=new[0].hint)
