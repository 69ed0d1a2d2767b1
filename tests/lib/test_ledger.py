"""The run ledger: checked moves, and counts that always add up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage.lib.ledger import ALLOWED, FINAL, Ledger, Phase, Slots, TransitionError


def test_a_move_the_table_does_not_allow_is_refused_naming_both_phases() -> None:
    ledger = Ledger(["A"])
    ledger.move("A", Phase.RUNNING)
    ledger.move("A", Phase.LANDING)
    ledger.move("A", Phase.LANDED)
    with pytest.raises(TransitionError, match="landed → running"):
        ledger.move("A", Phase.RUNNING)


def test_final_phases_only_lead_where_a_run_can_go() -> None:
    assert not ALLOWED[Phase.LANDED] and not ALLOWED[Phase.RETURNED]
    assert ALLOWED[Phase.BLOCKED] == {Phase.WAITING}


def test_attempt_counts_failures_and_rejections_not_throttles() -> None:
    run = Ledger(["A"])["A"]
    run.failures, run.land_attempts, run.throttles = 1, 1, 5
    assert run.attempt == 3


@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from(list(Phase))), max_size=60))
def test_any_sequence_of_moves_keeps_every_ticket_in_exactly_one_phase(moves) -> None:
    ids = [f"T{i}" for i in range(5)]
    ledger = Ledger(ids)
    for index, phase in moves:
        tid = ids[index]
        before = ledger[tid].phase
        try:
            ledger.move(tid, phase)
        except TransitionError:
            assert phase not in ALLOWED[before] and phase != before
            assert ledger[tid].phase == before
        else:
            assert phase == before or phase in ALLOWED[before]
    assert sum(ledger.count(p) for p in Phase) == len(ids)
    assert sorted(t for p in Phase for t in ledger.ids(p)) == sorted(ids)


@given(st.lists(st.sampled_from(["take", "give"]), max_size=40))
def test_slots_never_hand_out_one_slot_twice(ops) -> None:
    slots = Slots(3)
    held: list[int] = []
    for op in ops:
        if op == "take" and slots.free:
            slot = slots.take()
            assert slot not in held and 0 <= slot < 3
            held.append(slot)
        elif op == "give" and held:
            slots.give_back(held.pop(0))
    assert slots.free == 3 - len(held)


def test_the_next_ticket_takes_the_slot_whose_ticket_landed_last() -> None:
    slots = Slots(3)
    assert [slots.take(t) for t in ("A", "B", "C")] == [0, 1, 2]  # none landed: the lowest
    for slot in (0, 1, 2):
        slots.give_back(slot)
    slots.landed("B", 1)
    slots.landed("A", 0)
    assert slots.take("D") == 0  # A landed last: slot 0 holds the freshest files
    assert slots.take("E") == 1  # then B's
    slots.give_back(0)
    slots.landed("A", 0)  # slot 0 took D since: A's landing says nothing of its files now
    slots.give_back(1)
    assert slots.take("F") == 0  # none fresh among 0 and 2 (and 1's E has not landed): lowest
    slots.landed("E", 1)  # E landed while its slot was free again
    assert slots.take("G") == 1


def test_due_lists_delayed_and_parked_soonest_first() -> None:
    ledger = Ledger(["A", "B", "C"])
    for tid, due in (("A", 5.0), ("B", 2.0)):
        ledger.move(tid, Phase.RUNNING)
        ledger.move(tid, Phase.DELAYED if tid == "A" else Phase.PARKED, due=due)
    assert ledger.due(10.0) == ["B", "A"] and ledger.due(3.0) == ["B"]
    assert ledger.next_due() == 2.0
    assert FINAL.isdisjoint({Phase.DELAYED, Phase.PARKED})
