"""The stream's control loop in-process, with a scripted executor, queue and clock (no git)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage.lib.inbox import LandedMsg
from sage.lib.ledger import Phase
from sage.lib.queue import QueueEntry
from sage.lib.tickets import Ticket
from sage.lib.workers import Outcome
from tests.conftest import ticket
from tests.lib.stream_fakes import Attempt, harness

FAIL = Attempt(outcome=Outcome.FAILED, detail="worker exited 1: boom")
THROTTLED = Attempt(outcome=Outcome.THROTTLED, detail="429 Too Many Requests")


def test_everything_lands_and_each_ticket_is_counted_once(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A"), ticket("B", "A"), ticket("C")])
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B", "C"]
    assert summary.exit_code == 0 and summary.not_started == () and summary.waiting_to_land == ()
    assert set(h.states().values()) == {"COMPLETED"}
    started_b = next(t for t, tid, _ in h.executor.starts if tid == "B")
    landed_a = next(e for e in h.events("landed") if e["ticket"] == "A")
    assert started_b >= 1.0 and landed_a["unblocked"] == ["B"]


def test_a_failing_ticket_is_retried_then_deferred_and_blocks_its_dependent(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A"), ticket("B", "A"), ticket("C")], {"A": [FAIL]}, retries=2)
    summary = h.run()
    assert summary.completed == ("C",)
    assert list(summary.deferred) == ["A"] and "boom" in summary.deferred["A"]
    assert summary.blocked == {"B": "A"} and summary.not_started == ()
    assert summary.retries == 2 and summary.exit_code == 1
    assert [j.attempt for j in h.executor.jobs if j.ticket.id == "A"] == [1, 2, 3]
    assert h.states() == {"A": "DEFERRED", "B": "UNPROCESSED", "C": "COMPLETED"}
    assert summary.wasted_seconds == 3.0


def test_retries_back_off_with_jitter(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A")], {"A": [FAIL, FAIL, Attempt()]}, backoff=10.0)
    h.run()
    delays = [e["delay"] for e in h.events("retry")]
    assert 5.0 <= delays[0] <= 15.0 and 10.0 <= delays[1] <= 30.0
    assert delays[0] not in (10.0,) or delays[1] not in (20.0,)  # not the bare doubling


def test_throttling_uses_no_attempt_and_shrinks_the_live_workers(tmp_path: Path) -> None:
    tickets = [ticket(f"T{i}") for i in range(4)]
    script = {"T0": [THROTTLED, THROTTLED, THROTTLED, Attempt()]}
    h = harness(tmp_path, tickets, script, workers=4, retries=0)
    summary = h.run()
    assert sorted(summary.completed) == ["T0", "T1", "T2", "T3"]
    assert summary.throttled == 3 and summary.retries == 0 and summary.deferred == {}
    retries = h.events("retry")
    assert all(e["throttled"] and not e["counted"] for e in retries)
    assert retries[0]["workers"] == 2  # four asked, halved by the rate limit
    assert [j.attempt for j in h.executor.jobs if j.ticket.id == "T0"] == [1, 1, 1, 1]


def test_a_throttle_honours_the_reset_time(tmp_path: Path) -> None:
    reset = Attempt(outcome=Outcome.THROTTLED, retry_after=120.0, detail="limit resets in 2m")
    h = harness(tmp_path, [ticket("A")], {"A": [reset, Attempt()]})
    h.run()
    starts = [t for t, tid, _ in h.executor.starts if tid == "A"]
    assert starts[1] - starts[0] >= 121.0


def test_always_throttled_is_deferred_at_the_cap_not_retried_forever(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A")], {"A": [THROTTLED]}, backoff=60.0)
    summary = h.run()
    assert list(summary.deferred) == ["A"] and "throttled" in summary.deferred["A"]
    assert h.clock.t <= 3600 + 3 * 60 + 10


def test_an_unusable_worker_stops_the_run_before_a_second_ticket(tmp_path: Path) -> None:
    unusable = Attempt(outcome=Outcome.UNUSABLE, detail="claude: not logged in")
    tickets = [ticket("A", priority="P0"), ticket("B"), ticket("C")]
    h = harness(tmp_path, tickets, {"A": [unusable]}, workers=1)
    summary = h.run()
    assert [tid for _, tid, _ in h.executor.starts] == ["A"]
    assert summary.exit_code == 3 and "not logged in" in (summary.stop_reason or "")
    assert sorted(summary.not_started) == ["A", "B", "C"] and summary.deferred == {}
    assert h.states()["A"] == "UNPROCESSED"


def test_on_error_fail_starts_nothing_new(tmp_path: Path) -> None:
    tickets = [ticket("A", priority="P0"), ticket("B", priority="P3"), ticket("C", priority="P3")]
    h = harness(tmp_path, tickets, {"A": [FAIL]}, workers=1, retries=0, on_error="fail")
    summary = h.run()
    assert summary.exit_code == 3 and summary.stopped_early
    assert sorted(summary.not_started) == ["B", "C"] and list(summary.deferred) == ["A"]


def test_a_retry_waiting_for_a_worker_is_put_back_when_the_run_stops(tmp_path: Path) -> None:
    """The reported case: Ctrl+C once while a retry is due but waits for a free worker."""
    tickets = [ticket("A", priority="P0"), ticket("B", priority="P1")]
    script = {"A": [FAIL, Attempt()], "B": [Attempt(seconds=50.0)]}
    h = harness(tmp_path, tickets, script, workers=1, backoff=1.0)
    h.clock.at.append((30.0, h.interrupts.press))
    summary = h.run()
    assert summary.exit_code == 130
    assert h.states() == {"A": "UNPROCESSED", "B": "COMPLETED"}
    assert summary.completed == ("B",) and summary.not_started == ("A",)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(moment=st.floats(min_value=0.0, max_value=12.0), twice=st.booleans())
def test_ctrl_c_at_any_moment_leaves_nothing_in_progress_without_an_entry(
    tmp_path_factory, moment: float, twice: bool
) -> None:
    tmp = tmp_path_factory.mktemp("ctrl-c")
    tickets = [ticket("A"), ticket("B", "A"), ticket("C"), ticket("D"), ticket("E", "C")]
    script = {
        "A": [Attempt(seconds=2.0)],
        "C": [FAIL, Attempt(seconds=3.0)],
        "D": [Attempt(seconds=4.0)],
    }
    h = harness(tmp, tickets, script, workers=2, rejects={"D": ["conflict"]})
    h.clock.at.append((moment, h.interrupts.press))
    if twice:
        h.clock.at.append((moment + 0.1, h.interrupts.press))
    summary = h.run()
    queued = {e.ticket_id for e in h.queue.pending()}
    stuck = [t for t, s in h.states().items() if s == "IN_PROGRESS" and t not in queued]
    assert stuck == [] and summary.exit_code == (130 if h.interrupts.presses else 0)
    counted = [
        *summary.completed,
        *summary.waiting_to_land,
        *summary.deferred,
        *summary.blocked,
        *summary.skipped,
        *summary.not_started,
    ]
    assert sorted(counted) == ["A", "B", "C", "D", "E"]


def test_ctrl_c_twice_returns_every_running_ticket(tmp_path: Path) -> None:
    tickets = [ticket("K1"), ticket("K2")]
    script = {"K1": [Attempt(seconds=30.0)], "K2": [Attempt(seconds=30.0)]}
    h = harness(tmp_path, tickets, script, workers=2)
    h.clock.at += [(1.0, h.interrupts.press), (1.5, h.interrupts.press)]
    summary = h.run()
    assert h.executor.kills == 2 and set(h.states().values()) == {"UNPROCESSED"}
    assert sorted(summary.not_started) == ["K1", "K2"] and summary.exit_code == 130


def test_what_to_do_after_a_ctrl_c_is_told_once_not_recorded_as_its_reason(
    tmp_path: Path,
) -> None:
    script = {"K1": [FAIL, Attempt()], "K2": [Attempt(seconds=30.0)]}  # K1 given back, not retried
    h = harness(tmp_path, [ticket("K1"), ticket("K2")], script, workers=2)
    h.clock.at += [(1.5, h.interrupts.press)]
    summary = h.run()
    (stop,) = [e for e in h.events("stopping") if e["ticket"] is None]
    assert stop["reason"] == "interrupted (Ctrl+C)" == summary.stop_reason
    assert stop["then"] == "press it again to kill the workers"
    returned = [e["reason"] for e in h.events("stopping") if e["ticket"] == "K1"]
    assert returned == ["not retried: interrupted (Ctrl+C)"]


def test_batch_schedule_starts_a_wave_when_the_last_one_landed(tmp_path: Path) -> None:
    tickets = [ticket("A"), ticket("B"), ticket("C")]
    script = {"A": [Attempt(seconds=1.0)], "B": [Attempt(seconds=5.0)]}
    h = harness(tmp_path, tickets, script, workers=2, schedule="batch")
    h.run()
    start = {tid: t for t, tid, _ in h.executor.starts}
    assert start["C"] >= 5.0


def test_slots_are_stable_identities(tmp_path: Path) -> None:
    tickets = [ticket(f"S{i}") for i in range(6)]
    script = {f"S{i}": [Attempt(seconds=1.0 + i)] for i in range(6)}
    h = harness(tmp_path, tickets, script, workers=3)
    h.run()
    busy_until: dict[int, float] = {}
    for t, tid, slot in sorted(h.executor.starts):
        # three workers and one spare slot for a worktree whose work is still being collected
        assert slot in (0, 1, 2, 3) and busy_until.get(slot, 0.0) <= t  # one ticket at a time
        busy_until[slot] = t + script[tid][0].seconds
    assert {e["slot"] for e in h.events("started")} <= {0, 1, 2, 3}
    assert sum(1 for _, _, slot in h.executor.starts if slot == 3) <= 2  # spare, rarely used


def test_a_conflict_is_retried_then_lands(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A")], rejects={"A": ["conflict"]})
    summary = h.run()
    assert summary.completed == ("A",) and summary.conflicts == 1 and summary.retries == 1
    assert [j.attempt for j in h.executor.jobs] == [1, 2]


def test_conflicts_up_to_max_attempts_defer_through_the_queue(tmp_path: Path) -> None:
    rejects = {"A": ["conflict", "conflict", "conflict"]}
    h = harness(tmp_path, [ticket("A"), ticket("B", "A")], rejects=rejects, max_attempts=3)
    summary = h.run()
    assert "conflict in shared.txt" in summary.deferred["A"] and summary.blocked == {"B": "A"}
    assert h.states()["A"] == "DEFERRED"


def test_a_held_landing_is_waiting_to_land_with_a_hint(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A"), ticket("B", "A")], rejects={"A": ["blocked"]})
    summary = h.run()
    assert summary.waiting_to_land == ("A",) and summary.not_started == ("B",)
    assert summary.exit_code == 3 and summary.completed == ()
    assert h.states()["A"] == "IN_PROGRESS" and h.stream.ledger["A"].phase == Phase.LANDING


def test_a_held_landing_is_warned_of_once_while_later_passes_hold_it_for_the_same_reason(
    tmp_path: Path,
) -> None:
    """Found by hand: each later pass (for the work still running) finds the held entry in the
    way again, and the warning was printed again each time. Found by CI: while only held work
    waited to land, the main loop waited for a reconciliation that it then would not ask for,
    again and again: it spun (a core busy) until the running workers ended."""
    h = harness(tmp_path, [ticket("A"), ticket("B"), ticket("C")],
                {"B": [Attempt(seconds=2.5)], "C": [Attempt(seconds=4.5)]},
                rejects={"A": ["blocked"]}, workers=3)  # fmt: skip
    waits = 0
    wait = h.stream._wait

    def counted() -> float:
        nonlocal waits
        waits += 1
        assert waits < 100, "the main loop spins"
        return wait()

    h.stream._wait = counted  # type: ignore[method-assign]
    summary = h.run()
    assert h.queue.passes >= 3 and summary.completed == ("B", "C")
    assert [w["ticket"] for w in h.events("warning")] == ["A"]
    assert len(h.events("stopping")) == 1 and summary.waiting_to_land == ("A",)


def test_a_landing_by_another_process_is_reconciled(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A"), ticket("B", "A")])
    h.queue.hold_passes = True

    def land_elsewhere() -> None:
        entry = next(e for e in h.queue.entries.values() if e.ticket_id == "A")
        h.queue.land(entry)
        h.queue.hold_passes = False

    h.clock.at.append((5.0, land_elsewhere))
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B"] and summary.exit_code == 0
    assert [e["ticket"] for e in h.events("reconciled")] == ["A"]


def test_an_entry_queued_after_a_pass_looked_is_not_taken_for_gone(tmp_path: Path) -> None:
    """Found by the kill -9 soak: the lander lists what is pending at the end of its pass; an
    entry queued just after was reconciled as gone, and its ticket ran (and landed) again."""
    h = harness(tmp_path, [ticket("A"), ticket("B", "A")])
    h.queue.hold_passes = True
    listed = h.queue.pending
    h.queue.pending = lambda: []  # type: ignore[method-assign]  # the pass looked too early

    def the_pass_catches_up() -> None:
        h.queue.pending = listed  # type: ignore[method-assign]
        h.queue.hold_passes = False

    h.clock.at.append((5.0, the_pass_catches_up))
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B"] and summary.exit_code == 0
    assert [j.ticket.id for j in h.executor.jobs] == ["A", "B"]  # A ran once
    assert h.events("reconciled") == []


def test_a_landing_heard_of_after_its_entry_looked_gone_wins_over_the_retry(
    tmp_path: Path,
) -> None:
    """Should a pass look too early and the entry look gone too (as a reader of the queue and
    its archive could see it while the lander archived it), the ticket waits to run again;
    when its landing is heard of after all, the ticket has landed: it is not run twice."""
    h = harness(tmp_path, [ticket("A"), ticket("B", "A")])
    h.queue.hold_passes = True
    listed, latest = h.queue.pending, h.queue.latest
    h.queue.pending = lambda: []  # type: ignore[method-assign]  # the pass looked too early

    def looked_gone(tid: str) -> None:  # the reconcile's look, once: the entry is in neither
        h.queue.latest = latest  # type: ignore[method-assign]
        h.clock.at.append((h.clock.now() + 0.01, the_pass_catches_up))  # before the retry

    def the_pass_catches_up() -> None:  # the lander lands the entry and says so, as its pass
        h.queue.pending = listed  # type: ignore[method-assign]
        entry = next(e for e in h.queue.entries.values() if e.ticket_id == "A")
        h.stream.inbox.put(LandedMsg(outcome=h.queue.land(entry)))
        h.queue.hold_passes = False

    h.queue.latest = looked_gone  # type: ignore[method-assign,assignment]
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B"] and summary.exit_code == 0
    assert [e["ticket"] for e in h.events("reconciled")] == ["A"]
    assert [j.ticket.id for j in h.executor.jobs] == ["A", "B"]  # A ran once
    assert h.queue.landings == 2


def test_an_entry_discarded_elsewhere_runs_again(tmp_path: Path) -> None:
    h = harness(tmp_path, [ticket("A")])
    h.queue.hold_passes = True

    def settle_elsewhere() -> None:
        entry = next(e for e in h.queue.entries.values() if e.ticket_id == "A")
        h.queue.discard(entry, "conflict, requeued by sage queue process")
        h.store.transition([("A", "UNPROCESSED")], reason="requeued")
        h.queue.hold_passes = False

    h.clock.at.append((3.0, settle_elsewhere))
    summary = h.run()
    assert summary.completed == ("A",) and len(h.executor.jobs) == 2


def test_earlier_deferred_and_blocked_are_named_and_exit_1(tmp_path: Path) -> None:
    tickets = [
        ticket("A", state="DEFERRED", deferred_reason="boom last time"),
        ticket("B", "A"),
        ticket("C"),
    ]
    h = harness(tmp_path, tickets)
    summary = h.run()
    assert summary.completed == ("C",) and summary.deferred == {"A": "boom last time"}
    assert summary.deferred_earlier == ("A",) and summary.blocked == {"B": "A"}
    assert summary.not_started == () and summary.exit_code == 1


def test_skip_at_the_prompt_blocks_dependents(tmp_path: Path) -> None:
    answers = {"A": "skip", "C": "yes"}
    tickets = [ticket("A", priority="P0"), ticket("B", "A"), ticket("C")]
    h = harness(tmp_path, tickets, confirm=lambda t: answers[t.id], workers=1)
    summary = h.run()
    assert summary.skipped == ("A",) and summary.blocked == {"B": "A"}
    assert summary.completed == ("C",)


def test_a_slot_runs_one_ticket_at_a_time(tmp_path: Path) -> None:
    tickets = [ticket(t) for t in "ABCDEFGH"]
    script = {t: [Attempt(seconds=1.0 + i % 3)] for i, t in enumerate("ABCDEFGH")}
    h = harness(tmp_path, tickets, script, workers=3)
    assert len(h.run().completed) == 8
    ends = {}
    for start, tid, slot in sorted(h.executor.starts):
        assert ends.get(slot, 0.0) <= start, f"{tid} started on slot {slot} while it was busy"
        ends[slot] = start + script[tid][0].seconds
    assert set(ends) <= {0, 1, 2, 3}  # three workers, and a spare while work is collected


def test_each_question_comes_after_the_previous_ticket_landed(tmp_path: Path) -> None:
    asked: list[tuple[str, list[str]]] = []

    def confirm(t: Ticket) -> str:
        asked.append((t.id, [e["ticket"] for e in h.events("landed")]))
        return "yes"

    h = harness(tmp_path, [ticket("A", priority="P0"), ticket("B"), ticket("C")],
                confirm=confirm, workers=1)  # fmt: skip
    assert sorted(h.run().completed) == ["A", "B", "C"]
    assert asked == [("A", []), ("B", ["A"]), ("C", ["A", "B"])]


def test_time_at_the_prompt_is_told_apart_from_the_run(tmp_path: Path) -> None:
    """A person who takes 30 s to answer each question does not make the run look slow: the
    wall time says how much of it was spent waiting for answers, and the efficiency and the
    time saved leave it out."""

    def confirm(t: Ticket) -> str:
        h.clock.t += 30.0  # the person reads and answers
        return "yes"

    h = harness(tmp_path, [ticket("A", priority="P0"), ticket("B")], confirm=confirm,
                workers=1)  # fmt: skip
    summary = h.run()
    assert summary.completed == ("A", "B") and summary.prompt_seconds == 60.0
    assert summary.wall_seconds >= 62.0  # two 1 s attempts and two answers
    assert summary.efficiency == 2.0 / (summary.wall_seconds - 60.0)
    assert summary.as_dict()["prompt_seconds"] == 60.0
    asked = [(e["ticket"], e["priority"], e["title"]) for e in h.events("asked")]
    assert asked == [("A", "P0", "Ticket A"), ("B", "P1", "Ticket B")]  # `sage status` says it
    assert [(e["ticket"], e["answer"], e["seconds"]) for e in h.events("answered")] == [
        ("A", "yes", 30.0), ("B", "yes", 30.0)]  # fmt: skip


def test_work_queued_by_a_dead_run_is_landed_first(tmp_path: Path) -> None:
    entry = QueueEntry(seq=1, ticket_id="A", title="A", branch="sage/A", base="b", head="h")
    h = harness(
        tmp_path, [ticket("A", state="IN_PROGRESS"), ticket("B", "A")], pending={"A": entry}
    )
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B"]
    assert [j.ticket.id for j in h.executor.jobs] == ["B"]


def test_slow_start_runs_one_worker_until_an_attempt_succeeds(tmp_path: Path) -> None:
    unusable = Attempt(outcome=Outcome.UNUSABLE, detail="claude: not logged in")
    tickets = [ticket(f"U{i}") for i in range(4)]
    h = harness(tmp_path, tickets, {"U0": [unusable]}, workers=4, slow_start=True)
    summary = h.run()
    assert len(h.executor.starts) == 1 and summary.unusable == "claude: not logged in"
    assert set(h.states().values()) == {"UNPROCESSED"} and summary.exit_code == 3


def test_slow_start_grows_by_one_per_success(tmp_path: Path) -> None:
    tickets = [ticket(f"G{i}") for i in range(6)]
    h = harness(tmp_path, tickets, workers=3, slow_start=True)
    h.run()
    starts = sorted(t for t, _, _ in h.executor.starts)
    assert starts[0] < starts[1]  # the first runs alone
    assert len(h.executor.starts) == 6


def test_spent_and_wasted_agent_cost_and_the_cost_limit(tmp_path: Path) -> None:
    from sage.lib.workers import Usage

    costly = Attempt(usage=Usage(input_tokens=900, output_tokens=100, cost_usd=1.5))
    failing = Attempt(
        outcome=Outcome.FAILED, detail="boom", usage=Usage(input_tokens=10, cost_usd=0.25)
    )
    h = harness(tmp_path / "waste", [ticket("W1")], {"W1": [failing, costly]})
    summary = h.run()
    assert summary.tokens == 1010 and summary.cost_usd == 1.75
    assert summary.wasted_tokens == 10 and summary.wasted_cost_usd == 0.25

    tickets = [ticket("C1", priority="P0"), ticket("C2", priority="P1"), ticket("C3")]
    script = {t: [costly] for t in ("C1", "C2", "C3")}
    h = harness(tmp_path / "limit", tickets, script, workers=1, max_cost=3.0)
    summary = h.run()
    assert summary.completed == ("C1", "C2") and summary.not_started == ("C3",)
    assert "cost limit" in (summary.stop_reason or "") and summary.exit_code == 3


def test_a_conflict_resolves_once_then_redoes(tmp_path: Path) -> None:
    """The next attempt after a conflict gets the previous attempt to resolve; a second
    conflict is a full redo."""
    rejects = {"A": ["conflict", "conflict"]}
    h = harness(tmp_path, [ticket("A")], rejects=rejects, on_conflict="resolve", max_attempts=5)
    summary = h.run()
    assert summary.completed == ("A",)
    resolves = [j.resolve for j in h.executor.jobs]
    assert resolves[0] is None and resolves[2] is None
    first = resolves[1]
    assert first is not None and first.previous == "head-A-1" and first.files == ("shared.txt",)
    assert h.queue.previous == {"A": "head-A-1"}
    assert [e["mode"] for e in h.events("started")] == ["run", "resolve", "run"]
    assert summary.wasted_by == {"conflict": 2.0} and summary.conflict_rate == 2 / 3


def test_scripted_tickets_redo_by_default_and_agent_tickets_resolve(tmp_path: Path) -> None:
    rejects = {"S": ["conflict"], "W": ["conflict"]}
    tickets = [ticket("S"), ticket("W", command=[])]
    h = harness(tmp_path, tickets, rejects=rejects, worker=("my-agent",))
    h.run()
    by_ticket = {(j.ticket.id, j.attempt): j.resolve for j in h.executor.jobs}
    assert by_ticket[("S", 2)] is None and by_ticket[("W", 2)] is not None


def test_overlapping_files_never_run_at_once(tmp_path: Path) -> None:
    tickets = [ticket("F1", files=["shared/*.md"]), ticket("F2", files=["shared/a.md"]),
               ticket("F3")]  # fmt: skip
    script = {t: [Attempt(seconds=3.0)] for t in ("F1", "F2", "F3")}
    h = harness(tmp_path, tickets, script, workers=3)
    h.run()
    start = {tid: t for t, tid, _ in h.executor.starts}
    first, second = sorted(("F1", "F2"), key=start.get)
    assert start[second] >= start[first] + 3.0  # after the first landed, not merely exited
    assert start["F3"] == 0.0
    assert [(e["ticket"], e["by"]) for e in h.events("kept-apart")] == [(second, first)]


def test_two_retrying_tickets_with_overlapping_files_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    """Found by the conflict bench: both conflicted, learned each other's files, and each
    waited (held) for the other to land."""
    tickets = [ticket("A"), ticket("B")]  # nothing declared: they run at once, then collide
    rejects = {"A": ["conflict:B"], "B": ["conflict:A"]}
    h = harness(tmp_path, tickets, rejects=rejects, workers=2, on_conflict="redo")
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B"]


def test_learned_files_from_a_conflict_keep_the_pair_apart_afterwards(tmp_path: Path) -> None:
    tickets = [ticket("A"), ticket("B"), ticket("C")]
    script = {"A": [Attempt(seconds=1.0)], "B": [Attempt(seconds=1.0), Attempt(seconds=5.0)],
              "C": [Attempt(seconds=1.0)]}  # fmt: skip
    h = harness(tmp_path, tickets, script, rejects={"B": ["conflict"]}, workers=3)
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B", "C"]


def test_a_failure_while_an_overlapping_ticket_lands_retries_once_it_landed(tmp_path: Path) -> None:
    tickets = [ticket("A", priority="P0"), ticket("B")]
    needs_a = Attempt(outcome=Outcome.FAILED, seconds=2.0, detail="needs A's work")
    script = {"A": [Attempt(seconds=1.0)], "B": [needs_a, Attempt(seconds=1.0)]}
    h = harness(tmp_path, tickets, script, workers=2, backoff=0.1)
    h.queue.hold_passes = True  # A waits to land until t=10
    h.clock.at.append((0.5, lambda: h.stream.dispatcher.learn("A", "B", ["shared.txt"])))
    h.clock.at.append((10.0, lambda: setattr(h.queue, "hold_passes", False)))
    summary = h.run()
    assert sorted(summary.completed) == ["A", "B"]
    retry = next(e for e in h.events("retry") if e["ticket"] == "B")
    assert retry["after"] == "A"
    second = [t for t, tid, _ in h.executor.starts if tid == "B"][1]
    assert second >= 10.0  # not after its 0.1 s backoff, while A was still landing
