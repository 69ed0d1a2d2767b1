"""Hypothesis state machines: random sequences of operations on the real ticket store and the
real commit queue (real git), each step checked against a plain model of what must be true."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sage.lib.errors import SageError
from sage.lib.project import open_project
from sage.lib.queue import CommitQueue, Landed, Rejected
from sage.lib.tickets import STATES, TicketStore
from tests.conftest import git, ticket, write_index
from tests.lib.test_queue import landed_ids
from tests.reliability.conftest import new_repo

# Small and derandomized: seconds in CI, the same walk every run.
FEW = settings(
    max_examples=12,
    stateful_step_count=15,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
QUEUE_FEW = settings(FEW, max_examples=15, stateful_step_count=25)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
UNKNOWN_KEYS = st.sampled_from(["notes", "x-owner", "labels", "links", "custom"])


# ---- the ticket store -------------------------------------------------------------------------


class StoreMachine(RuleBasedStateMachine):
    """Transitions and raw updates against a model: states, history lengths, unknown fields."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="sage-store-"))
        self.path = self.folder / "index.json"
        self.store = TicketStore(self.path, lock_timeout=5)
        self.state: dict[str, str] = {}
        self.history: dict[str, int] = {}
        self.extra: dict[str, dict[str, Any]] = {}
        self.top: dict[str, Any] = {}

    @initialize(
        states=st.lists(st.sampled_from(STATES), min_size=1, max_size=5),
        extras=st.lists(st.dictionaries(UNKNOWN_KEYS, JSON, max_size=2), min_size=5, max_size=5),
        top=st.dictionaries(st.sampled_from(["version", "x-meta"]), JSON, max_size=2),
    )
    def write(self, states: list[str], extras: list[dict[str, Any]], top: dict[str, Any]) -> None:
        tickets = []
        for n, state in enumerate(states):
            tid = f"S-{n}"
            tickets.append({**ticket(tid, state=state), **extras[n]})
            self.state[tid], self.history[tid], self.extra[tid] = state, 0, dict(extras[n])
        self.top = dict(top)
        self.path.write_text(json.dumps({**top, "tickets": tickets}, ensure_ascii=False))

    @rule(data=st.data(), to=st.sampled_from(STATES), reason=st.none() | st.text(max_size=10))
    def transition(self, data: st.DataObject, to: str, reason: str | None) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.state)), min_size=1, max_size=3))
        fields = data.draw(
            st.dictionaries(st.sampled_from(ids), st.dictionaries(UNKNOWN_KEYS, JSON, max_size=2))
        )
        self.store.transition([(tid, to) for tid in ids], reason=reason, run_id="m", fields=fields)
        for tid in ids:
            self.state[tid] = to
            self.history[tid] += 1
        for tid, values in fields.items():
            self.extra[tid].update(values)

    @rule(data=st.data())
    def transition_of_an_unknown_ticket_changes_nothing(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.state)), max_size=2))
        before = self.path.read_bytes()
        with pytest.raises(SageError, match="no longer in"):
            self.store.transition([*((t, "COMPLETED") for t in ids), ("GONE-1", "COMPLETED")])
        assert self.path.read_bytes() == before

    @rule(data=st.data(), key=UNKNOWN_KEYS, value=JSON)
    def update_an_unknown_field(self, data: st.DataObject, key: str, value: Any) -> None:
        tid = data.draw(st.sampled_from(sorted(self.state)))

        def change(raw: dict[str, Any]) -> None:
            next(t for t in raw["tickets"] if t["id"] == tid)[key] = value
            raw["x-meta"] = {"touched": tid}

        self.store.update(change)
        self.extra[tid][key] = value
        self.top["x-meta"] = {"touched": tid}

    @invariant()
    def the_file_matches_the_model(self) -> None:
        if not self.state:
            return
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        assert {k: v for k, v in raw.items() if k != "tickets"} == self.top
        for entry in raw["tickets"]:
            tid, history = entry["id"], entry.get("state_history", [])
            assert entry["state"] == self.state[tid]
            assert len(history) == self.history[tid]
            assert all(h["from"] == g["to"] for g, h in itertools.pairwise(history))
            assert not history or history[-1]["to"] == entry["state"]
            for key, value in self.extra[tid].items():
                assert entry[key] == value, (tid, key)
        assert [t.id for t in self.store.load().tickets] == sorted(self.state, key=_number)

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _number(tid: str) -> int:
    return int(tid.split("-")[1])


def test_the_ticket_store_keeps_every_change_and_every_unknown_field() -> None:
    run_state_machine_as_test(StoreMachine, settings=FEW)


# ---- the commit queue -------------------------------------------------------------------------

IDS = tuple(f"T-{n}" for n in range(6))


