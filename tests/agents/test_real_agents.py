"""Each adapter against its real CLI: what lands, what the agent read, and how sage reads the end.

The CLIs talk to the scripted model server only (see conftest.py). Alone:
`python3 dev.py tools && .venv/bin/python -m pytest -q tests/agents`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sage.lib import agents, workers
from sage.lib.outcomes import Outcome
from sage.lib.tickets import Ticket
from tests.agents.conftest import MARKER, AgentEnv
from tests.agents.server import ModelServer, Script
from tests.conftest import CliResult, git, state_dir

Sage = Callable[..., CliResult]
NAMES = ("claude", "codex", "aider")
pytestmark = pytest.mark.timeout(240)


def attempt(
    repo: Path, name: str, env: dict[str, str], tmp_path: Path, args: tuple[str, ...] = ()
) -> workers.WorkerResult:
    """One attempt of ticket A-1 through `workers.run`, in process, with the adapter's argv."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    context = run_dir / "A-1.context.md"
    context.write_text(f"# A-1: Write hello.py\n\nWrite hello.py. Ticket code {MARKER}.\n")
    ticket = Ticket(id="A-1", title="Write hello.py")
    job = workers.WorkerJob(
        ticket=ticket,
        run_id="r1",
        attempt=1,
        base=git(repo, "rev-parse", "HEAD"),
        argv=agents.expand([name], {name: agents.Settings(args=args)}),
        timeout=180,
        log=run_dir / "A-1.log",
        context_file=context,
        env=env,
    )
    return workers.run(repo, tmp_path / "slot", job)


def context_seen(server: ModelServer) -> bool:
    """The server saw MARKER come back from the agent (a tool result, or aider's read-only file)."""
    return any(MARKER in json.dumps(r["body"]) for r in server.script.requests)


# ---- a ticket lands -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_ticket_lands_as_one_commit_with_its_trailer(
    name: str, project: Path, sage: Sage, server: ModelServer, script: Script, agent_env: AgentEnv
) -> None:
    base = git(project, "rev-parse", "HEAD")
    done = sage("stream", "--auto", "--worker", name, cwd=project, env=agent_env(name), timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr + _log(project)
    assert git(project, "log", "--format=%s", f"{base}..HEAD") == "A-1: Write hello.py"
    body = git(project, "log", "-1", "--format=%B")
    assert body.startswith("A-1: Write hello.py") and "Sage-Ticket: A-1" in body
    changed = git(project, "diff", "--name-only", "HEAD~1", "HEAD").splitlines()
    assert set(changed) - {".sage/tickets/index.json"} == {"hello.py"}, changed  # no .gitignore
    assert (project / "hello.py").read_text() == script.content
    assert context_seen(server), "the context file's text never reached the model"
    states = json.loads((project / ".sage/tickets/index.json").read_text())["tickets"]
    assert [t["state"] for t in states] == ["COMPLETED"]
    assert re.search(r"agents: [1-9]\d* tokens, \$\d+\.\d\d spent", done.stdout), done.stdout


def _log(repo: Path) -> str:
    return "".join(p.read_text() for p in (state_dir(repo) / "runs").glob("*/A-1.log"))


@pytest.mark.parametrize("name", NAMES)
def test_usage_and_the_tests_run_are_reported(
    name: str, project: Path, server: ModelServer, agent_env: AgentEnv, tmp_path: Path
) -> None:
    result = attempt(project, name, agent_env(name), tmp_path)
    assert result.outcome == Outcome.OK, result.detail + (tmp_path / "run/A-1.log").read_text()
    assert result.usage is not None and result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    if name == "claude":
        assert result.usage.cost_usd is not None
    if name != "aider":  # aider has no tool calls: it never runs commands unasked
        assert "1 passed" in json.dumps(server.script.requests), "the tests did not run"


def test_claude_may_not_run_what_its_tools_do_not_allow(
    project: Path, server: ModelServer, agent_env: AgentEnv, tmp_path: Path
) -> None:
    server.script.test_command = "rm -rf /tmp/not-allowed"
    result = attempt(project, "claude", agent_env("claude"), tmp_path)
    assert result.outcome == Outcome.OK
    assert result.detail == "1 tool call refused: Bash"
    last = server.script.requests[-1]["body"]["messages"]
    results = [b for m in last if isinstance(m["content"], list) for b in m["content"]]
    [refused] = [b for b in results if b.get("tool_use_id") == "toolu_test"]
    assert refused["is_error"] is True


# ---- throttled, unusable ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_429_on_every_call_is_throttled(
    name: str, project: Path, server: ModelServer, agent_env: AgentEnv, tmp_path: Path
) -> None:
    server.script.mode = "429"
    result = attempt(project, name, agent_env(name), tmp_path)
    assert result.outcome == Outcome.THROTTLED, result.detail
    assert "429" in result.detail or "rate limit" in result.detail.lower()
    if name != "codex":  # codex does not pass the server's message on
        assert result.retry_after == 120  # "Try again in 2 minutes."
    if name == "aider":  # it would retry for a minute, in vain: the limit resets in two
        assert "sage stopped aider" in result.detail, result.detail
    assert result.seconds < 20, result.seconds
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""


