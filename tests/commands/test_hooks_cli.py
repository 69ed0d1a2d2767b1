"""`sage hooks` and `sage hook-impl` through the real CLI and real `git commit`."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sage.lib import hook_managers
from sage.lib import hooks as sage_hooks
from tests.conftest import ROOT, CliResult, git, ticket, write_index

Sage = Callable[..., CliResult]
INDEX = ".sage/tickets/index.json"
ATTRIBUTION = "Co-Authored-By: Claude <noreply@anthropic.com>"


def commit(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), "commit", *args], capture_output=True, text=True, check=False
    )


def install_marker_hook(repo: Path, marker: Path) -> tuple[Path, bytes]:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_bytes(f'#!/bin/sh\necho "old hook" >&2\ntouch "{marker}"\n'.encode())
    hook.chmod(0o754)
    return hook, hook.read_bytes()


def test_done_when(repo: Path, sage: Sage, tmp_path: Path) -> None:
    """Chained old hook, stripped attribution, blocked bad index, exact restore."""
    marker = tmp_path / "old-hook-ran"
    hook, original = install_marker_hook(repo, marker)
    installed = sage("hooks", "install", cwd=repo)
    assert installed.returncode == 0, installed.stderr
    assert "hooks-before" in installed.stdout and "chained" in installed.stdout

    write_index(repo, [ticket("A-1"), ticket("A-2", "A-1")])
    git(repo, "add", INDEX)
    done = commit(repo, "-m", f"A-1: add the index\n\nBody.\n\n{ATTRIBUTION}")
    assert done.returncode == 0, done.stderr
    assert marker.exists()
    assert git(repo, "log", "-1", "--format=%B") == "A-1: add the index\n\nBody."

    head = git(repo, "rev-parse", "HEAD")
    for broken, expected in (
        ('{"tickets": [', "invalid JSON"),
        (json.dumps({"tickets": [ticket("A-1", "A-2"), ticket("A-2", "A-1")]}), "A-1 → A-2 → A-1"),
    ):
        (repo / INDEX).write_text(broken)
        git(repo, "add", INDEX)
        blocked = commit(repo, "-m", "break the index")
        assert blocked.returncode == 1 and expected in blocked.stderr
        assert "commit blocked" in blocked.stderr
    assert git(repo, "rev-parse", "HEAD") == head

    removed = sage("hooks", "uninstall", cwd=repo)
    assert removed.returncode == 0 and "restored the previous hook" in removed.stdout
    assert hook.read_bytes() == original and stat.S_IMODE(hook.stat().st_mode) == 0o754
    assert not (repo / ".git" / "hooks" / "commit-msg").exists()
    assert not (repo / ".git" / "hooks" / "pre-commit.legacy").exists()


def test_a_failing_old_hook_blocks_and_sage_runs_after_the_old_commit_msg_hook(
    repo: Path, sage: Sage
) -> None:
    hooks = repo / ".git" / "hooks"
    (hooks / "pre-commit").write_text("#!/bin/sh\necho 'lint failed' >&2\nexit 4\n")
    (hooks / "commit-msg").write_text(f'#!/bin/sh\nprintf "\\n{ATTRIBUTION}\\n" >> "$1"\n')
    for name in ("pre-commit", "commit-msg"):
        (hooks / name).chmod(0o755)
    assert sage("hooks", "install", cwd=repo).returncode == 0
    blocked = commit(repo, "--allow-empty", "-m", "x")
    assert blocked.returncode == 1  # git reports any hook failure as 1
    assert "lint failed" in blocked.stderr and "pre-commit) failed (exit 4)" in blocked.stderr
    assert not (hooks / "pre-commit.legacy").exists()
    (kept,) = (repo / ".git" / "sage" / "hooks-before").glob("*/pre-commit")
    kept.write_text("#!/bin/sh\nexit 0\n")
    assert commit(repo, "--allow-empty", "-m", "subject").returncode == 0
    assert git(repo, "log", "-1", "--format=%B") == "subject"  # the old hook's line was stripped


def test_an_unknown_sage_ticket_trailer_is_blocked(repo: Path, sage: Sage) -> None:
    write_index(repo, [ticket("A-1")])
    assert sage("hooks", "install", cwd=repo).returncode == 0
    blocked = commit(repo, "--allow-empty", "-m", "x\n\nSage-Ticket: NOPE-7")
    assert blocked.returncode == 1 and "NOPE-7 is not a ticket" in blocked.stderr
    assert commit(repo, "--allow-empty", "-m", "A-1: x\n\nSage-Ticket: A-1").returncode == 0


def test_commit_all_in_a_linked_worktree_is_checked(repo: Path, sage: Sage, tmp_path: Path) -> None:
    """`git commit -a` in a worktree: the hook reads the index git is committing."""
    write_index(repo, [ticket("A-1")])
    git(repo, "add", INDEX)
    git(repo, "commit", "-q", "-m", "index")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(worktree), "-b", "side")
    assert sage("hooks", "install", cwd=worktree).returncode == 0
    write_index(worktree, [ticket("A-1", "A-1")])
    blocked = commit(worktree, "-a", "-m", "self cycle")
    assert blocked.returncode == 1 and "A-1 → A-1" in blocked.stderr


def test_core_hooks_path_is_refused_with_a_hint(repo: Path, sage: Sage) -> None:
    git(repo, "config", "core.hooksPath", ".githooks")
    refused = sage("hooks", "install", cwd=repo)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: core.hooksPath is set to '.githooks'")
    assert "hint: " in refused.stderr and "--force" in refused.stderr
    forced = sage("hooks", "install", "--force", cwd=repo)
    assert forced.returncode == 0 and (repo / ".githooks" / "pre-commit").exists()


def test_status_json(repo: Path, sage: Sage) -> None:
    assert sage("hooks", "install", cwd=repo).returncode == 0
    found = sage("hooks", "status", "--json", cwd=repo)
    data = json.loads(found.stdout)
    assert [h["state"] for h in data["hooks"]] == ["installed", "installed"]
    assert data["hooks"][0]["interpreter"] == sys.executable
    text = sage("hooks", "status", cwd=repo).stdout
    assert "pre-commit: installed" in text and "commit-msg: installed" in text


def test_hook_impl_outside_a_hook(repo: Path, sage: Sage) -> None:
    assert sage("hook-impl", "pre-commit", cwd=repo).returncode == 0
    unknown = sage("hook-impl", "pre-push", cwd=repo)
    assert unknown.returncode == 2 and "unknown hook 'pre-push'" in unknown.stderr
    assert "hook-impl" not in sage("--help", cwd=repo).stdout


def read_pre_commit_hooks() -> list[dict[str, str]]:
    """A minimal reader for the flat list of mappings in .pre-commit-hooks.yaml."""
    entries: list[dict[str, str]] = []
    for raw in (ROOT / ".pre-commit-hooks.yaml").read_text().splitlines():
        line = raw.split(" #")[0].rstrip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("- "):
            entries.append({})
            line = line[2:]
        assert ":" in line, f"not a `key: value` line: {raw!r}"
        key, _, value = line.strip().partition(":")
        entries[-1][key] = value.strip()
    return entries


def test_pre_commit_hooks_yaml_names_real_commands(repo: Path, sage: Sage) -> None:
    entries = {e["id"]: e for e in read_pre_commit_hooks()}
    assert set(entries) == {"sage-validate", "sage-commit-msg"}
    assert entries["sage-validate"]["stages"] == "[pre-commit]"
    assert "pass_filenames" not in entries["sage-validate"]  # it checks the files it is given
    assert entries["sage-commit-msg"]["stages"] == "[commit-msg]"
    for entry in entries.values():
        assert entry["language"] == "python" and entry["name"] and entry["description"]
    program, *validate = entries["sage-validate"]["entry"].split()
    assert program == "sage"
    assert sage(*validate, cwd=repo).returncode == 0
    message = repo / ".git" / "COMMIT_EDITMSG"
    message.write_text(f"subject\n\n{ATTRIBUTION}\n")
    program, *commit_msg = entries["sage-commit-msg"]["entry"].split()
    assert sage(*commit_msg, str(message), cwd=repo).returncode == 0
    assert message.read_text() == "subject\n"


# --- next to the real pre-commit and husky --------------------------------------------------

HUSKY = ROOT / ".tools" / "node_modules" / ".bin" / "husky"
USER_HOOK = """\
-   repo: local
    hooks:
    -   id: user-hook
        name: the user's own hook
        entry: sh -c 'echo ran >> "$0"' {marker}
        language: system
        pass_filenames: false
        always_run: true
