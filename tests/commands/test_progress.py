"""What a run prints: the live view's counts line (its ETA, and on what it rests), the lines
its events make and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sage.commands._progress import Reporter, counts_line, summary_lines
from sage.lib.events import Event, RunSummary
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


def test_a_stopping_run_shows_no_eta_of_the_backlog() -> None:
    line = counts_line(counts(), 4.2, stopping=True)
    assert line.endswith("landed 3/6 · stopping: nothing new starts") and "eta" not in line


def test_a_ticket_given_back_and_the_run_stopping_are_told_apart() -> None:
    back = Reporter.line(
        Event(kind="stopping", ticket="B-1", data={"reason": "not its fault: bad key"})
    )
    stop = Reporter.line(
        Event(kind="stopping", data={"reason": "B-1's worker cannot run: bad key"})
    )
    assert back and back.endswith("] returned  B-1 to UNPROCESSED: not its fault: bad key")
    assert stop and stop.endswith("] stopping  the run: B-1's worker cannot run: bad key")
    then = {"reason": "interrupted (Ctrl+C)", "then": "press it again to kill the workers"}
    told = Reporter.line(Event(kind="stopping", data=then))
    assert told and told.endswith("run: interrupted (Ctrl+C); press it again to kill the workers")


def summary(**agents: Any) -> RunSummary:
    return RunSummary(run_id="r", workers=2, completed=("A",), deferred={}, blocked={},
                      wall_seconds=2.0, worker_seconds=3.0, commits_landed=1, conflicts=0,
                      retries=0, **agents)  # fmt: skip


def test_the_agents_line_names_what_did_not_land_only_when_something_did_not() -> None:
    def agents_line(s: RunSummary) -> str:
        return next(line for line in summary_lines(s, Path("run")) if "agents:" in line)

    assert agents_line(summary(tokens=1800, cost_usd=0.02)) == "  agents: 1800 tokens, $0.02 spent"
    wasted = summary(tokens=1800, cost_usd=0.02, wasted_tokens=600, wasted_cost_usd=0.01)
    assert agents_line(wasted).endswith("spent; not landed: 600 tokens, $0.01")
    assert not any("agents:" in line for line in summary_lines(summary(), Path("run")))


def test_one_worker_saves_nothing_against_sequential_and_is_not_told_so() -> None:
    def time_line(s: RunSummary) -> str:
        return summary_lines(s, Path("run"))[2]

    assert time_line(summary()) == (
        "  wall 2.0s, worker time 3.0s, saved 1.0s against sequential, efficiency 75% (2 workers)"
    )
    one = RunSummary(run_id="r", workers=1, completed=("A",), deferred={}, blocked={},
                     wall_seconds=3.1, worker_seconds=3.0, commits_landed=1, conflicts=0,
                     retries=0)  # fmt: skip
    assert time_line(one) == "  wall 3.1s, worker time 3.0s, efficiency 97% (1 worker)"
