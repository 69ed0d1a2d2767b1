"""What the live view shows, folded from a run's events."""

from __future__ import annotations

from sage.lib import graph as dag
from sage.lib.events import Event
from sage.lib.tally import Tally
from sage.lib.tickets import Ticket


def tk(tid: str, *deps: str, minutes: float | None = None, state: str = "UNPROCESSED") -> Ticket:
    return Ticket(id=tid, title=f"Title {tid}", dependencies=deps, estimate_minutes=minutes,
                  state=state)  # fmt: skip


def ev(kind: str, ticket: str | None = None, **data: object) -> Event:
    return Event(kind=kind, ticket=ticket, data=dict(data))  # type: ignore[arg-type]


def tally(tickets: list[Ticket], workers: int = 2) -> Tally:
    return Tally(tickets, dag.build(tickets), workers, eta_every=0.0)


def test_counts_follow_the_run() -> None:
    t = tally(
        [tk("A"), tk("B"), tk("C", "A"), tk("D", "C"), tk("E", "B"), tk("Z", state="COMPLETED")]
    )
    c = t.counts()
    assert (c.ready, c.waiting, c.landing, c.blocked, c.total) == (2, 3, 0, 0, 5)
    t.take(ev("started", "A", slot=0, attempt=1, title="Alpha"))
    t.take(ev("started", "B", slot=1, attempt=1))
    assert [(s, a.ticket, a.title, a.attempt) for s, a in t.running()] == [
        (0, "A", "Alpha", 1), (1, "B", "Title B", 1)]  # fmt: skip
    t.take(ev("exited", "A", slot=0))
    t.take(ev("finished", "A", slot=0, outcome="ok", seconds=2.0))
    t.take(ev("queued", "A"))
    assert t.counts().landing == 1 and [a.ticket for _, a in t.running()] == ["B"]
    t.take(ev("landed", "A"))
    t.take(ev("finished", "B", slot=1, outcome="failed", seconds=1.0))
    t.take(ev("retry", "B", delay=1.0))
    c = t.counts()
    assert (c.ready, c.waiting, c.retrying, c.landed) == (1, 2, 1, 1)  # C is ready now
    t.take(ev("deferred", "B"))
    t.take(ev("blocked", "E", by="B"))
    c = t.counts()
    assert (c.ready, c.waiting, c.blocked, c.deferred) == (1, 1, 1, 1)


def test_eta_from_estimates_then_from_what_attempts_took() -> None:
    t = tally([tk("A", minutes=10), tk("B", "A", minutes=20)], workers=2)
    assert t.eta == 30 * 60  # before anything ran: an estimated minute is a minute
    t.take(ev("started", "A", slot=0, attempt=1))
    t.take(ev("finished", "A", slot=0, outcome="ok", seconds=5.0))  # 0.5 s per estimated minute
    t.take(ev("landed", "A"))
    assert t.eta == 20 * 0.5
    t.take(ev("landed", "B"))
    assert t.eta == 0.0


def test_the_first_timed_attempt_replaces_the_guess_at_once() -> None:
    """Refreshed at most once a second (`eta_every`), but not for the first timing: the demo's
    estimates, taken as minutes, said "eta ~65 min" through a run of two seconds."""
    tickets = [tk("A", minutes=10), tk("B", "A", minutes=20)]
    t = Tally(tickets, dag.build(tickets), 2, eta_every=3600.0)
    assert t.eta == 30 * 60 and t.eta_guessed
    t.take(ev("finished", "A", slot=0, outcome="ok", seconds=5.0))
    assert t.eta == 30 * 0.5 and not t.eta_guessed  # A is still to land: both are open
    t.take(ev("landed", "A"))
    assert t.eta == 30 * 0.5  # the next refresh waits for `eta_every`


def test_no_estimates_and_nothing_timed_yet_is_no_eta() -> None:
    assert tally([tk("A"), tk("B")]).eta is None


def test_the_run_stopping_is_noted_a_ticket_given_back_is_not() -> None:
    t = tally([tk("A"), tk("B")])
    t.take(ev("started", "A", slot=0, attempt=1))
    t.take(ev("stopping", "B", reason="not retried: interrupted (Ctrl+C)"))
    assert not t.stopping
    t.take(ev("stopping", reason="interrupted (Ctrl+C)", running=["A"]))
    assert t.stopping and [a.ticket for _, a in t.running()] == ["A"]


def test_what_an_earlier_run_deferred_blocks_its_dependents_from_the_start() -> None:
    c = tally([tk("D", state="DEFERRED"), tk("E", "D"), tk("F", "E"), tk("G")]).counts()
    assert (c.ready, c.waiting, c.blocked, c.total) == (1, 0, 2, 3)
