"""`sage hooks` and `sage hook-impl` through the real CLI and real `git commit`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
    (repo / ".git" / "sage" / "hooks-before").glob("*/pre-commit").__next__().write_text(
        "#!/bin/sh\nexit 0\n"
    )
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