def test_aider_is_left_to_wait_out_a_short_rate_limit_itself(
    project: Path, server: ModelServer, agent_env: AgentEnv, tmp_path: Path
) -> None:
    # the openai SDK inside aider retries twice by itself; the fourth 429 reaches aider
    server.script.mode, server.script.retry_in, server.script.throttled_calls = "429", 1, 4
    result = attempt(project, "aider", agent_env("aider"), tmp_path)
    log = (tmp_path / "run/A-1.log").read_text()
    assert result.outcome == Outcome.OK, result.detail + log
    assert "RateLimitError" in log and "Retrying in" in log, log  # aider's retry: not stopped
    assert git(project, "show", f"{result.head}:hello.py") == server.script.content.strip()


@pytest.mark.parametrize("name", NAMES)
def test_a_401_is_unusable(
    name: str, project: Path, server: ModelServer, agent_env: AgentEnv, tmp_path: Path
) -> None:
    server.script.mode = "401"
    result = attempt(project, name, agent_env(name), tmp_path)
    assert result.outcome == Outcome.UNUSABLE, result.detail
    assert result.detail


@pytest.mark.parametrize("name", NAMES)
def test_an_option_the_cli_rejects_is_unusable(
    name: str, project: Path, server: ModelServer, agent_env: AgentEnv, tmp_path: Path
) -> None:
    result = attempt(project, name, agent_env(name), tmp_path, args=("--full-auto",))
    assert result.outcome == Outcome.UNUSABLE, result.detail
    assert "--full-auto" in result.detail
    assert not server.script.requests  # refused before any model call


@pytest.mark.parametrize("name", NAMES)
def test_validate_checks_the_real_cli(
    name: str, project: Path, sage: Sage, agent_env: AgentEnv
) -> None:
    done = sage("validate", cwd=project, env={**agent_env(name), "SAGE_WORKER": name})
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("version", "options", "login"):
        assert f"ok {name} {check}: " in done.stdout, done.stdout


def test_validate_names_an_option_the_cli_does_not_take(
    project: Path, sage: Sage, agent_env: AgentEnv
) -> None:
    (project / ".sage/config.toml").write_text('[agents.codex]\nargs = ["--full-auto"]\n')
    done = sage("validate", cwd=project, env={**agent_env("codex"), "SAGE_WORKER": "codex"})
    assert done.returncode == 1
    assert "!! codex options: --full-auto not in `codex exec --help`" in done.stdout, done.stdout


def test_a_stream_refuses_up_front_an_option_the_cli_does_not_take(
    project: Path, sage: Sage, agent_env: AgentEnv
) -> None:
    (project / ".sage/config.toml").write_text('[agents.codex]\nargs = ["--full-auto"]\n')
    done = sage("stream", "--auto", "--worker", "codex", cwd=project, env=agent_env("codex"))
    assert done.returncode == 1
    assert "error: codex options: --full-auto not in `codex exec --help`" in done.stderr
    states = json.loads((project / ".sage/tickets/index.json").read_text())["tickets"]
    assert states[0]["state"] == "UNPROCESSED"


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_key_is_unusable(
    name: str, project: Path, server: ModelServer, agent_env: AgentEnv, tmp_path: Path
) -> None:
    result = attempt(project, name, agent_env(name, key=False), tmp_path)
    assert result.outcome == Outcome.UNUSABLE, result.detail
    assert result.seconds < 60  # aider would have waited five minutes for a browser login


