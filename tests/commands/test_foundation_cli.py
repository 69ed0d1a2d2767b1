"""The foundation commands through the real CLI: validate, ready, plan, graph, init."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FIXTURE, CliResult, ticket, write_index

Sage = Callable[..., CliResult]


def clean(result: CliResult) -> CliResult:
    """Every CLI result: never a traceback, whatever went wrong."""
    assert "Traceback" not in result.stdout + result.stderr
    assert "unexpected error" not in result.stderr
    return result


def test_validate_is_clean_on_the_example(sage: Sage, example: Path) -> None:
    result = clean(sage("validate", "--strict", cwd=example))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "29 tickets" in result.stdout
    assert "critical path: 220 min (3 h 40 min): TASK-001 → TASK-002" in result.stdout
    assert "ready now: 9 of 29 remaining" in result.stdout
    assert "recommended workers: 4" in result.stdout
    assert result.stdout.rstrip().endswith("ok: 0 errors, 0 warnings")


def test_plan_json_on_the_example(sage: Sage, example: Path) -> None:
    result = clean(sage("plan", "--parallel", "4", "--json", cwd=example))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["critical_path_minutes"] == 220 and plan["lower_bound_minutes"] == 220
    assert plan["total_minutes"] == 785 and plan["workers"] == 4
    assert plan["makespan_dynamic_minutes"] >= 220 and plan["makespan_batch_minutes"] >= 220
    assert plan["batch_stats"] == {"batches": 8, "per_batch": 4, "last_batch": 1}
    assert [len(w) for w in plan["waves"]] == [9, 8, 5, 4, 1, 2]


def test_plan_text_and_a_warning_above_eight_workers(sage: Sage, example: Path) -> None:
    result = clean(sage("plan", "--parallel", "12", cwd=example))
    assert result.returncode == 0
    assert "warning: 12 workers is above the recommended maximum of 8" in result.stderr
    assert "lower bound: 220 min (3 h 40 min) = max(critical path, work / 12)" in result.stdout
    assert "batches: 29 tickets, 12 workers → 3 batches" in result.stdout


def test_plan_shows_tickets_kept_apart_by_their_files(sage: Sage, repo: Path) -> None:
    write_index(repo, [
        ticket("REG-1", estimate_minutes=10, files=["registry.json"]),
        ticket("REG-2", estimate_minutes=10, files=["./registry.json", "docs/"]),
        ticket("DOC-1", estimate_minutes=10, files=["docs/**/*.md"]),
        ticket("SRC-1", estimate_minutes=10, files=["src/a.py"]),
    ])  # fmt: skip
    text = clean(sage("plan", "--parallel", "4", cwd=repo))
    assert text.returncode == 0, text.stderr
    assert "kept apart: DOC-1, REG-1, REG-2 (files: docs, docs/**/*.md, registry.json)" in (
        text.stdout
    )
    assert "makespan, dynamic dispatch: 20 min" in text.stdout
    assert "(10 min if the tickets kept apart ran at once: keeping them apart costs 10 min)" in (
        text.stdout
    )
    plan = json.loads(clean(sage("plan", "--parallel", "4", "--json", cwd=repo)).stdout)
    assert plan["makespan_dynamic_minutes"] == 20
    assert plan["makespan_dynamic_together_minutes"] == 10
    (group,) = plan["kept_apart"]
    assert group["tickets"] == ["DOC-1", "REG-1", "REG-2"]
    assert {"tickets": ["REG-1", "REG-2"], "files": ["registry.json"]} in group["pairs"]


def test_files_must_be_a_list_of_strings(sage: Sage, repo: Path) -> None:
    write_index(repo, [ticket("BAD-1", files="src/a.py")])
    result = clean(sage("validate", cwd=repo))
    assert result.returncode == 1
    assert '"files" must be a list of paths or globs' in result.stdout + result.stderr


def test_ready_json_lists_tickets_in_dispatch_order(sage: Sage, example: Path) -> None:
    result = clean(sage("ready", "--json", cwd=example))
    rows = json.loads(result.stdout)
    assert len(rows) == 9 and rows[0]["id"] == "TASK-001"
    assert all({"id", "priority", "title"} <= set(r) for r in rows)
    ranks = [r["priority"] for r in rows]
    assert ranks == sorted(ranks)
    text = clean(sage("ready", cwd=example)).stdout.splitlines()
    assert [line.split("\t")[0] for line in text] == [r["id"] for r in rows]


CYCLE_INDEX = [
    ticket("CYC-1", "CYC-3"),
    ticket("CYC-2", "CYC-1"),
    ticket("CYC-3", "CYC-2"),
    ticket("DOWN-1", "CYC-2"),  # depends on the cycle, is not on it
    ticket("DOWN-2", "DOWN-1"),
    ticket("FREE-1"),
    ticket("LOST-1", "FREE-1", "GHOST-404"),
    ticket("SELF-1", "SELF-1"),
]


def test_one_run_reports_the_cycle_on_one_line_and_the_missing_id(sage: Sage, repo: Path) -> None:
    write_index(repo, CYCLE_INDEX)
    result = clean(sage("validate", cwd=repo))
    assert result.returncode == 1
    cycle_lines = [line for line in result.stdout.splitlines() if "cycle:" in line]
    assert "  error: cycle: CYC-1 → CYC-2 → CYC-3 → CYC-1" in cycle_lines
    assert "  error: cycle: SELF-1 → SELF-1" in cycle_lines
    assert len(cycle_lines) == 2
    assert not any("DOWN-" in line or "FREE-" in line for line in cycle_lines)
    assert "LOST-1: depends on unknown ticket GHOST-404" in result.stdout
    assert "FAILED: 3 errors" in result.stdout


def test_commands_that_act_refuse_an_index_with_errors(sage: Sage, repo: Path) -> None:
    write_index(repo, CYCLE_INDEX)
    for command in (["plan"], ["ready"]):
        result = clean(sage(*command, cwd=repo))
        assert result.returncode == 1
        assert result.stderr.startswith("error: the ticket index has 3 errors")
        assert "hint: run `sage validate` to see every problem" in result.stderr


def test_bad_tickets_are_each_named(sage: Sage, repo: Path) -> None:
    unsafe = ["../x", "a b", "..", "x.lock", "-rf", "ctl\x01x", "\u0422ASK-1"]
    write_index(repo, [
        ticket("DUP-1"), ticket("DUP-1"), ticket("DUP-2"), ticket("DUP-2"),
        ticket("ENUM-1", state="DONE", priority="P7", type="wish"),
        *(ticket(tid) for tid in unsafe),
    ])  # fmt: skip
    result = clean(sage("validate", "--json", cwd=repo))
    assert result.returncode == 1
    errors = json.loads(result.stdout)["errors"]
    named = {(e["code"], e["ticket"]) for e in errors}
    assert {("duplicate-id", "DUP-1"), ("duplicate-id", "DUP-2")} <= named
    assert {("bad-state", "ENUM-1"), ("bad-priority", "ENUM-1"), ("bad-type", "ENUM-1")} <= named
    assert {("unsafe-id", tid) for tid in unsafe} <= named
    lookalike = next(e for e in errors if e["ticket"] == "\u0422ASK-1")
    assert "non-ASCII" in lookalike["message"]


def test_validate_json_shape(sage: Sage, example: Path) -> None:
    result = clean(sage("validate", "--json", cwd=example))
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "index", "tickets", "errors", "warnings", "checks", "analysis"}
    assert data["ok"] is True and data["tickets"] == 29 and data["errors"] == []
    assert data["index"].endswith(".sage/tickets/index.json")
    assert {c["name"] for c in data["checks"]} >= {"git", "repository", "queue dir", "lock dir"}
    assert all(set(c) == {"name", "ok", "detail"} for c in data["checks"])
    assert data["analysis"]["critical_path_minutes"] == 220
    assert data["analysis"]["width_per_level"] == [9, 8, 5, 4, 1, 2]


def test_strict_fails_on_warnings(sage: Sage, repo: Path) -> None:
    write_index(repo, [ticket("lower_case")])
    plain = clean(sage("validate", "--json", cwd=repo))
    assert plain.returncode == 0
    assert [w["code"] for w in json.loads(plain.stdout)["warnings"]] == ["id-format"]
    strict = clean(sage("validate", "--strict", cwd=repo))
    assert strict.returncode == 1 and "FAILED: 0 errors, 1 warning" in strict.stdout


def test_malformed_json_names_line_and_column(sage: Sage, repo: Path) -> None:
    index = repo / ".sage" / "tickets" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text('{"tickets": [\n  {"id": "A-1", "title": "x"}\n  {"id": "A-2"}\n]}\n')
    result = clean(sage("validate", cwd=repo))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {index}:3:3: invalid JSON")
    assert "hint: fix the syntax at that line and column" in result.stderr


def test_a_missing_index_says_how_to_make_one(sage: Sage, tmp_path: Path) -> None:
    missing = clean(sage("validate", cwd=tmp_path))
    assert missing.returncode == 1 and "no ticket index" in missing.stderr
    assert "sage init" in missing.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "--bogus"],
        ["plan", "--parallel", "0", "--index", str(FIXTURE)],
        ["plan", "--parallel", "lots", "--index", str(FIXTURE)],
        ["graph", "--format", "svg"],
    ],
)
def test_usage_errors_exit_2(sage: Sage, tmp_path: Path, argv: list[str]) -> None:
    result = clean(sage(*argv, cwd=tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip()


def test_graph_formats(sage: Sage, example: Path) -> None:
    mermaid = clean(sage("graph", cwd=example)).stdout
    assert mermaid.startswith("graph TD") and "n_TASK_001 --> n_TASK_002" in mermaid
    dot = clean(sage("graph", "--format", "dot", cwd=example)).stdout
    assert dot.startswith("digraph sage {") and '"TASK-001" -> "TASK-002";' in dot
    data = json.loads(clean(sage("graph", "--format", "json", cwd=example)).stdout)
    assert len(data["nodes"]) == 29 and data["cycles"] == []
    assert {"from": "TASK-001", "to": "TASK-002"} in data["edges"]


def test_graph_json_shows_cycles(sage: Sage, repo: Path) -> None:
    write_index(repo, CYCLE_INDEX)
    data = json.loads(clean(sage("graph", "--format", "json", cwd=repo)).stdout)
    assert sorted(data["cycles"]) == [["CYC-1", "CYC-2", "CYC-3"], ["SELF-1"]]


def test_init_then_validate(sage: Sage, repo: Path) -> None:
    first = clean(sage("init", cwd=repo))
    assert first.returncode == 0
    assert "created .sage/tickets/index.json" in first.stdout
    assert "created .sage/config.toml" in first.stdout
    again = clean(sage("init", cwd=repo))
    assert again.returncode == 0 and "already set up" in again.stdout
    empty = clean(sage("validate", cwd=repo))
    assert empty.returncode == 0 and "0 tickets" in empty.stdout


def test_a_bad_config_value_is_one_clear_error(sage: Sage, example: Path) -> None:
    (example / ".sage" / "config.toml").write_text('[stream]\non_error = "explode"\n')
    result = clean(sage("validate", cwd=example))
    assert result.returncode == 1
    assert "config.toml (on_error): bad value 'explode' for on_error" in result.stderr
    (example / ".sage" / "config.toml").write_text('[stream]\non_error = "fail"\n')
    env = clean(sage("plan", cwd=example, env={"SAGE_SCHEDULE": "sideways"}))
    assert env.returncode == 1 and "SAGE_SCHEDULE" in env.stderr
