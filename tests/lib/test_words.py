"""Numbers of things, and how a run ended, in words."""

from __future__ import annotations

from sage.lib.words import counted, ending


def test_one_and_many() -> None:
    assert [counted(n, "worker") for n in (0, 1, 2)] == ["0 workers", "1 worker", "2 workers"]
    assert (
        counted(1, "batch", "batches") == "1 batch"
        and counted(3, "batch", "batches") == "3 batches"
    )


def test_a_run_ends_in_one_of_three_words() -> None:
    assert ending(interrupted=True, stopped_early=False) == "interrupted"
    assert ending(interrupted=False, stopped_early=True) == "stopped early"
    assert ending(interrupted=False, stopped_early=False) == "finished"
