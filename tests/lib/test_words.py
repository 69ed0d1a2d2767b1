"""Numbers of things, in words."""

from __future__ import annotations

from sage.lib.words import counted


def test_one_and_many() -> None:
    assert [counted(n, "worker") for n in (0, 1, 2)] == ["0 workers", "1 worker", "2 workers"]
    assert (
        counted(1, "batch", "batches") == "1 batch"
        and counted(3, "batch", "batches") == "3 batches"
    )