class QueueMachine(RuleBasedStateMachine):
    """Tickets worked on from main's head (their own file, or shared.txt, which conflicts with
    any other shared.txt landed since its base), enqueued, processed, deferred, discarded,
    retried. The model predicts every outcome; nothing may land twice or go missing."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="sage-queue-"))
        self.repo = new_repo(self.folder / "repo", [ticket(t, state="IN_PROGRESS") for t in IDS])
        project = open_project(self.repo)
        self.store = project.ticket_store()
        self.queue = CommitQueue(project, self.store, target_branch="main", run_id="machine")
        self.trees = project.worktrees_dir
        self.idle = set(IDS)
        self.queued: dict[str, int | None] = {}  # in queue order: shared.txt version at base
        self.rejected: dict[str, int | None] = {}
        self.deferred: dict[str, int | None] = {}
        self.landed: list[str] = []
        self.shared = 0  # how many times shared.txt changed on main so far
        self.user = 0

    @precondition(lambda self: self.idle)
    @rule(data=st.data(), shared=st.sampled_from([True, True, False]))
    def work_and_enqueue(self, data: st.DataObject, shared: bool) -> None:
        tid = data.draw(st.sampled_from(sorted(self.idle)))
        base = git(self.repo, "rev-parse", "main")
        tree = self.trees / tid
        git(self.repo, "worktree", "add", "-q", "-b", f"sage/{tid}", str(tree), base)
        (tree / ("shared.txt" if shared else f"{tid}.txt")).write_text(f"{tid}\n")
        git(tree, "add", "-A")
        git(tree, "commit", "-q", "-m", f"{tid} work")
        self.queue.enqueue(ticket_id=tid, title=tid, branch=f"sage/{tid}", base=base)
        self.idle.remove(tid)
        self.queued[tid] = self.shared if shared else None

    @rule(shared=st.booleans())
    def user_commits_on_main(self, shared: bool) -> None:
        """Someone else moves main: their own file, or shared.txt (a conflict for queued work)."""
        name = "shared.txt" if shared else f"user-{self.user}.txt"
        (self.repo / name).write_text(f"user {self.user}\n")
        git(self.repo, "add", name)
        git(self.repo, "commit", "-q", "-m", f"user work {self.user}")
        self.user += 1
        self.shared += shared

    @rule()
    def process(self) -> None:
        expected = []
        for tid, version in self.queued.items():
            if version is None or version == self.shared:
                expected.append(("Landed", tid))
                self.landed.append(tid)
                self.shared += version is not None
            else:
                expected.append(("Rejected", tid))
                self.rejected[tid] = version
        self.queued.clear()
        outcomes = self.queue.process()
        assert [(type(o).__name__, o.entry.ticket_id) for o in outcomes] == expected
        assert all(o.kind == "conflict" for o in outcomes if isinstance(o, Rejected))
        assert all(o.commit for o in outcomes if isinstance(o, Landed))

    @precondition(lambda self: self.rejected)
    @rule(data=st.data())
    def defer(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.rejected)))
        self.queue.defer(self._pending(tid), "deferred by the machine")
        self.deferred[tid] = self.rejected.pop(tid)

    @precondition(lambda self: self.rejected)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.rejected)))
        self.queue.discard(self._pending(tid))
        del self.rejected[tid]
        self.idle.add(tid)  # its branch is gone: the ticket runs again from main's head

    @precondition(lambda self: self.rejected or self.deferred)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted({*self.rejected, *self.deferred})))
        self.queue.retry(tid)  # the same branch again, so the same base
        was = self.rejected if tid in self.rejected else self.deferred
        self.queued[tid] = was.pop(tid)

    def _pending(self, tid: str) -> Any:
        [entry] = [e for e in self.queue.pending() if e.ticket_id == tid]
        return entry

    @invariant()
    def main_holds_exactly_the_landed_tickets_once(self) -> None:
        assert landed_ids(self.repo) == self.landed
        assert git(self.repo, "rev-list", "--merges", "main") == ""

    @invariant()
    def every_ticket_is_accounted_for(self) -> None:
        states = {t.id: t.state for t in self.store.load().tickets}
        done = dict.fromkeys(self.landed, "COMPLETED") | dict.fromkeys(self.deferred, "DEFERRED")
        assert states == {tid: done.get(tid, "IN_PROGRESS") for tid in IDS}
        pending = {e.ticket_id: e.status for e in self.queue.pending()}
        waiting = dict.fromkeys(self.queued, "queued") | dict.fromkeys(self.rejected, "conflict")
        assert pending == waiting
        for tid in self.deferred:  # deferred work is kept on its branch
            assert git(self.repo, "rev-parse", "--verify", "-q", f"sage/{tid}")

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.mark.slow
def test_the_commit_queue_lands_each_ticket_once_and_loses_none() -> None:
    run_state_machine_as_test(QueueMachine, settings=QUEUE_FEW)


def test_the_store_machine_sees_a_lost_history_entry() -> None:
    """The invariant is not vacuous: drop one history entry behind the store's back."""
    machine = StoreMachine()
    try:
        machine.write(["UNPROCESSED"], [{}] * 5, {})
        machine.store.transition([("S-0", "IN_PROGRESS")])
        machine.history["S-0"] += 1
        machine.state["S-0"] = "IN_PROGRESS"
        raw = json.loads(machine.path.read_text())
        raw["tickets"][0]["state_history"] = []
        write_index(machine.folder, raw["tickets"], path="index.json")
        with pytest.raises(AssertionError):
            machine.the_file_matches_the_model()
    finally:
        machine.teardown()
