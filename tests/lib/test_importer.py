"""The merge into the index: states only move forward, fields are kept; the seeds' graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.lib import config, importer, tasklist, tickets
from sage.lib import graph as dag
from tests.conftest import FIXTURE
from tests.lib.test_tasklist import TASK_LIST, parse, seed


def merged(raw: dict[str, Any], text: str) -> importer.Merge:
    return importer.merge(raw, parse(text), source="tasks.md")


def test_merge_adds_then_keeps_states_and_fields() -> None:
    raw: dict[str, Any] = {"tickets": []}
    first = merged(raw, TASK_LIST)
    assert first.added == ("TASK-001", "TASK-002", "TASK-003")
    assert first.completed == ("TASK-002",)
    entries = {e["id"]: e for e in raw["tickets"]}
    assert entries["TASK-002"]["state"] == "COMPLETED"
    assert entries["TASK-002"]["state_history"][0]["reason"] == "checked in tasks.md"
    entries["TASK-001"]["state"] = "DEFERRED"  # sage deferred it
    entries["TASK-001"]["priority"] = "P3"  # the user changed what the list did not state
    entries["TASK-003"]["notes"] = "mine"
    again = merged(raw, TASK_LIST.replace("Third", "Third, renamed"))
    assert again.added == () and again.updated == {"TASK-003": ("title",)}
    assert again.kept == {"TASK-001": "DEFERRED"}
    assert entries["TASK-001"]["state"] == "DEFERRED" and entries["TASK-001"]["priority"] == "P3"
    assert entries["TASK-003"]["notes"] == "mine"
    assert entries["TASK-003"]["title"] == "Third, renamed"


def test_unchecking_never_undoes_a_completed_ticket() -> None:
    raw: dict[str, Any] = {"tickets": []}
    merged(raw, TASK_LIST)
    result = merged(raw, TASK_LIST.replace("[x]", "[ ]"))
    assert result.kept == {"TASK-002": "COMPLETED"} and not result.changed
    assert raw["tickets"][1]["state"] == "COMPLETED"


def test_tickets_not_in_the_document_stay() -> None:
    raw: dict[str, Any] = {"tickets": [{"id": "AUTH-001", "title": "Mine"}]}
    result = merged(raw, TASK_LIST)
    assert result.elsewhere == ("AUTH-001",) and raw["tickets"][0] == {"id": "AUTH-001",
                                                                      "title": "Mine"}  # fmt: skip


def as_index(doc: tasklist.Document, *, open_all: bool = False) -> tickets.Index:
    raw: dict[str, Any] = {"tickets": []}
    importer.merge(raw, doc, source="seed")
    if open_all:
        for entry in raw["tickets"]:
            entry["state"] = "UNPROCESSED"
    return tickets.parse(json.dumps(raw), Path("index.json"))


def test_seed_003_is_the_par_001_graph() -> None:
    imported = as_index(tasklist.read(seed("003")), open_all=True)
    fixture = tickets.load(FIXTURE)
    shape = [(t.id, t.title, t.dependencies, t.estimate_minutes, t.priority)
             for t in fixture.tickets]  # fmt: skip
    assert [(t.id, t.title, t.dependencies, t.estimate_minutes, t.priority)
            for t in imported.tickets] == shape  # fmt: skip
    graph = dag.build(imported.tickets)
    path = dag.critical_path(graph, {t.id: t.weight for t in imported.tickets})
    assert path.minutes == 220
    assert path.tickets[:3] == ("TASK-001", "TASK-002", "TASK-004")
    raw = {e["id"]: e for e in imported.raw["tickets"]}
    assert raw["TASK-001"]["files"] == [".sage/lib/parallel-scheduler.sh"]


@pytest.mark.parametrize(
    ("prefix", "form", "count"),
    [("000", "spec-kit", 35), ("001", "spec-kit", 37), ("002", "spec-kit", 42),
     ("003", "task-list", 29), ("004", "headings", 7)],
)  # fmt: skip
def test_every_seed_imports_without_errors(prefix: str, form: str, count: int) -> None:
    doc = tasklist.read(seed(prefix))
    index = as_index(doc)
    graph = dag.build(index.tickets)
    assert index.errors == [] and dag.problems(index.tickets, graph) == []
    assert (doc.form, len(index.tickets)) == (form, count)


def test_set_value_keeps_the_comments(tmp_path: Path) -> None:
    path = tmp_path / config.CONFIG_PATH
    path.parent.mkdir(parents=True)
    path.write_text(config.TEMPLATE)
    config.set_value(tmp_path, "tickets", "id_pattern", tasklist.SPEC_KIT_ID)
    assert config.load(tmp_path).id_pattern == tasklist.SPEC_KIT_ID
    assert path.read_text().startswith(config.TEMPLATE.split("[tickets]")[0])


def test_set_value_adds_a_section_an_old_config_lacks(tmp_path: Path) -> None:
    path = tmp_path / config.CONFIG_PATH
    path.parent.mkdir(parents=True)
    path.write_text("[stream]\nretries = 1\n")
    config.set_value(tmp_path, "tickets", "id_pattern", "T[0-9]+|it's")
    loaded = config.load(tmp_path, environ={})
    assert (loaded.retries, loaded.id_pattern) == (1, "T[0-9]+|it's")


def render(entries: list[dict[str, Any]]) -> str:
    """The index as a TASK-NNN list (what an export would write)."""
    out = ["### Phase 1: All", ""]
    for e in entries:
        mark = "x" if e["state"] == "COMPLETED" else " "
        out.append(f"- [{mark}] **{e['id']}: {e['title']}**")
        out.append(f"  - **Estimate:** {e['estimate_minutes']:g} minutes")
        out.append(f"  - **Dependencies:** {', '.join(e['dependencies']) or 'None'}")
        if e.get("files"):
            out.append(f"  - **Files:** {', '.join(f'`{f}`' for f in e['files'])}")
        out.append("")
    return "\n".join(out)


@st.composite
def backlogs(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=12))
    ids = [f"TASK-{n:03d}" for n in range(1, count + 1)]
    words = st.text(st.sampled_from("abcdefghij XYZ"), min_size=1, max_size=12).map(str.strip)
    entries = []
    for i, tid in enumerate(ids):
        entries.append({
            "id": tid,
            "title": draw(words.filter(bool)),
            "state": draw(st.sampled_from(["UNPROCESSED", "COMPLETED"])),
            "dependencies": sorted(draw(st.sets(st.sampled_from(ids[:i]))) if i else []),
            "estimate_minutes": draw(st.integers(min_value=1, max_value=600)),
            "files": draw(st.lists(st.sampled_from(["a.py", "src/b.py", "docs/"]), unique=True)),
        })  # fmt: skip
    return entries


@settings(max_examples=60, deadline=None)
@given(backlogs())
def test_import_export_import_is_stable(entries: list[dict[str, Any]]) -> None:
    raw: dict[str, Any] = {"tickets": []}
    merged(raw, render(entries))
    keys = ("id", "title", "state", "dependencies", "estimate_minutes")
    assert [{k: e[k] for k in keys} for e in raw["tickets"]] == [
        {k: e[k] for k in keys} for e in entries
    ]
    assert [e.get("files", []) for e in raw["tickets"]] == [e["files"] for e in entries]
    again = merged(raw, render(raw["tickets"]))
    assert not again.changed and len(again.unchanged) == len(entries)
