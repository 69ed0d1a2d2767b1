"""`sage queue status|process|retry` through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sage.lib import git as sgit
from tests.conftest import CliResult, git, worktrees_dir
from tests.lib.test_queue import conflicting_pair, landed_ids, queued, setup, states, user_changes

Sage = Callable[..., CliResult]


def test_status_lists_pending_entries_as_json(repo: Path, sage: Sage) -> None:
    queued(repo, {"T-1": {"a.txt": "a\n"}})

    done = sage("queue", "status", "--json", cwd=repo)

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["target"] == "main"
    assert [(e["ticket_id"], e["status"], e["branch"]) for e in data["pending"]] == [
        ("T-1", "queued", "sage/T-1")
    ]
    text = sage("queue", "status", cwd=repo)
    assert "1 pending" in text.stdout and "T-1" in text.stdout


def test_process_lands_what_is_queued(repo: Path, sage: Sage) -> None:
    _, store, _ = queued(repo, {"T-1": {"a.txt": "a\n"}})

    done = sage("queue", "process", cwd=repo)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("landed    T-1")
    assert landed_ids(repo) == ["T-1"] and states(store) == {"T-1": "COMPLETED"}
    assert user_changes(repo) == []
    assert "nothing to land" in sage("queue", "process", cwd=repo).stderr


def test_conflict_below_the_limit_sends_the_ticket_back_to_run_again(
    repo: Path, sage: Sage
) -> None:
    store = conflicting_pair(repo)[1]

    done = sage("queue", "process", "--json", cwd=repo)

    assert done.returncode == 0, done.stderr
    rows = {r["ticket"]: r for r in json.loads(done.stdout)["outcomes"]}
    assert rows["T-1"]["outcome"] == "landed" and rows["T-2"]["outcome"] == "requeued"
    t2 = store.load().raw["tickets"][1]
    assert t2["state"] == "UNPROCESSED" and t2["queue_attempts"] == 1
    assert "conflict in README.md with T-1" in t2["state_history"][-1]["reason"]
    assert json.loads(sage("queue", "status", "--json", cwd=repo).stdout)["pending"] == []


def test_conflict_at_the_limit_defers_and_retry_lands_the_fixed_branch(
    repo: Path, sage: Sage
) -> None:
    _, store, _ = conflicting_pair(repo)

    done = sage("queue", "process", cwd=repo, env={"SAGE_MAX_ATTEMPTS": "1"})

    assert done.returncode == 1
    assert "deferred  T-2" in done.stdout
    t2 = store.load().raw["tickets"][1]
    assert t2["state"] == "DEFERRED"
    assert "README.md" in t2["deferred_reason"] and "T-1" in t2["deferred_reason"]
    assert sgit.rev_parse(repo, "refs/heads/sage/T-2") is not None  # kept for a retry

    # The user resolves the conflict on the branch, then retries.
    fix = worktrees_dir(repo) / "T-2"
    git(repo, "worktree", "add", "-q", str(fix), "sage/T-2")
    git(fix, "merge", "-q", "-X", "ours", "-m", "merge main", "main")
    retried = sage("queue", "retry", "T-2", cwd=repo)
    assert retried.returncode == 0, retried.stderr
    assert "queued T-2 again" in retried.stdout
    assert states(store)["T-2"] == "IN_PROGRESS"

    landed = sage("queue", "process", cwd=repo)
    assert landed.returncode == 0, landed.stderr
    assert landed_ids(repo) == ["T-1", "T-2"]
    assert (repo / "README.md").read_text() == "two\n"
    assert states(store) == {"T-1": "COMPLETED", "T-2": "COMPLETED"}
    assert user_changes(repo) == []


def test_retry_refuses_a_ticket_without_a_rejected_entry(repo: Path, sage: Sage) -> None:
    setup(repo, "T-1")
    done = sage("queue", "retry", "T-1", cwd=repo)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot retry T-1: it has no queue entry")
    assert "hint:" in done.stderr


def test_process_with_verify_defers_the_failing_ticket(repo: Path, sage: Sage) -> None:
    _, store, _ = queued(repo, {"T-1": {"forbidden.txt": "no\n"}, "T-2": {"ok.txt": "yes\n"}})

    done = sage(
        "queue", "process", "--verify", "test ! -e forbidden.txt", cwd=repo,
        env={"SAGE_MAX_ATTEMPTS": "1"},
    )  # fmt: skip

    assert done.returncode == 1
    assert landed_ids(repo) == ["T-2"]
    assert states(store) == {"T-1": "DEFERRED", "T-2": "COMPLETED"}
    assert "forbidden.txt" not in git(repo, "log", "--name-only", "--format=", "main")
