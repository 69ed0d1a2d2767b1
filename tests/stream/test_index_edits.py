"""The index is the user's while a stream runs: their uncommitted edits (a new ticket, a
retitled one) and the landings' COMPLETED both survive, and nothing is blocked by them."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import git, ticket, wait_for
from tests.reliability.conftest import SAGE, committed_state
from tests.stream.conftest import index_file, py, states, trailers


def parsed_once(path: Path, holds: Callable[[Any], bool], timeout: float) -> Any:
    """The file as an editor reads it, once it reads whole and `holds` of it: the checkout's
    update writes a changed file as git does (removed, then written anew), so for a moment it is
    gone or short."""
    read: list[Any] = []

    def whole() -> bool:
        try:
            read[:] = [json.loads(path.read_text())]
        except (FileNotFoundError, ValueError):
            return False
        return holds(read[0])

    wait_for(whole, timeout)
    return read[0]


def test_editing_the_index_during_a_run_blocks_nothing_and_loses_no_edit(
    repo: Path, tickets_repo
) -> None:
    gate = repo.parent / "gate"
    waits = py(
        f"import pathlib,time\nwhile not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.01)\n"
        "pathlib.Path('b.txt').write_text('b')"
    )
    first = py("import pathlib; pathlib.Path('a.txt').write_text('a')")
    tickets_repo([ticket("E-1", command=first), ticket("E-2", command=waits),
                  ticket("E-3", "E-1", command=py("open('c.txt', 'w').write('c')"))])  # fmt: skip
    run = subprocess.Popen([*SAGE, "stream", "--auto", "--parallel", "2"], cwd=repo,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(run.communicate(timeout=120)))
    reader.start()
    index = repo / ".sage/tickets/index.json"
    # E-1 landed, and the checkout followed: the user's copy says so (the target moves first, the
    # user's files a moment later). An edit of an older copy would undo that, as theirs.
    wait_for(lambda: "E-1" in trailers(repo), timeout=60)
    data = parsed_once(index, lambda d: '"COMPLETED"' in json.dumps(d), timeout=60)

    # The user, mid-run: a new ticket and a better title, not committed.
    data["tickets"][1]["title"] = "Wait for the gate, then write b"
    data["tickets"].append(ticket("E-9", title="Later, by hand"))
    index.write_text(json.dumps(data, indent=2) + "\n")
    gate.write_text("")
    reader.join(timeout=120)

    assert run.returncode == 0, out
    assert sorted(trailers(repo)) == ["E-1", "E-2", "E-3"]  # nothing blocked by the edit
    mine = {t["id"]: t for t in index_file(repo)["tickets"]}
    assert mine["E-2"]["title"] == "Wait for the gate, then write b"  # the user's edits…
    assert mine["E-9"]["title"] == "Later, by hand"
    assert [mine[t]["state"] for t in ("E-1", "E-2", "E-3")] == ["COMPLETED"] * 3  # …and sage's
    assert states(repo)["E-9"] == "UNPROCESSED"
    head = git(repo, "rev-parse", "main")
    assert committed_state(repo, head, "E-9") is None  # the user's edit stays theirs to commit
    changed = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "-uno"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert changed.splitlines() == [" M .sage/tickets/index.json"], changed


def test_a_ticket_the_user_has_not_committed_lands_and_says_so_in_their_copy(
    repo: Path, tickets_repo
) -> None:
    tickets_repo([ticket("E-1", command=py("open('a.txt', 'w').write('a')"))])
    index = repo / ".sage/tickets/index.json"
    data = json.loads(index.read_text())
    data["tickets"].append(ticket("E-2", command=py("open('b.txt', 'w').write('b')")))
    index.write_text(json.dumps(data, indent=2) + "\n")  # not committed

    done = subprocess.run([*SAGE, "stream", "--auto"], cwd=repo, capture_output=True,
                          text=True, timeout=120)  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(trailers(repo)) == ["E-1", "E-2"]
    mine = {t["id"]: t["state"] for t in index_file(repo)["tickets"]}
    assert mine == {"E-1": "COMPLETED", "E-2": "COMPLETED"}  # in the user's copy, uncommitted
    head = git(repo, "rev-parse", "main")
    assert committed_state(repo, head, "E-1") == "COMPLETED"
    assert committed_state(repo, head, "E-2") is None
