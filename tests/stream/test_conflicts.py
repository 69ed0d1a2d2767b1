"""Conflicts without waste, end to end: resolve instead of redo, and overlapping `files` kept apart.

Real repositories, real worker processes, the real CLI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import git, ticket, worktrees_dir
from tests.stream.conftest import events, states, trailers

AUTO = ("stream", "--auto", "--parallel", "2", "--backoff", "0.05", "--json")

# A ticket that appends its line to shared.txt; asked to resolve, it checks what sage told it and
# keeps both sides (it never appends again: a redo would).
RESOLVER = r"""
import json, os, pathlib, sys, time
me, line = sys.argv[1], sys.argv[2] + "\n"
path = pathlib.Path("shared.txt")
if os.environ["SAGE_MODE"] == "resolve":
    told = {k: os.environ[k] for k in ("SAGE_PREVIOUS_ATTEMPT", "SAGE_CONFLICT_FILES",
                                        "SAGE_COLLIDED_WITH")}
    context = pathlib.Path(os.environ["SAGE_CONTEXT_FILE"]).read_text()
    pathlib.Path(os.environ["SAGE_WORKTREE"], "..", f"told-{me}.json").write_text(
        json.dumps({**told, "context_says_resolve": "## Resolve" in context}))
    markers = ("<<<<<<<", "=======", ">>>>>>>")
    kept = [l for l in path.read_text().splitlines(True) if not l.startswith(markers)]
    path.write_text("".join(kept))
    sys.exit(0)
time.sleep(float(sys.argv[3]))
path.write_text(path.read_text() + line)
"""


def resolver(repo: Path, tid: str, line: str, sleep: float) -> list[str]:
    script = repo.parent / "resolver.py"
    script.write_text(RESOLVER)
    return [sys.executable, str(script), tid, line, str(sleep)]


def setup(repo: Path, tickets: list[dict[str, object]], config: str = "") -> None:
    (repo / "shared.txt").write_text("base\n")
    (repo / ".sage/tickets").mkdir(parents=True, exist_ok=True)
    (repo / ".sage/tickets/index.json").write_text(json.dumps({"tickets": tickets}))
    if config:
        (repo / ".sage/config.toml").write_text(config)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")


def test_a_conflict_is_resolved_from_the_previous_attempt_without_a_redo(repo, sage):
    setup(
        repo,
        [
            ticket("A-1", command=resolver(repo, "A-1", "from A", 0.1)),
            ticket("B-1", command=resolver(repo, "B-1", "from B", 1.0)),
        ],
        '[stream]\non_conflict = "resolve"\n',
    )
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo / "shared.txt").read_text() == "base\nfrom A\nfrom B\n"
    assert sorted(trailers(repo)) == ["A-1", "B-1"] and set(states(repo).values()) == {"COMPLETED"}
    starts = [(e["ticket"], e["mode"]) for e in events(repo) if e["event"] == "started"]
    assert starts.count(("B-1", "resolve")) == 1 and ("B-1", "run") in starts
    # written beside the worktree: in the worker slots' folder
    told = json.loads(next(worktrees_dir(repo).rglob("told-B-1.json")).read_text())
    assert told["SAGE_CONFLICT_FILES"] == "shared.txt" and told["context_says_resolve"]
    assert told["SAGE_COLLIDED_WITH"].startswith("A-1@")
    landed_a = git(repo, "log", "--format=%H", "--grep=^Sage-Ticket: A-1$", "main")
    assert told["SAGE_COLLIDED_WITH"] == f"A-1@{landed_a}"
    assert git(repo, "for-each-ref", "refs/sage/previous/") == "", "kept only until it landed"


def test_scripted_tickets_redo_by_default(repo, sage):
    setup(
        repo,
        [
            ticket("A-1", command=resolver(repo, "A-1", "from A", 0.1)),
            ticket("B-1", command=resolver(repo, "B-1", "from B", 1.0)),
        ],
    )
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    starts = [(e["ticket"], e["mode"]) for e in events(repo) if e["event"] == "started"]
    assert ("B-1", "resolve") not in starts and starts.count(("B-1", "run")) == 2
    assert (repo / "shared.txt").read_text() == "base\nfrom A\nfrom B\n"


def test_tickets_declaring_the_same_file_never_run_at_once(repo, sage):
    setup(
        repo,
        [
            ticket("A-1", files=["shared.txt"], command=resolver(repo, "A-1", "from A", 0.5)),
            ticket("B-1", files=["*.txt"], command=resolver(repo, "B-1", "from B", 0.5)),
        ],
    )
    plan = sage("plan", "--parallel", "2", cwd=repo)
    assert "kept apart: A-1, B-1" in plan.stdout, plan.stdout
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    log = events(repo)
    assert not [e for e in log if e["event"] == "conflict"]
    apart = [e for e in log if e["event"] == "kept-apart"]
    assert len(apart) == 1
    landed_first = next(
        e["at"] for e in log if e["event"] == "landed" and e["ticket"] == apart[0]["by"]
    )
    started_second = next(
        e["at"] for e in log if e["event"] == "started" and e["ticket"] == apart[0]["ticket"]
    )
    assert started_second >= landed_first


WATCHER = r"""
import os, pathlib, sys, time
path = pathlib.Path("shared.txt")
path.write_text(path.read_text() + sys.argv[1] + "\n")
if os.environ["SAGE_ATTEMPT"] == "1":
    warnings = pathlib.Path(".sage-warnings")
    deadline = time.monotonic() + 20
    while not warnings.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pathlib.Path(os.environ["SAGE_WORKTREE"], "..", "seen.txt").write_text(
        warnings.read_text() if warnings.exists() else "")
"""


def test_a_running_ticket_is_warned_when_what_it_touches_lands(repo, sage):
    script = repo.parent / "watcher.py"
    script.write_text(WATCHER)
    quick = ticket("A-1", command=resolver(repo, "A-1", "from A", 0.3))
    setup(repo, [quick, ticket("B-1", command=[sys.executable, str(script), "from B"])])
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    warned = [e for e in events(repo) if e["event"] == "may-conflict"]
    assert [(e["ticket"], e["landed"], e["files"]) for e in warned] == [
        ("B-1", "A-1", ["shared.txt"])
    ]
    seen = next(worktrees_dir(repo).rglob("seen.txt")).read_text()
    assert '"landed": "A-1"' in seen and "may conflict" in seen
    assert ".sage-warnings" not in git(repo, "log", "--name-only", "--format=", "main")
