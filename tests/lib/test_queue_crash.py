"""kill -9 between every step of an application, then recover(): each ticket lands exactly once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sage.lib import git as sgit
from sage.lib.queue import Landed, Rejected
from tests.conftest import git
from tests.lib.test_queue import conflicting_pair, landed_ids, queued, states, user_changes
from tests.reliability.conftest import committed_state

STEPS = ("stacked", "verified", "recorded", "moved", "checkout", "completed", "archived", "cleaned")
AFTER_ARCHIVE = ("archived", "cleaned")  # landed and recorded; a stream sweeps what is left

CRASHER = """
import os, sys
from pathlib import Path
from sage.lib import queue
from sage.lib.project import open_project
from sage.lib.tickets import TicketStore

repo, crash_at = Path(sys.argv[1]), sys.argv[2]

def hook(step):
    if step == crash_at:
        os._exit(9)  # no cleanup at all, like kill -9

queue.step_hook = hook
project = open_project(repo)
q = queue.CommitQueue(project, project.ticket_store(), target_branch="main",
                      verify=("true",), run_id="crashed")
q.process()
"""


def crash_at(repo: Path, step: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASHER, str(repo), step], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 9, done.stderr


@pytest.mark.parametrize("step", STEPS)
def test_crash_between_steps_then_recover_lands_each_ticket_once(repo: Path, step: str) -> None:
    tickets = {tid: {f"{tid}.txt": tid} for tid in ("T-1", "T-2")}
    project, store, q = queued(repo, tickets, verify=("true",))

    crash_at(repo, step)
    recovered = q.recover()
    after = q.process()

    assert landed_ids(repo) == ["T-1", "T-2"]
    reported = len(recovered) + sum(isinstance(o, Landed) for o in after)
    assert reported == (0 if step in AFTER_ARCHIVE else 2)  # the caller hears of each landing once
    assert states(store) == {"T-1": "COMPLETED", "T-2": "COMPLETED"}
    for raw in json.loads(project.index_path.read_text())["tickets"]:
        completions = [h for h in raw["state_history"] if h["to"] == "COMPLETED"]
        assert len(completions) == 1, raw["state_history"]
        grep = f"--grep=Sage-Ticket: {raw['id']}"
        commit = git(repo, "log", "-1", "--format=%H", grep, "main")
        assert committed_state(repo, commit, raw["id"]) == "COMPLETED"  # with its landing
    assert user_changes(repo) == []
    assert q.pending() == []
    assert sorted(e.status for e in q.archived()) == ["landed", "landed"]
    if step not in AFTER_ARCHIVE:
        assert sgit.rev_parse(repo, "refs/heads/sage/T-1") is None
        assert not (project.worktrees_dir / "T-1").exists()
    assert user_changes(repo) == []
    assert (repo / "T-1.txt").exists() and (repo / "T-2.txt").exists()


def test_recovery_keeps_the_landing_and_carries_a_users_edit_in_the_way_over(repo: Path) -> None:
    """The target never moves back: an edit the user made while the checkout was behind is
    merged with the landed version (here they conflict), and their version is kept in git."""
    _, store, q = queued(repo, {"T-1": {"README.md": "theirs\n"}})

    crash_at(repo, "moved")  # the ref moved; the checkout did not follow
    landed = git(repo, "rev-parse", "main")
    git(repo, "checkout", "-q", "--", "README.md")  # `git status` showed a revert; user "fixes" it
    (repo / "README.md").write_text("mine\n")
    [outcome] = q.recover()

    assert isinstance(outcome, Landed) and outcome.commit == landed
    assert git(repo, "rev-parse", "main") == landed
    text = (repo / "README.md").read_text()
    assert "<<<<<<<" in text and "mine\n" in text and "theirs\n" in text
    [warning] = outcome.warnings
    saved = re.search(r"`git show (\S+)`", warning)
    assert "README.md" in warning and saved
    assert git(repo, "show", saved.group(1)) == "mine"
    assert states(store) == {"T-1": "COMPLETED"}
    assert q.pending() == []


def test_an_entry_archived_before_its_queue_copy_was_removed_counts_as_archived(
    repo: Path,
) -> None:
    project, _, q = queued(repo, {"T-1": {"a.txt": "a\n"}})
    [entry] = q.pending()
    done = project.queue_dir / "done" / entry.filename
    done.parent.mkdir()
    done.write_text((project.queue_dir / entry.filename).read_text())
    assert q.pending() == []
    assert not (project.queue_dir / entry.filename).exists()


def test_a_rejection_nobody_settled_is_reported_again_after_recover(repo: Path) -> None:
    _, _, q = conflicting_pair(repo)
    first = q.process()[1]
    assert isinstance(first, Rejected) and first.entry.attempts == 1
    assert q.process() == []  # within a run, a rejection is reported once

    q.recover()  # the run died before deciding: the next one hears of it again
    [again] = q.process()
    assert isinstance(again, Rejected) and again.kind == "conflict"
    assert again.entry.attempts == 1 and again.collided_with == ("T-1",)
