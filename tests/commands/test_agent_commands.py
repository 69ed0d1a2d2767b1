"""`sage agent-commands install` and the slash-command markdown it ships."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sage.lib import agent_commands
from tests.conftest import ROOT, CliResult

Sage = Callable[..., CliResult]
PACKAGED = ROOT / "sage" / "data" / "commands"
TOP_LEVEL = ROOT / "commands"
COMMANDS = ("plan.md", "ready.md", "stream.md", "validate.md")


def test_top_level_commands_are_identical_copies_of_the_packaged_ones() -> None:
    packaged = {p.name: p.read_bytes() for p in PACKAGED.iterdir()}
    assert set(packaged) == {*COMMANDS, "README.md"}
    assert {p.name: p.read_bytes() for p in TOP_LEVEL.iterdir()} == packaged, (
        "commands/ must equal sage/data/commands/: cp sage/data/commands/*.md commands/"
    )


def frontmatter(text: str) -> tuple[dict[str, str], str]:
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.DOTALL)
    assert match, "no frontmatter"
    fields = dict(line.split(": ", 1) for line in match.group(1).splitlines())
    return fields, match.group(2)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_calls_the_cli(name: str) -> None:
    fields, body = frontmatter((PACKAGED / name).read_text())
    assert set(fields) == {"description", "argument-hint"} and fields["description"]
    assert fields["argument-hint"].startswith('"[') and fields["argument-hint"].endswith('"')
    verb = name.removesuffix(".md")
    assert re.search(rf"^(   )?sage {verb}\b.*\$ARGUMENTS$", body, re.MULTILINE)
    assert "Exit codes:" in body and "`0`" in body and "`1`" in body


@pytest.mark.parametrize("name", COMMANDS)
def test_the_commands_they_name_exist(name: str, sage: Sage, tmp_path: Path) -> None:
    verb = name.removesuffix(".md")
    if verb == "stream" and importlib.util.find_spec("sage.commands.stream") is None:
        pytest.skip("sage stream is not built yet")
    shown = sage(verb, "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    command_line = re.search(r"```\n\s*(sage .*)\n\s*```", (PACKAGED / name).read_text())
    assert command_line, "no command line in a code block"
    for flag in re.findall(r"--[a-z-]+", command_line.group(1)):
        assert flag in shown.stdout, f"{verb} has no {flag}"


def test_bundled_reads_the_package_data() -> None:
    found = agent_commands.bundled()
    assert sorted(found) == list(COMMANDS)
    assert found["stream.md"] == (PACKAGED / "stream.md").read_text()


@pytest.mark.parametrize(
    ("agent", "project_dir", "user_dir"),
    [
        ("claude", ".claude/commands", ".claude/commands"),
        ("opencode", ".opencode/command", ".config/opencode/command"),
        ("droid", ".factory/commands", ".factory/commands"),
    ],
)
def test_each_agent_has_its_place(
    agent: str, project_dir: str, user_dir: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert agent_commands.target_dir(agent, user=False, root=tmp_path) == tmp_path / project_dir
    assert agent_commands.target_dir(agent, user=True, root=tmp_path, home=home) == home / user_dir


def test_install_is_idempotent_and_keeps_changed_files(repo: Path, sage: Sage) -> None:
    first = sage("agent-commands", "install", "--agent", "claude", cwd=repo)
    assert first.returncode == 0, first.stderr
    target = repo / ".claude" / "commands"
    assert sorted(p.name for p in target.iterdir()) == list(COMMANDS)
    assert (target / "plan.md").read_bytes() == (PACKAGED / "plan.md").read_bytes()
    assert first.stdout.count(": installed") == len(COMMANDS)

    again = sage("agent-commands", "install", "--agent", "claude", cwd=repo)
    assert again.returncode == 0 and again.stdout.count(": up to date") == len(COMMANDS)

    (target / "plan.md").write_text("my own plan\n")
    kept = sage("agent-commands", "install", "--agent", "claude", cwd=repo)
    assert kept.returncode == 1 and "plan.md: kept" in kept.stdout and "--force" in kept.stderr
    assert (target / "plan.md").read_text() == "my own plan\n"

    forced = sage("agent-commands", "install", "--agent", "claude", "--force", cwd=repo)
    assert forced.returncode == 0 and "plan.md: overwritten" in forced.stdout
    assert (target / "plan.md").read_bytes() == (PACKAGED / "plan.md").read_bytes()


def test_user_install_goes_to_the_home_directory(repo: Path, sage: Sage, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = sage("agent-commands", "install", "--agent", "opencode", "--user", cwd=repo,
                env={"HOME": str(home)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (home / ".config/opencode/command").iterdir()) == list(COMMANDS)
    assert not (repo / ".opencode").exists()


def test_install_from_a_subdirectory_uses_the_project_root(repo: Path, sage: Sage) -> None:
    sub = repo / "src" / "deep"
    sub.mkdir(parents=True)
    assert sage("agent-commands", "install", "--agent", "droid", cwd=sub).returncode == 0
    assert (repo / ".factory" / "commands" / "ready.md").exists()


def test_an_unknown_agent_is_a_usage_error(repo: Path, sage: Sage) -> None:
    done = sage("agent-commands", "install", "--agent", "vim", cwd=repo)
    assert done.returncode == 2 and "unknown agent 'vim'" in done.stderr
    assert "claude, opencode, droid" in done.stderr
