"""Agent adapters: the documented argv, and stand-in agents of the same names on PATH."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sage.lib import agents, config, proc, workers
from sage.lib.errors import ConfigError
from sage.lib.outcomes import Outcome
from sage.lib.tickets import Ticket
from tests.conftest import CliResult, git, ticket, write_index

Sage = Callable[..., CliResult]
NAMES = ("claude", "codex", "aider")

STANDIN = """\
#!{python}
import json, os, pathlib, sys
name = pathlib.Path(sys.argv[0]).name
if sys.argv[1:2] == ["--version"] or "--help" in sys.argv:
    print(os.environ.get("STANDIN_HELP", "stand-in 1.0"))
    sys.exit(0)
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps({{"name": name, "argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
ticket = os.environ.get("SAGE_TICKET_ID", "manual")
pathlib.Path(f"{{name}}-{{ticket}}.txt").write_text(" ".join(sys.argv[1:]) + "\\n")
"""


WORDS = {"PROMPT": [agents.PROMPT], "TOOLS": list(agents.CLAUDE_TOOLS), "MODEL": [], "ARGS": []}


def documented(text: str) -> dict[str, list[str]]:
    """A preset table, its capitalised words (PROMPT, TOOLS, …) filled as with no settings."""
    rows = re.findall(r"^\| `(\w+)` +\| `([^`]+)` \|$", text, re.MULTILINE)
    return {name: [w for a in argv.split(" ") for w in WORDS.get(a, [a])] for name, argv in rows}


def test_the_docstring_and_readme_tables_are_the_presets() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for table in (documented(agents.__doc__ or ""), documented(readme)):
        assert set(table) == set(agents.PRESETS) == set(NAMES)
        for name, argv in table.items():
            assert argv == list(agents.PRESETS[name]), name


def test_settings_add_the_model_and_args() -> None:
    settings = {"codex": agents.Settings(model="gpt-x", args=("-c", "a=1"))}
    argv = agents.expand(["codex"], settings)
    assert argv[-5:] == ("--model", "gpt-x", "-c", "a=1", agents.PROMPT)
    assert agents.expand(["claude"], settings) == agents.PRESETS["claude"]
    assert agents.timeout_for(argv, 0, settings) == agents.DEFAULT_TIMEOUT
    assert agents.timeout_for(argv, 5, settings) == 5
    assert agents.timeout_for(("./script",), 0) == 0
    unlimited = {"codex": agents.Settings(timeout=0)}
    assert agents.timeout_for(argv, 0, unlimited) == math.inf


def test_expand_only_replaces_a_lone_preset_name() -> None:
    assert agents.expand(["claude"]) == agents.PRESETS["claude"]
    assert agents.expand(["claude", "-p", "hi"]) == ("claude", "-p", "hi")
    assert agents.expand(["./my-agent", "{ticket_id}"]) == ("./my-agent", "{ticket_id}")
    assert agents.detect(["/opt/bin/claude", "-p"]) is agents.ADAPTERS["claude"]
    assert agents.detect(["./my-agent"]) is None


def test_render_fills_placeholders_once() -> None:
    values = {"ticket_id": "A-1", "title": "Use {worktree} {x}", "context_file": "/c.md"}
    argv = agents.render(["run", "{ticket_id}:{title}", "{context_file}", "{unknown}"], values)
    assert argv == ["run", "A-1:Use {worktree} {x}", "/c.md", "{unknown}"]


def test_every_preset_hands_over_the_context_file_non_interactively() -> None:
    values = {"ticket_id": "A-1", "title": "T", "worktree": "/w", "context_file": "/ctx/A-1.md"}
    for name in NAMES:
        argv = agents.render(agents.expand([name]), values)
        assert argv[0] == name
        assert any("/ctx/A-1.md" in arg for arg in argv), name
        assert not any("{" in arg for arg in argv), name
    assert "-p" in agents.PRESETS["claude"]
    assert agents.PRESETS["codex"][1] == "exec"
    assert "--message" in agents.PRESETS["aider"]


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
    monkeypatch.setenv("STANDIN_HELP", " ".join(a for v in agents.PRESETS.values() for a in v))
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
    argv = agents.render(agents.expand([name]), values)
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


def test_agents_config_sections(tmp_path: Path) -> None:
    (tmp_path / ".sage").mkdir()
    (tmp_path / ".sage/config.toml").write_text(
        '[agents.claude]\nmodel = "sonnet"\nargs = "--max-budget-usd 2"\ntimeout = 600\n'
        'env = { ANTHROPIC_BASE_URL = "http://127.0.0.1:9" }\n'
    )
    settings = config.load(tmp_path).agents
    assert settings == {"claude": agents.Settings(model="sonnet", args=("--max-budget-usd", "2"),
                        timeout=600, env={"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})}  # fmt: skip
    argv = agents.expand(["claude"], settings)
    assert argv[argv.index("--model") + 1 : argv.index("--allowedTools")] == (
        "sonnet", "--max-budget-usd", "2")  # fmt: skip
    assert agents.env_for(argv, settings) == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agents.opencode]\nmodel = 'x'\n", "unknown agent [agents.opencode]"),
        ("[agents.codex]\nflags = []\n", "unknown key 'flags' in [agents.codex]"),
        ("[agents.codex]\ntimeout = -1\n", "bad value -1 for timeout"),
        ("[agents.aider]\nenv = { A = 1 }\n", "bad value {'A': 1} for env"),
        ("[agents]\nmodel = 'x'\n", "[agents] must hold tables"),
    ],
)
def test_bad_agents_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / ".sage").mkdir()
    (tmp_path / ".sage/config.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(tmp_path)


def test_a_missing_agent_binary_is_unusable(repo: Path, tmp_path: Path) -> None:
    context = tmp_path / "A-1.context.md"
    context.write_text("# A-1\n")
    argv = ("/nonexistent/claude", *agents.PRESETS["claude"][1:])
    job = workers.WorkerJob(ticket=Ticket(id="A-1", title="T"), run_id="r", attempt=1,
                            base=git(repo, "rev-parse", "HEAD"), argv=argv, timeout=10,
                            log=tmp_path / "A-1.log", context_file=context)  # fmt: skip
    result = workers.run(repo, tmp_path / "slot", job)
    assert result.outcome == Outcome.UNUSABLE
    assert "cannot start /nonexistent/claude" in result.detail
