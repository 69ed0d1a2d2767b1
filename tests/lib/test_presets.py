"""Worker presets: the documented argv, and stand-in agents of the same names on PATH."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sage.lib import presets, proc
from tests.conftest import CliResult, git, ticket, write_index

Sage = Callable[..., CliResult]
NAMES = ("claude", "codex", "aider")

STANDIN = """\
#!{python}
import json, os, pathlib, sys
name = pathlib.Path(sys.argv[0]).name
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps({{"name": name, "argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
ticket = os.environ.get("SAGE_TICKET_ID", "manual")
pathlib.Path(f"{{name}}-{{ticket}}.txt").write_text(" ".join(sys.argv[1:]) + "\\n")
"""


def documented() -> dict[str, list[str]]:
    """The preset table in the module docstring, PROMPT standing for the prompt argument."""
    rows = re.findall(r"^\| `(\w+)` +\| `([^`]+)` \|$", presets.__doc__ or "", re.MULTILINE)
    return {name: argv.split(" ") for name, argv in rows}


def test_the_docstring_table_is_the_presets() -> None:
    table = documented()
    assert set(table) == set(presets.PRESETS) == set(NAMES)
    for name, argv in table.items():
        assert [presets.PROMPT if a == "PROMPT" else a for a in argv] == list(presets.PRESETS[name])


def test_expand_only_replaces_a_lone_preset_name() -> None:
    assert presets.expand(["claude"]) == presets.PRESETS["claude"]
    assert presets.expand(["claude", "-p", "hi"]) == ("claude", "-p", "hi")
    assert presets.expand(["./my-agent", "{ticket_id}"]) == ("./my-agent", "{ticket_id}")


def test_render_fills_placeholders_once() -> None:
    values = {"ticket_id": "A-1", "title": "Use {worktree} {x}", "context_file": "/c.md"}
    argv = presets.render(["run", "{ticket_id}:{title}", "{context_file}", "{unknown}"], values)
    assert argv == ["run", "A-1:Use {worktree} {x}", "/c.md", "{unknown}"]


def test_every_preset_hands_over_the_context_file_non_interactively() -> None:
    values = {"ticket_id": "A-1", "title": "T", "worktree": "/w", "context_file": "/ctx/A-1.md"}
    for name in NAMES:
        argv = presets.render(presets.expand([name]), values)
        assert argv[0] == name
        assert any("/ctx/A-1.md" in arg for arg in argv), name
        assert not any("{" in arg for arg in argv), name
    assert "-p" in presets.PRESETS["claude"]
    assert presets.PRESETS["codex"][1] == "exec"
    assert "--message" in presets.PRESETS["aider"]


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`claude`, `codex` and `aider` stand-ins first on PATH; each logs its argv to STANDIN_LOG."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in NAMES:
        path = folder / name
        path.write_text(STANDIN.format(python=sys.executable))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_LOG", str(tmp_path / "standin.log"))
    return folder


def logged(tmp_path: Path) -> list[dict[str, object]]:
    lines = (tmp_path / "standin.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("name", NAMES)
def test_a_preset_runs_its_agent_in_the_worktree(
    name: str, standins: Path, repo: Path, tmp_path: Path
) -> None:
    context = tmp_path / "A-1.md"
    context.write_text("# A-1: Add a file\n")
    values = {"ticket_id": "A-1", "title": "Add a file", "worktree": str(repo),
              "context_file": str(context)}  # fmt: skip
    argv = presets.render(presets.expand([name]), values)
    done = proc.run(argv, cwd=repo)
    assert done.returncode == 0, done.stderr
    [record] = logged(tmp_path)
    assert record == {"name": name, "argv": argv[1:], "cwd": str(repo)}
    assert git(repo, "status", "--porcelain") == f"?? {name}-manual.txt"


@pytest.mark.parametrize("name", NAMES)
def test_validate_finds_the_preset_binary(
    name: str, standins: Path, repo: Path, sage: Sage
) -> None:
    write_index(repo, [ticket("A-1")])
    found = sage("validate", cwd=repo, env={"SAGE_WORKER": name})
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"ok worker: {name} found at {standins / name}" in found.stdout


def test_validate_reports_a_missing_preset_binary(repo: Path, sage: Sage) -> None:
    git_dir = str(Path(shutil.which("git") or "/usr/bin/git").parent)
    if shutil.which("claude", path=git_dir):
        pytest.skip("a real claude is installed next to git")
    write_index(repo, [ticket("A-1")])
    missing = sage("validate", cwd=repo, env={"SAGE_WORKER": "claude", "PATH": git_dir})
    assert missing.returncode == 1
    assert "!! worker: claude not found on PATH" in missing.stdout


@pytest.mark.slow
def test_stream_lands_tickets_with_the_claude_preset(
    standins: Path, repo: Path, sage: Sage, tmp_path: Path
) -> None:
    if importlib.util.find_spec("sage.commands.stream") is None:
        pytest.skip("sage stream is not built yet")
    write_index(repo, [ticket("A-1"), ticket("A-2"), ticket("A-3", "A-1")])
    done = sage("stream", "--auto", "--parallel", "2", "--worker", "claude", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    landed = git(repo, "ls-tree", "--name-only", "HEAD").splitlines()
    assert {"claude-A-1.txt", "claude-A-2.txt", "claude-A-3.txt"} <= set(landed)
    assert {r["argv"][0] for r in logged(tmp_path)} == {"-p"}  # type: ignore[index]
    states = json.loads((repo / ".sage/tickets/index.json").read_text())["tickets"]
    assert {t["state"] for t in states} == {"COMPLETED"}