"""
Snapshot = dict[str, tuple[int, bytes]]


def snapshot(*roots: Path) -> Snapshot:
    """Every file, link and folder under the roots: its mode and its bytes (or link target)."""
    found: Snapshot = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            info = path.lstat()
            data = os.readlink(path).encode() if path.is_symlink() else b""
            if stat.S_ISREG(info.st_mode):
                data = path.read_bytes()
            found[str(path)] = (info.st_mode, data)
    return found


@pytest.fixture
def tools_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`sage` and `pre-commit` from this venv on PATH (for `language: system`); no downloads."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "pre-commit-home"))


def tool(repo: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def pre_commit(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return tool(repo, sys.executable, "-m", "pre_commit", *args)


def printed_snippet(stdout: str) -> str:
    return stdout[stdout.index("-   repo: local") :]


def commit_config(repo: Path, text: str) -> None:
    (repo / ".pre-commit-config.yaml").write_text(text)
    git(repo, "add", ".pre-commit-config.yaml")
    git(repo, "commit", "-q", "--no-verify", "-m", "pre-commit config")


def assert_sage_runs(repo: Path, marker: Path) -> None:
    """A good commit goes through with attribution stripped; a broken index is blocked."""
    write_index(repo, [ticket("A-1")])
    git(repo, "add", INDEX)
    done = commit(repo, "--allow-empty", "-m", f"A-1: index\n\n{ATTRIBUTION}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "migration mode" not in done.stdout + done.stderr
    assert git(repo, "log", "-1", "--format=%B") == "A-1: index"
    assert marker.read_text().count("ran") >= 1
    (repo / INDEX).write_text('{"tickets": [')
    git(repo, "add", INDEX)
    blocked = commit(repo, "-m", "break the index")
    assert blocked.returncode == 1 and "invalid JSON" in blocked.stdout + blocked.stderr
    git(repo, "reset", "-q", "--hard")


def test_pre_commit_first_then_sage(
    repo: Path, sage: Sage, tools_env: None, tmp_path: Path
) -> None:
    marker = tmp_path / "user-hook-ran"
    commit_config(repo, "repos:\n" + USER_HOOK.format(marker=marker))
    pre_commit(repo, "install")
    before = snapshot(repo / ".git" / "hooks")
    installed = sage("hooks", "install", cwd=repo)
    assert installed.returncode == 0, installed.stderr
    assert "pre-commit's hook, left alone" in installed.stdout
    hooks = repo / ".git" / "hooks"
    assert (hooks / "pre-commit").read_bytes() == before[str(hooks / "pre-commit")][1]
    assert not (hooks / "pre-commit.legacy").exists()
    assert "pre-commit: pre-commit's hook, without sage" in sage("hooks", "status", cwd=repo).stdout
    done = commit(repo, "--allow-empty", "-m", f"works at once\n\n{ATTRIBUTION}")
    assert done.returncode == 0 and "migration mode" not in done.stdout + done.stderr
    assert marker.exists() and git(repo, "log", "-1", "--format=%B") == "works at once"

    config = "repos:\n" + USER_HOOK.format(marker=marker) + printed_snippet(installed.stdout)
    commit_config(repo, config)
    found = json.loads(sage("hooks", "status", "--json", cwd=repo).stdout)
    assert found["manager"] == "pre-commit"
    assert [(h["manager"], h["state"]) for h in found["hooks"]] == [
        ("pre-commit", "installed"),
        (None, "installed"),  # pre-commit did not take commit-msg: sage's own script runs
    ]
    assert_sage_runs(repo, marker)

    removed = sage("hooks", "uninstall", cwd=repo)
    assert removed.returncode == 0, removed.stderr
    assert snapshot(hooks) == before


def test_pre_commit_run_all_files_checks_the_committed_index(
    repo: Path, sage: Sage, tools_env: None
) -> None:
    """The framework hook validates the index files pre-commit passes, not only what is staged."""
    entry = hooks_yaml_entry("sage-validate")
    commit_config(repo, f"repos:\n{entry}")
    (repo / INDEX).parent.mkdir(parents=True)
    (repo / INDEX).write_text(json.dumps({"tickets": [ticket("A-1", "A-1")]}))
    git(repo, "add", INDEX)
    git(repo, "commit", "-q", "--no-verify", "-m", "a committed self cycle")
    done = subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files"],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "A-1 → A-1" in done.stdout, done.stdout + done.stderr
    write_index(repo, [ticket("A-1")])
    git(repo, "add", INDEX)
    git(repo, "commit", "-q", "--no-verify", "-m", "fixed")
    pre_commit(repo, "run", "--all-files")


def hooks_yaml_entry(hook_id: str) -> str:
    """sage's entry from .pre-commit-hooks.yaml as a `repo: local` hook (language: system, so
    pre-commit builds no environment and downloads nothing)."""
    entry = {e["id"]: e for e in read_pre_commit_hooks()}[hook_id]
    lines = [f"        {key}: {value}" for key, value in entry.items() if key != "id"]
    hook = "\n".join(lines).replace("language: python", "language: system")
    return f"-   repo: local\n    hooks:\n    -   id: {hook_id}\n{hook}\n"


def test_sage_first_then_pre_commit_installs_on_top(
    repo: Path, sage: Sage, tools_env: None, tmp_path: Path
) -> None:
    """pre-commit chains sage's scripts as its legacy hooks; uninstalling each restores all."""
    marker, old_marker = tmp_path / "user-hook-ran", tmp_path / "old-hook-ran"
    hook, original = install_marker_hook(repo, old_marker)
    hooks = repo / ".git" / "hooks"
    before = snapshot(hooks)
    commit_config(repo, "repos:\n" + USER_HOOK.format(marker=marker))
    assert sage("hooks", "install", cwd=repo).returncode == 0
    pre_commit(repo, "install", "--hook-type", "pre-commit", "--hook-type", "commit-msg")
    assert (hooks / "pre-commit.legacy").read_text().startswith("#!/bin/sh\n# sage-hook")
    found = json.loads(sage("hooks", "status", "--json", cwd=repo).stdout)
    assert [(h["manager"], h["how"]) for h in found["hooks"]] == [("pre-commit", "chained")] * 2
    assert_sage_runs(repo, marker)
    assert old_marker.exists()  # the hook that was there before sage still runs

    assert sage("hooks", "uninstall", cwd=repo).returncode == 0
    assert (hooks / "pre-commit.legacy").read_bytes() == original  # where pre-commit chains it
    assert stat.S_IMODE((hooks / "pre-commit.legacy").stat().st_mode) == 0o754
    assert not (hooks / "commit-msg.legacy").exists()
    pre_commit(repo, "uninstall", "--hook-type", "pre-commit", "--hook-type", "commit-msg")
    assert snapshot(hooks) == before and hook.read_bytes() == original


