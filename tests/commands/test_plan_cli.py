"""`sage plan --format gantt`, the simulated schedule in `plan --json`, and
`stream --dry-run --json`."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.conftest import FIXTURE, CliResult, ticket, write_index

Sage = Callable[..., CliResult]
TASK = re.compile(r"^    (.+) :(crit, )?([\w.-]+), ([\d.]+), ([\d.]+)$")


def test_plan_json_has_each_tickets_simulated_start_and_finish(sage: Sage, example: Path):
    plan = json.loads(sage("plan", "--parallel", "4", "--json", cwd=example).stdout)
    slots = {s["ticket"]: s for s in plan["timeline"]}
    assert len(slots) == 29
    assert max(s["finish"] for s in slots.values()) == plan["makespan_dynamic_minutes"] == 235
    index = json.loads(FIXTURE.read_text())["tickets"]
    for t in index:  # nothing starts before its dependencies finish; estimates are durations
        slot = slots[t["id"]]
        assert slot["finish"] - slot["start"] == t["estimate_minutes"]
        assert all(slots[d]["finish"] <= slot["start"] for d in t["dependencies"])
    for worker in {s["worker"] for s in slots.values()}:  # no worker runs two at once
        mine = sorted((s["start"], s["finish"]) for s in slots.values() if s["worker"] == worker)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(mine))
    assert {s["worker"] for s in slots.values()} == {1, 2, 3, 4}


def test_plan_gantt_is_mermaid_with_the_critical_path_marked(sage: Sage, example: Path):
    done = sage("plan", "--parallel", "4", "--format", "gantt", cwd=example)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == ["gantt", "    title sage plan: 4 workers, dynamic dispatch, makespan "
                         "235 min", "    dateFormat X", "    axisFormat %s"]  # fmt: skip
    assert [line for line in lines if line.startswith("    section")] == [
        f"    section worker {n}" for n in (1, 2, 3, 4)
    ]
    tasks = [TASK.match(line) for line in lines[4:] if not line.startswith("    section")]
    assert all(tasks) and len(tasks) == 29
    crit = sorted(m.group(3) for m in tasks if m and m.group(2))
    assert crit == ["TASK-001", "TASK-002", "TASK-004", "TASK-016", "TASK-017", "TASK-020"]


def test_gantt_names_cannot_break_mermaid(repo: Path, sage: Sage):
    write_index(repo, [ticket("X-1", title="Fix: a; b # c")])
    out = sage("plan", "--format", "gantt", cwd=repo).stdout
    assert "    X-1 Fix - a, b no. c :crit, X-1, 0, 1" in out.splitlines()


def test_stream_dry_run_json_is_json(repo: Path, sage: Sage):
    write_index(repo, [ticket("D-1", command=["echo", "{ticket_id}"]), ticket("D-2", "D-1"),
                       ticket("D-3")])  # fmt: skip
    done = sage("stream", "--dry-run", "--json", "--parallel", "2", cwd=repo)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["dry_run"] is True and data["plan"]["workers"] == 2
    assert data["would_start"][0] == {"ticket": "D-1", "argv": ["echo", "D-1"], "error": None}
    assert data["would_start"][1]["ticket"] == "D-3" and data["would_start"][1]["argv"] is None
    assert "no worker is configured" in data["would_start"][1]["error"]


def test_a_plan_with_nothing_to_run_says_what_the_index_holds(repo: Path, sage: Sage):
    write_index(repo, [ticket("P-1", state="COMPLETED"), ticket("P-2", state="DEFERRED"),
                       ticket("P-3", "P-2"), ticket("P-4", "P-3")])  # fmt: skip
    done = sage("plan", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "plan: nothing to run (1 completed, 1 deferred, 2 blocked by them); "
        "`sage stream --auto --retry-deferred` runs the deferred again\n"
    )
    write_index(repo, [ticket("P-1", state="COMPLETED")])
    assert sage("plan", cwd=repo).stdout == "plan: nothing to run (1 completed)\n"
