"""Helpers for stream tests: scripted tickets as tiny Python workers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from sage.lib.project import open_project
from tests.conftest import git, state_dir, ticket, write_index


def py(code: str) -> list[str]:
    """A worker argv running a snippet of Python (no shell)."""
    return [sys.executable, "-c", code]


def writer(name: str, text: str = "x", sleep: float = 0.0, need: str | None = None) -> list[str]:
    check = (
        f"import pathlib,sys; p=pathlib.Path({need!r}); p.exists() or sys.exit('missing '+str(p));"
        if need
        else ""
    )
    return py(
        f"import time,pathlib; {check} time.sleep({sleep}); "
        f"pathlib.Path({name!r}).parent.mkdir(parents=True, exist_ok=True); "
        f"pathlib.Path({name!r}).write_text({text!r})"
    )


def states(repo: Path) -> dict[str, str]:
    """Each ticket's state as sage sees it: the index, with the run's states laid over it."""
    return {t.id: t.state for t in open_project(repo).ticket_store().load().tickets}


def index_data(repo: Path) -> dict[str, Any]:
    """The index as sage sees it (see `states`); `index_file` for the file alone."""
    return open_project(repo).ticket_store().load().raw


def index_file(repo: Path) -> dict[str, Any]:
    return json.loads((repo / ".sage/tickets/index.json").read_text())


def events(repo: Path) -> list[dict[str, Any]]:
    found = sorted((state_dir(repo) / "runs").glob("*/events.jsonl"))
    return [json.loads(line) for path in found for line in path.read_text().splitlines()]


def trailers(repo: Path, branch: str = "main") -> list[str]:
    out = git(repo, "log", "--format=%(trailers:key=Sage-Ticket,valueonly)", branch)
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.fixture
def tickets_repo(repo: Path):
    """Write an index into `repo` (committed, like a real project) and return the repo."""

    def make(entries: list[dict[str, Any]], commit: bool = True) -> Path:
        write_index(repo, entries)
        if commit:
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", "tickets")
        return repo

    return make


__all__ = ["events", "index_data", "index_file", "py", "states", "ticket", "trailers", "writer"]