def test_the_printed_entry_matches_pre_commit_hooks_yaml(repo: Path, sage: Sage) -> None:
    yaml = pytest.importorskip("yaml")
    shipped = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    printed = yaml.safe_load(hook_managers.framework_snippet(["pre-commit", "commit-msg"], INDEX))[
        0
    ]["hooks"]
    for hook in printed:
        for key in ("name", "entry", "stages", "files"):
            assert hook.get(key) == shipped[hook["id"]].get(key), key


def husky_env() -> None:
    if not HUSKY.exists():
        pytest.skip(f"husky is not installed at {HUSKY} (npm install --prefix .tools husky@9.1.7)")
    if shutil.which("node") is None:
        pytest.skip("husky needs node, which is not on PATH")


def test_husky_first_then_sage(repo: Path, sage: Sage, tmp_path: Path) -> None:
    husky_env()
    marker = tmp_path / "user-hook-ran"
    (repo / ".husky").mkdir()
    user_hook = f'echo ran >> "{marker}"'.encode()  # no final newline: kept exactly
    (repo / ".husky" / "pre-commit").write_bytes(user_hook)
    tool(repo, str(HUSKY))
    assert git(repo, "config", "core.hooksPath") == ".husky/_"
    before = snapshot(repo / ".husky", repo / ".git" / "hooks")

    installed = sage("hooks", "install", cwd=repo)  # no --force needed: husky is known
    assert installed.returncode == 0, installed.stderr
    assert "(husky runs it)" in installed.stdout and "--force" not in installed.stdout
    assert (repo / ".husky" / "pre-commit").read_bytes().startswith(user_hook + b"\n# >>> sage")
    assert not list((repo / ".husky" / "_").glob("*.legacy"))
    assert_sage_runs(repo, marker)

    tool(repo, str(HUSKY))  # husky reinstalls its stubs: sage's blocks are in the user's files
    assert_sage_runs(repo, marker)
    found = json.loads(sage("hooks", "status", "--json", cwd=repo).stdout)
    assert found["manager"] == "husky"
    assert [(h["how"], h["state"]) for h in found["hooks"]] == [("block", "installed")] * 2
    assert sage("hooks", "install", "--force", cwd=repo).stdout.count("up to date") == 2

    removed = sage("hooks", "uninstall", cwd=repo)
    assert removed.returncode == 0, removed.stderr
    assert snapshot(repo / ".husky", repo / ".git" / "hooks") == before
    assert not (repo / ".git" / "sage").exists()


def test_an_earlier_sage_over_a_husky_stub_is_undone(
    repo: Path, sage: Sage, tmp_path: Path
) -> None:
    """Earlier versions, with --force, renamed husky's stub and the user's hook stopped running."""
    husky_env()
    marker = tmp_path / "user-hook-ran"
    (repo / ".husky").mkdir()
    (repo / ".husky" / "pre-commit").write_text(f'echo ran >> "{marker}"\n')
    tool(repo, str(HUSKY))
    stub = repo / ".husky" / "_" / "pre-commit"
    before = snapshot(repo / ".husky")
    stub.rename(stub.with_name("pre-commit.legacy"))
    old = sage_hooks.script("pre-commit", sys.executable).replace(
        "--chained", '--legacy "$0.legacy"'
    )
    stub.write_text(old)
    stub.chmod(0o755)
    assert sage("hooks", "install", cwd=repo).returncode == 0
    assert_sage_runs(repo, marker)
    assert sage("hooks", "uninstall", cwd=repo).returncode == 0
    assert snapshot(repo / ".husky") == before
