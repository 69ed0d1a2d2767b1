"""The live view's counts line: what it says of the ETA, and on what it rests."""

from __future__ import annotations

from sage.commands._progress import counts_line
from sage.lib.tally import Counts


def counts() -> Counts:
    return Counts(ready=1, waiting=2, landing=0, retrying=0, blocked=0, landed=3, deferred=0,
                  total=6)  # fmt: skip


def test_an_eta_from_the_estimates_says_so() -> None:
    line = counts_line(counts(), 65 * 60, guessed=True)
    assert line.endswith("landed 3/6 · eta ~65 min from the estimates")


def test_an_eta_from_timed_attempts_is_plain() -> None:
    assert counts_line(counts(), 4.2).endswith("landed 3/6 · eta ~4s")
    assert "eta" not in counts_line(counts(), None)
