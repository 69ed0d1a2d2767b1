"""Fixtures for the CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURE


@pytest.fixture
def example(repo: Path) -> Path:
    """`repo` with the par-001 example as its ticket index."""
    target = repo / ".sage" / "tickets" / "index.json"
    target.parent.mkdir(parents=True)
    shutil.copy(FIXTURE, target)
    return repo
