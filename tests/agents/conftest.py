"""The agent tier: the real claude, codex and aider CLIs (pinned, installed by `dev.py` into
.tools/) against the scripted model server on 127.0.0.1. No vendor API is ever called: each CLI's
base URL is the server, and every other connection goes to a dead proxy."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agents.server import ModelServer, Script
from tests.conftest import ROOT, git, ticket, write_index

TOOLS = ROOT / ".tools"
BINARIES = {
    "claude": TOOLS / "node_modules" / ".bin" / "claude",
    "codex": TOOLS / "node_modules" / ".bin" / "codex",
    "aider": TOOLS / "aider-venv" / "bin" / "aider",
}
MARKER = "CONTEXT-MARKER-7f3a"  # only in the ticket's notes: seen by the server = context read
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: anything not for the loopback server fails
# Credentials and endpoints a developer's shell may hold: never handed to a CLI under test.
LEAKS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "CODEX_API_KEY",
    "CODEX_HOME",
    "GEMINI_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "CLAUDE_CONFIG_DIR",
)
# aider's model list cache, seeded so it never fetches one (and knows a price, so reports a cost)
AIDER_MODELS = {
    "openai/sage-test": {
        "max_input_tokens": 100000,
        "max_output_tokens": 4096,
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "litellm_provider": "openai",
        "mode": "chat",
    }
}


def binary(name: str) -> Path:
    path = BINARIES[name]
    if not path.exists():
        pytest.skip(f"{path} is not installed: run `python3 dev.py tools`")
    return path


@pytest.fixture
def script(request: pytest.FixtureRequest) -> Script:
    """claude may run `python3 -m pytest` (its allowed tools; the venv's python is first on PATH);
    codex's shell is a login shell that resets PATH, so it gets the full path."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("name", "") if callspec else ""
    python = "python3" if name == "claude" else f"{Path(sys.executable).parent}/python3"
    return Script(test_command=f"{python} -m pytest -q")


@pytest.fixture
def server(script: Script) -> Iterator[ModelServer]:
    running = ModelServer(script).start()
    yield running
    running.stop()


@pytest.fixture
def project(repo: Path) -> Path:
    """A repository with a test to run and one ticket whose notes carry MARKER."""
    (repo / "test_hello.py").write_text("def test_truth():\n    assert True\n")
    write_index(repo, [ticket("A-1", title="Write hello.py")])
    (repo / ".sage/tickets/A-1.md").write_text(f"Write hello.py. Ticket code {MARKER}.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")
    return repo


AgentEnv = Callable[..., dict[str, str]]


@pytest.fixture
def agent_env(server: ModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentEnv:
    """`agent_env(name, key=True)`: the environment that points `name` at the server."""
    for leak in LEAKS:
        monkeypatch.delenv(leak, raising=False)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def make(name: str, *, key: bool = True) -> dict[str, str]:
        folders = [str(binary(name).parent), str(Path(sys.executable).parent), os.environ["PATH"]]
        env = {
            "HOME": str(home),
            "PATH": os.pathsep.join(folders),
            "HTTPS_PROXY": DEAD_PROXY,
            "HTTP_PROXY": DEAD_PROXY,
            "ALL_PROXY": DEAD_PROXY,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        env.update(SETUP[name](server, home, key))
        return env

    return make


def _claude(server: ModelServer, home: Path, key: bool) -> dict[str, str]:
    env = {
        "ANTHROPIC_BASE_URL": server.url,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    return env | ({"ANTHROPIC_API_KEY": "sk-ant-sage-test"} if key else {})


def _codex(server: ModelServer, home: Path, key: bool) -> dict[str, str]:
    codex_home = home / ".codex"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(
        'model = "sage-test"\nmodel_provider = "sage"\n\n[model_providers.sage]\n'
        f'name = "sage test server"\nbase_url = "{server.url}/v1"\nenv_key = "SAGE_TEST_KEY"\n'
        'wire_api = "responses"\nrequest_max_retries = 0\nstream_max_retries = 0\n'
    )
    return {"CODEX_HOME": str(codex_home)} | ({"SAGE_TEST_KEY": "sage-test"} if key else {})


def _aider(server: ModelServer, home: Path, key: bool) -> dict[str, str]:
    caches = home / ".aider" / "caches"
    caches.mkdir(parents=True, exist_ok=True)
    (caches / "model_prices_and_context_window.json").write_text(json.dumps(AIDER_MODELS))
    env = {"OPENAI_API_BASE": f"{server.url}/v1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return env | (
        {"OPENAI_API_KEY": "sk-sage-test", "AIDER_MODEL": "openai/sage-test"} if key else {}
    )


SETUP: dict[str, Callable[[ModelServer, Path, bool], dict[str, str]]] = {
    "claude": _claude,
    "codex": _codex,
    "aider": _aider,
}