def test_aider_exiting_0_after_failed_calls_is_not_completed(
    project: Path, sage: Sage, server: ModelServer, agent_env: AgentEnv
) -> None:
    server.script.mode = "401"
    events = stream_until_finished(project, agent_env("aider"), "aider")
    finished = [e for e in events if e["event"] == "finished"]
    assert finished and finished[0]["outcome"] == "unusable", events
    assert finished[0]["returncode"] == 0  # aider's exit code said "fine"
    assert git(project, "log", "--format=%s", "-1") == "tickets"  # nothing landed
    assert git(project, "status", "--porcelain", "--", ".gitignore", "hello.py") == ""
    states = json.loads((project / ".sage/tickets/index.json").read_text())["tickets"]
    assert states[0]["state"] != "COMPLETED"


def test_a_throttled_claude_run_is_seen_by_the_stream(
    project: Path, server: ModelServer, agent_env: AgentEnv
) -> None:
    server.script.mode = "429"
    events = stream_until_finished(project, agent_env("claude"), "claude")
    finished = [e for e in events if e["event"] == "finished"]
    assert finished[0]["outcome"] == "throttled", events
    assert git(project, "log", "--format=%s", "-1") == "tickets"


@pytest.mark.timeout(180)
def test_a_throttled_backlog_is_parked_not_deferred_and_lands_when_the_limit_lifts(
    project: Path, server: ModelServer, agent_env: AgentEnv
) -> None:
    """A scripted 429 on every call: no attempt is used, nothing is deferred, the live worker
    count drops, the summary says throttled; then the server recovers and the backlog lands."""
    index = project / ".sage/tickets/index.json"
    data = json.loads(index.read_text())
    data["tickets"].append({**data["tickets"][0], "id": "A-2", "title": "Write hello.py again"})
    index.write_text(json.dumps(data, indent=2))
    git(project, "commit", "-qam", "two tickets")
    server.script.mode, server.script.retry_in, server.script.per_ticket = "429", 2, True
    argv = [sys.executable, "-m", "sage", "stream", "--auto", "--parallel", "2", "--json",
            "--worker", "claude"]  # fmt: skip
    with subprocess.Popen(
        argv, cwd=project, env={**os.environ, **agent_env("claude")}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as child:  # fmt: skip
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            lines.append(line)
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "retry" and event.get("throttled"):
                server.script.mode = "work"  # the limit lifts
                break
        out, err = child.communicate(timeout=150)
    events = [json.loads(line) for line in [*lines, *out.splitlines()] if line.startswith("{")]
    summary = events[-1]
    assert child.returncode == 0, (err, summary)
    throttled = [e for e in events if e["event"] == "retry" and e.get("throttled")]
    assert throttled and not any(e["counted"] for e in throttled)
    assert all(e["workers"] == 1 for e in throttled)  # an agent starts alone, stays so throttled
    assert all(e["attempt"] == 1 for e in events if e["event"] == "started")
    assert not [e for e in events if e["event"] == "deferred"]
    assert summary["throttled"] >= 1 and summary["deferred"] == {} and summary["retries"] == 0
    assert sorted(summary["completed"]) == ["A-1", "A-2"]


def stream_until_finished(repo: Path, env: dict[str, str], name: str) -> list[dict[str, Any]]:
    """`sage stream --json` until the first attempt has finished; then Ctrl+C, as a user would
    (the policy for what comes next is the stream's)."""
    argv = [sys.executable, "-m", "sage", "stream", "--auto", "--json", "--worker", name]
    events: list[dict[str, Any]] = []
    out = subprocess.PIPE
    with subprocess.Popen(
        argv, cwd=repo, env={**os.environ, **env}, text=True, stdout=out
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                events += [json.loads(line)] if line.startswith("{") else []
                if events and events[-1]["event"] == "finished":
                    break
            child.send_signal(signal.SIGINT)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
    return events
