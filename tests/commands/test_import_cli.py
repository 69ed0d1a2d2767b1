"""`sage import` and `sage add` through the real CLI, in real repositories."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, CliResult, ticket, write_index
from tests.lib.test_tasklist import SPEC_KIT, TASK_LIST, seed

Sage = Callable[..., CliResult]
INDEX = Path(".sage/tickets/index.json")


def clean(result: CliResult) -> CliResult:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert "unexpected error" not in result.stderr
    return result


def entries(repo: Path) -> dict[str, dict[str, object]]:
    return {e["id"]: e for e in json.loads((repo / INDEX).read_text())["tickets"]}


@pytest.mark.parametrize("prefix", ["000", "001", "002", "003", "004"])
def test_each_seed_imports_and_validates_strictly(prefix: str, repo: Path, sage: Sage) -> None:
    done = clean(sage("import", str(seed(prefix)), cwd=repo))
    assert done.returncode == 0, done.stderr
    checked = clean(sage("validate", "--strict", cwd=repo))
    assert checked.returncode == 0, checked.stdout


def test_seed_003_all_open_is_the_par_001_plan(repo: Path, sage: Sage) -> None:
    done = clean(sage("import", "--all-open", str(ROOT / "examples" / "par-001.md"), cwd=repo))
    assert done.returncode == 0 and "29 tasks (task-list)" in done.stdout
    checked = clean(sage("validate", "--strict", cwd=repo))
    assert "critical path: 220 min (3 h 40 min): TASK-001 → TASK-002" in checked.stdout
    assert "ready now: 9 of 29 remaining" in checked.stdout


def test_spec_kit_import_sets_the_id_pattern_once(repo: Path, sage: Sage) -> None:
    (repo / "tasks.md").write_text(SPEC_KIT)
    assert sage("init", cwd=repo).returncode == 0
    first = clean(sage("import", "tasks.md", cwd=repo))
    assert "set [tickets] id_pattern = 'T[0-9]+[a-z]*'" in first.stdout
    config = (repo / ".sage" / "config.toml").read_text()
    assert "id_pattern = 'T[0-9]+[a-z]*'" in config and "# sage configuration" in config
    assert clean(sage("validate", "--strict", cwd=repo)).returncode == 0
    again = clean(sage("import", "tasks.md", cwd=repo))
    assert "nothing to change" in again.stdout and "id_pattern" not in again.stdout


def test_dry_run_and_json_write_nothing(repo: Path, sage: Sage) -> None:
    (repo / "tasks.md").write_text(TASK_LIST)
    dry = clean(sage("import", "tasks.md", "--dry-run", "--json", cwd=repo))
    report = json.loads(dry.stdout)
    assert report["added"] == ["TASK-001", "TASK-002", "TASK-003"] and not report["written"]
    assert report["form"] == "task-list" and report["completed"] == ["TASK-002"]
    assert not (repo / INDEX).exists()
    text = clean(sage("import", "tasks.md", "--dry-run", cwd=repo))
    assert "would add: 3" in text.stdout and "dry run: nothing written" in text.stdout


def test_reimport_keeps_states_and_added_fields(repo: Path, sage: Sage) -> None:
    write_index(repo, [ticket("AUTH-001")])
    (repo / "tasks.md").write_text(TASK_LIST)
    assert clean(sage("import", "tasks.md", cwd=repo)).returncode == 0
    index = json.loads((repo / INDEX).read_text())
    for entry in index["tickets"]:
        if entry["id"] == "TASK-001":
            entry.update(state="DEFERRED", command=["make", "one"])
    (repo / INDEX).write_text(json.dumps(index))
    (repo / "tasks.md").write_text(TASK_LIST.replace("First thing", "First, better"))
    again = clean(sage("import", "tasks.md", "--json", cwd=repo))
    report = json.loads(again.stdout)
    assert report["updated"] == {"TASK-001": ["title"]}
    assert report["kept_state"] == {"TASK-001": "DEFERRED"}
    assert report["not_in_file"] == ["AUTH-001"]
    found = entries(repo)
    assert found["TASK-001"]["state"] == "DEFERRED" and found["TASK-001"]["command"] == [
        "make", "one"]  # fmt: skip
    assert found["TASK-001"]["title"] == "First, better" and "AUTH-001" in found


def test_a_list_that_would_break_the_index_writes_nothing(repo: Path, sage: Sage) -> None:
    write_index(repo, [ticket("CORE-001")])
    before = (repo / INDEX).read_text()
    (repo / "tasks.md").write_text(
        "- [ ] **TASK-001: A**\n  - **Dependencies:** CORE-01\n"
        "- [ ] **TASK-002: B**\n  - **Dependencies:** TASK-003\n"
        "- [ ] **TASK-003: C**\n  - **Dependencies:** TASK-002\n"
    )
    done = clean(sage("import", "tasks.md", cwd=repo))
    assert done.returncode == 1 and "nothing written" in done.stderr
    assert "depends on unknown ticket CORE-01" in done.stderr
    assert "did you mean CORE-001?" in done.stderr
    assert "cycle: TASK-002 → TASK-003 → TASK-002" in done.stderr
    assert (repo / INDEX).read_text() == before


def test_bad_files_are_one_line_errors(repo: Path, sage: Sage) -> None:
    missing = clean(sage("import", "nope.md", cwd=repo))
    assert missing.returncode == 1 and "error: no such file: nope.md" in missing.stderr
    (repo / "plan.md").write_text("# A plan\n\n- [ ] write it\n")
    empty = clean(sage("import", "plan.md", cwd=repo))
    assert empty.returncode == 1 and "no tasks found" in empty.stderr and "hint:" in empty.stderr


def test_add_writes_one_checked_ticket(repo: Path, sage: Sage) -> None:
    done = clean(sage("add", "CORE-001", "Core", "--estimate", "1.5 hours", cwd=repo))
    assert done.returncode == 0 and "added CORE-001" in done.stdout
    args = ["--dep", "CORE-001", "--priority", "p1", "--files", "a.py,b.py", "--files", "c/"]
    assert (
        clean(sage("add", "CORE-002", "Next", *args, "--command", "make x", cwd=repo)).returncode
        == 0
    )
    found = entries(repo)
    assert (
        found["CORE-001"]["estimate_minutes"] == 90 and found["CORE-001"]["state"] == "UNPROCESSED"
    )
    assert found["CORE-002"] == {
        "id": "CORE-002", "title": "Next", "state": "UNPROCESSED", "priority": "P1",
        "type": "implementation", "dependencies": ["CORE-001"], "files": ["a.py", "b.py", "c/"],
        "command": ["make", "x"]}  # fmt: skip
    assert clean(sage("validate", "--strict", cwd=repo)).returncode == 0


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["CORE-001", "again"], 1, "ticket CORE-001 already exists"),
        (["APP-001", "x", "--dep", "CORE-01"], 1, "hint: did you mean CORE-001?"),
        (["APP-001", "x", "--priority", "P7"], 1, "priority 'P7' is not one of"),
        (["../x", "x"], 2, "ID '../x' contains '..'"),
        (["APP-001", "x", "--estimate", "soon"], 2, "--estimate 'soon' is not a duration"),
    ],
)
def test_add_refuses_and_writes_nothing(
    repo: Path, sage: Sage, args: list[str], code: int, said: str
) -> None:
    write_index(repo, [ticket("CORE-001")])
    before = (repo / INDEX).read_text()
    done = clean(sage("add", *args, cwd=repo))
    assert done.returncode == code and said in done.stderr, done.stderr
    assert (repo / INDEX).read_text() == before


def test_add_warns_about_an_unusual_id(repo: Path, sage: Sage) -> None:
    done = clean(sage("add", "t1", "lower case", cwd=repo))
    assert done.returncode == 0 and "t1 does not look like PREFIX-123" in done.stderr
