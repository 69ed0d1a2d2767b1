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
COMMANDS = ("sage-import.md", "sage-plan.md", "sage-ready.md", "sage-stream.md", "sage-validate.md")
CHANGES_THE_REPOSITORY = {"sage-import.md", "sage-stream.md"}


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


def verb_of(name: str) -> str:
    return name.removesuffix(".md").removeprefix("sage-")


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_calls_the_cli(name: str) -> None:
    fields, body = frontmatter((PACKAGED / name).read_text())
    expected = {"description", "argument-hint", "allowed-tools"}
    if name in CHANGES_THE_REPOSITORY:  # only the user starts these, never the model
        expected.add("disable-model-invocation")
        assert fields["disable-model-invocation"] == "true"
    assert set(fields) == expected and fields["description"]
    assert fields["argument-hint"].startswith('"') and fields["argument-hint"].endswith('"')
    verb = verb_of(name)
    assert re.search(rf"^\s*sage {verb}\b", body, re.MULTILINE)
    # arguments are described, never pasted into a command line as a raw string
    assert "`$ARGUMENTS`" in body and not re.search(r"^\s*sage .*\$ARGUMENTS", body, re.M)
    assert "Exit codes:" in body or "exits 0" in body


@pytest.mark.parametrize("name", COMMANDS)
def test_every_sage_call_is_allowed_without_asking(name: str) -> None:
    fields, body = frontmatter((PACKAGED / name).read_text())
    rules = [r.strip() for r in fields["allowed-tools"].split(",")]
    assert all(re.fullmatch(r"Bash\(sage [a-z ]+:\*\)|Read", r) for r in rules), rules
    allowed = {r.removeprefix("Bash(").removesuffix(":*)") for r in rules}
    called = set(re.findall(r"`(sage [a-z]+(?: status)?)[ `]", body))
    called |= {f"sage {m}" for m in re.findall(r"^\s*sage ([a-z]+)", body, re.M)}
    assert called - {"sage stream --auto"} <= allowed, called - allowed


def test_no_command_shadows_a_built_in_one() -> None:
    assert all(name.startswith("sage-") for name in COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_the_commands_they_name_exist(name: str, sage: Sage, tmp_path: Path) -> None:
    verb = verb_of(name)
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
    assert found["sage-stream.md"] == (PACKAGED / "sage-stream.md").read_text()


@pytest.mark.parametrize(
    ("agent", "project_dir", "user_dir"),
    [
        ("claude", ".claude/commands", ".claude/commands"),
        ("opencode", ".opencode/commands", ".config/opencode/commands"),
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
    assert (target / "sage-plan.md").read_bytes() == (PACKAGED / "sage-plan.md").read_bytes()
    assert first.stdout.count(": installed") == len(COMMANDS)

    again = sage("agent-commands", "install", "--agent", "claude", cwd=repo)
    assert again.returncode == 0 and again.stdout.count(": up to date") == len(COMMANDS)

    (target / "sage-plan.md").write_text("my own plan\n")
    kept = sage("agent-commands", "install", "--agent", "claude", cwd=repo)
    assert kept.returncode == 1 and "sage-plan.md: kept" in kept.stdout and "--force" in kept.stderr
    assert (target / "sage-plan.md").read_text() == "my own plan\n"

    forced = sage("agent-commands", "install", "--agent", "claude", "--force", cwd=repo)
    assert forced.returncode == 0 and "sage-plan.md: overwritten" in forced.stdout
    assert (target / "sage-plan.md").read_bytes() == (PACKAGED / "sage-plan.md").read_bytes()


def test_user_install_goes_to_the_home_directory(repo: Path, sage: Sage, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = sage("agent-commands", "install", "--agent", "opencode", "--user", cwd=repo,
                env={"HOME": str(home)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (home / ".config/opencode/commands").iterdir()) == list(COMMANDS)
    assert not (repo / ".opencode").exists()


def test_install_from_a_subdirectory_uses_the_project_root(repo: Path, sage: Sage) -> None:
    sub = repo / "src" / "deep"
    sub.mkdir(parents=True)
    assert sage("agent-commands", "install", "--agent", "droid", cwd=sub).returncode == 0
    assert (repo / ".factory" / "commands" / "sage-ready.md").exists()


def test_an_unknown_agent_is_a_usage_error(repo: Path, sage: Sage) -> None:
    done = sage("agent-commands", "install", "--agent", "vim", cwd=repo)
    assert done.returncode == 2 and "unknown agent 'vim'" in done.stderr
    assert "claude, opencode, droid" in done.stderr


def test_files_of_an_older_sage_are_named_not_deleted(repo: Path, sage: Sage) -> None:
    old = repo / ".opencode" / "command"
    old.mkdir(parents=True)
    (old / "plan.md").write_text("sage plan --parallel $ARGUMENTS\n")
    (old / "notes.md").write_text("mine\n")
    done = sage("agent-commands", "install", "--agent", "opencode", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert f"{old / 'plan.md'}: left over from an older sage" in done.stdout
    assert (old / "plan.md").exists() and "notes.md" not in done.stdout
