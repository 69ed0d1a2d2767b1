"""sage.lib.hooks against real repositories: installing, chaining, and what the hooks check."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sage.lib import hook_managers, hooks
from sage.lib.config import Config
from sage.lib.errors import ConfigError, SageError
from sage.lib.project import open_project
from tests.conftest import git, ticket, write_index

FOREIGN = b'#!/bin/sh\necho foreign hook "$@" >> foreign.log\n'
INDEX = ".sage/tickets/index.json"


def hooks_dir(repo: Path) -> Path:
    return repo / ".git" / "hooks"


def foreign_hook(repo: Path, name: str = "pre-commit", mode: int = 0o750) -> Path:
    path = hooks_dir(repo) / name
    path.write_bytes(FOREIGN)
    path.chmod(mode)
    return path


# --- install / uninstall / status -----------------------------------------------------------


def test_install_writes_both_hooks_that_exec_back_into_sage(repo: Path) -> None:
    changes = hooks.install(repo)
    assert [(c.hook, c.action, c.previous) for c in changes] == [
        ("pre-commit", "installed", None),
        ("commit-msg", "installed", None),
    ]
    for name in hooks.HOOKS:
        path = hooks_dir(repo) / name
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n") and hooks.MARKER in text
        assert f'-m sage hook-impl {name} --chained -- "$@"' in text
        assert f"SAGE_PYTHON={sys.executable}" in text
        assert path.stat().st_mode & stat.S_IXUSR


def test_reinstall_is_idempotent_and_updates_the_interpreter(repo: Path) -> None:
    hooks.install(repo)
    before = (hooks_dir(repo) / "pre-commit").read_bytes()
    assert {c.action for c in hooks.install(repo)} == {"unchanged"}
    assert (hooks_dir(repo) / "pre-commit").read_bytes() == before
    assert {c.action for c in hooks.install(repo, python="/opt/py/bin/python3")} == {"updated"}
    assert not (hooks_dir(repo) / "pre-commit.legacy").exists()  # our own hook is never chained


def saved_dir(repo: Path) -> Path:
    return repo / ".git" / "sage" / "hooks-before"


def test_foreign_hook_is_chained_and_restored_exactly(repo: Path) -> None:
    original = foreign_hook(repo, mode=0o750)
    changes = hooks.install(repo)
    kept = changes[0].previous
    assert kept is not None and kept.is_relative_to(saved_dir(repo)) and kept.name == "pre-commit"
    assert changes[1].previous is None
    assert kept.read_bytes() == FOREIGN and stat.S_IMODE(kept.stat().st_mode) == 0o750
    assert not (hooks_dir(repo) / "pre-commit.legacy").exists()  # pre-commit's name, not ours
    assert hooks.previous_hook(repo, "pre-commit") == kept
    assert hooks.install(repo)[0].previous == kept  # reinstall keeps the chain
    removed = hooks.uninstall(repo)
    assert [(c.hook, c.action) for c in removed] == [
        ("pre-commit", "removed"),
        ("commit-msg", "removed"),
    ]
    assert original.read_bytes() == FOREIGN and stat.S_IMODE(original.stat().st_mode) == 0o750
    assert not (hooks_dir(repo) / "commit-msg").exists()
    assert not (repo / ".git" / "sage").exists()  # the record and the saved hooks are gone


def test_a_symlinked_hook_stays_a_symlink(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "shared-hook"
    target.write_bytes(FOREIGN)
    link = hooks_dir(repo) / "commit-msg"
    link.symlink_to(target)
    kept = hooks.install(repo)[1].previous
    assert kept is not None and kept.readlink() == target
    hooks.uninstall(repo)
    assert link.is_symlink() and link.readlink() == target


def test_refuses_to_overwrite_a_different_saved_hook(repo: Path) -> None:
    foreign_hook(repo)
    hooks.install(repo)
    replaced = hooks_dir(repo) / "pre-commit"
    replaced.write_text("#!/bin/sh\nexit 0\n")  # someone put another hook in sage's place
    commit_msg = (hooks_dir(repo) / "commit-msg").read_bytes()
    with pytest.raises(SageError, match="already keeps an earlier one") as caught:
        hooks.install(repo)
    assert caught.value.hint
    assert replaced.read_text() == "#!/bin/sh\nexit 0\n"
    assert (hooks_dir(repo) / "commit-msg").read_bytes() == commit_msg  # nothing half-done


def test_uninstall_keeps_a_saved_hook_whose_place_was_taken(repo: Path) -> None:
    foreign_hook(repo)
    kept = hooks.install(repo)[0].previous
    (hooks_dir(repo) / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    changes = hooks.uninstall(repo)
    assert (changes[0].action, changes[0].previous) == ("kept", kept)
    assert kept is not None and kept.read_bytes() == FOREIGN


def test_a_hook_from_an_earlier_sage_is_migrated(repo: Path) -> None:
    """Earlier versions kept the previous hook as `<hook>.legacy`, with no record."""
    foreign_hook(repo)
    (hooks_dir(repo) / "pre-commit").rename(hooks_dir(repo) / "pre-commit.legacy")
    old = hooks.script("pre-commit", sys.executable).replace("--chained", '--legacy "$0.legacy"')
    (hooks_dir(repo) / "pre-commit").write_text(old)
    assert [c.action for c in hooks.uninstall(repo)] == ["removed", "absent"]
    assert (hooks_dir(repo) / "pre-commit").read_bytes() == FOREIGN
    (hooks_dir(repo) / "pre-commit").rename(hooks_dir(repo) / "pre-commit.legacy")
    (hooks_dir(repo) / "pre-commit").write_text(old)
    kept = hooks.install(repo)[0].previous
    assert kept is not None and kept.read_bytes() == FOREIGN
    assert not (hooks_dir(repo) / "pre-commit.legacy").exists()


def test_core_hooks_path_is_refused_unless_forced(repo: Path) -> None:
    git(repo, "config", "core.hooksPath", "githooks")
    with pytest.raises(SageError, match=r"core\.hooksPath") as caught:
        hooks.install(repo)
    assert caught.value.hint and "--force" in caught.value.hint
    changes = hooks.install(repo, force=True)
    assert changes[0].path == repo / "githooks" / "pre-commit"
    assert hooks.status(repo).hooks_path == "githooks"
    hooks.uninstall(repo)
    assert not (repo / "githooks" / "pre-commit").exists()


def test_install_from_a_worktree_goes_to_the_common_dir(repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(worktree), "-b", "side")
    changes = hooks.install(worktree)
    assert changes[0].path == hooks_dir(repo) / "pre-commit"


def test_status_reports_each_hook(repo: Path) -> None:
    foreign_hook(repo, "commit-msg")
    found = hooks.status(repo)
    assert found.directory == hooks_dir(repo) and found.hooks_path is None
    assert [s.state for s in found.hooks] == ["absent", "foreign"]
    hooks.install(repo, python="/opt/py/bin/python3")
    commit_msg = hooks.status(repo).hooks[1]
    assert commit_msg.state == "installed" and commit_msg.interpreter == "/opt/py/bin/python3"
    assert commit_msg.previous is not None and commit_msg.previous.read_bytes() == FOREIGN
    assert found.manager is None and commit_msg.how == "script"


def test_uninstall_leaves_foreign_hooks_alone(repo: Path) -> None:
    foreign_hook(repo)
    changes = hooks.uninstall(repo)
    assert [(c.hook, c.action) for c in changes] == [
        ("pre-commit", "foreign"),
        ("commit-msg", "absent"),
    ]
    assert (hooks_dir(repo) / "pre-commit").read_bytes() == FOREIGN


def test_run_legacy_passes_the_arguments_and_reports_failure(repo: Path) -> None:
    legacy = hooks_dir(repo) / "commit-msg.legacy"
    legacy.write_text('#!/bin/sh\necho "legacy $1"\nexit 3\n')
    legacy.chmod(0o755)
    done = hooks.run_legacy(legacy, ["MSG"])
    assert done is not None and done.returncode == 3 and done.stdout == "legacy MSG\n"
    legacy.chmod(0o644)
    assert hooks.run_legacy(legacy, ["MSG"]) is None  # git skips non-executable hooks too
    assert hooks.run_legacy(hooks_dir(repo) / "missing.legacy", []) is None


# --- commit-msg -----------------------------------------------------------------------------

STRIP = Config().strip_lines


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Add login\n\nBody.\n\nCo-Authored-By: Claude <noreply@anthropic.com>\n",
            "Add login\n\nBody.\n",
        ),
        (
            "Fix\n\n🤖 Generated with [Claude Code](https://claude.com/claude-code)\n\n"
            "Co-Authored-By: Claude <noreply@anthropic.com>\n\n\n",
            "Fix\n",
        ),
        (
            "Fix\n\nGenerated with Claude Code\n\nSage-Ticket: A-1\n",
            "Fix\n\nSage-Ticket: A-1\n",
        ),
        ("Keep   \n\n\nme\n\n", "Keep   \n\n\nme\n\n"),  # nothing stripped: untouched
        ("Co-Authored-By: Alice <a@example.com>\n", "Co-Authored-By: Alice <a@example.com>\n"),
    ],
)
def test_strip_lines(message: str, expected: str) -> None:
    assert hooks.strip_lines(message, STRIP) == expected


def test_a_bad_strip_pattern_names_the_key() -> None:
    with pytest.raises(ConfigError, match="strip_lines"):
        hooks.strip_lines("x\n", ["("])


def test_ticket_trailers_are_parsed_by_git(repo: Path) -> None:
    message = "A-1: x\n\nSage-Ticket: A-1\nsage-ticket: B-2\nSigned-off-by: Me <me@x>\n"
    assert hooks.ticket_trailers(repo, message) == ["A-1", "B-2"]
    assert hooks.ticket_trailers(repo, "Sage-Ticket: A-1 in the subject only\n") == []


def commit_msg(repo: Path, text: str) -> tuple[hooks.Verdict, str]:
    path = repo / ".git" / "COMMIT_EDITMSG"
    path.write_text(text)
    verdict = hooks.check_message(open_project(repo), repo, path)
    return verdict, path.read_text()


def test_commit_msg_checks_the_trailer_against_the_index(repo: Path) -> None:
    write_index(repo, [ticket("A-1")])
    verdict, text = commit_msg(repo, "A-1: x\n\nSage-Ticket: A-1\nCo-Authored-By: Claude <c>\n")
    assert verdict.ok and text == "A-1: x\n\nSage-Ticket: A-1\n"
    verdict, _ = commit_msg(repo, "x\n\nSage-Ticket: NOPE-9\n")
    assert not verdict.ok and verdict.exit_code == 1
    assert "NOPE-9 is not a ticket in .sage/tickets/index.json" in verdict.messages[0]


def test_commit_msg_without_an_index_warns_but_lets_the_commit_through(repo: Path) -> None:
    verdict, _ = commit_msg(repo, "x\n\nSage-Ticket: A-1\n")
    assert verdict.ok and "cannot check Sage-Ticket" in verdict.messages[0]
    assert commit_msg(repo, "plain message\n")[0] == hooks.Verdict(ok=True)


def test_strip_lines_come_from_the_config(repo: Path) -> None:
    (repo / ".sage").mkdir()
    (repo / ".sage" / "config.toml").write_text('[hooks]\nstrip_lines = ["^Internal-Id:"]\n')
    _, text = commit_msg(repo, "x\n\nInternal-Id: 7\nCo-Authored-By: Claude <c>\n")
    assert text == "x\n\nCo-Authored-By: Claude <c>\n"


# --- pre-commit -----------------------------------------------------------------------------


def pre_commit(repo: Path, worktree: Path | None = None) -> hooks.Verdict:
    return hooks.check_staged_index(open_project(worktree or repo), worktree or repo)


def test_nothing_staged_passes(repo: Path) -> None:
    write_index(repo, [ticket("A-1", "A-1")])  # broken, but not staged
    assert pre_commit(repo) == hooks.Verdict(ok=True)


def test_staged_content_is_validated_not_the_working_copy(repo: Path) -> None:
    index = write_index(repo, [ticket("A-1"), ticket("A-2", "A-1")])
    git(repo, "add", INDEX)
    index.write_text("{ broken")
    assert pre_commit(repo).ok
    git(repo, "add", INDEX)
    verdict = pre_commit(repo)
    assert not verdict.ok
    assert "error: .sage/tickets/index.json:1:3: invalid JSON" in "\n".join(verdict.messages)


def test_a_staged_cycle_is_blocked_with_every_error(repo: Path) -> None:
    write_index(repo, [ticket("A-1", "A-2"), ticket("A-2", "A-1"), ticket("B-1", "GONE-1")])
    git(repo, "add", INDEX)
    verdict = pre_commit(repo)
    text = "\n".join(verdict.messages)
    assert not verdict.ok and "A-1 → A-2 → A-1" in text and "GONE-1" in text
    assert "2 errors" in verdict.messages[0] and verdict.messages[-1].startswith("hint:")


def test_a_staged_deletion_passes(repo: Path) -> None:
    write_index(repo, [ticket("A-1")])
    git(repo, "add", INDEX)
    git(repo, "commit", "-q", "-m", "index")
    git(repo, "rm", "-q", INDEX)
    assert pre_commit(repo).ok


def test_the_index_that_git_commit_stages_into_is_read(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git commit -a` stages into a temporary index named by GIT_INDEX_FILE."""
    write_index(repo, [ticket("A-1")])
    git(repo, "add", INDEX)
    git(repo, "commit", "-q", "-m", "index")
    (repo / INDEX).write_text("[")
    temporary = tmp_path / "next-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(temporary)}
    subprocess.run(["git", "-C", str(repo), "read-tree", "HEAD"], env=env, check=True)
    subprocess.run(["git", "-C", str(repo), "add", INDEX], env=env, check=True)
    assert pre_commit(repo).ok  # the real index has nothing staged
    monkeypatch.setenv("GIT_INDEX_FILE", str(temporary))
    assert not pre_commit(repo).ok


def test_staged_index_in_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    write_index(repo, [ticket("A-1")])
    git(repo, "add", INDEX)
    git(repo, "commit", "-q", "-m", "index")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(worktree), "-b", "side")
    write_index(worktree, [ticket("A-1", "A-1")])
    assert pre_commit(repo, worktree).ok
    git(worktree, "add", INDEX)
    assert not pre_commit(repo, worktree).ok
    assert pre_commit(repo).ok  # the main worktree's index has nothing staged


def test_an_index_outside_the_repository_is_not_checked(repo: Path, tmp_path: Path) -> None:
    project = open_project(repo, index=str(tmp_path / "elsewhere.json"))
    assert hooks.index_relpath(project, repo) is None
    assert hooks.check_staged_index(project, repo).ok


def test_index_files_from_the_framework_are_checked_on_disk(repo: Path) -> None:
    write_index(repo, [ticket("A-1")])
    git(repo, "add", INDEX)
    git(repo, "commit", "-q", "-m", "index")
    assert hooks.check_index_files([str(repo / INDEX)]).ok
    write_index(repo, [ticket("A-1", "A-1")])  # not staged: the framework stashed the rest
    verdict = hooks.check_index_files([str(repo / INDEX), str(repo / "missing.json")])
    text = "\n".join(verdict.messages)
    assert not verdict.ok and "A-1 → A-1" in text and "cannot read" in text


@pytest.mark.parametrize(
    "before",
    [None, b"", b"npm test\n", b"npm test", b"\xff not utf-8\n\n# >>> sage hooks? no\n"],
)
def test_husky_block_comes_out_exactly(before: bytes | None) -> None:
    block = hook_managers.block("pre-commit", "/opt/py 3/bin/python")
    after, separated = hook_managers.add_block(before, block)
    assert after.endswith(block) and separated == (before == b"npm test")
    assert hook_managers.add_block(after, block) == (after, False)  # reinstall: unchanged
    newer = hook_managers.block("pre-commit", "/usr/bin/python3")
    assert hook_managers.add_block(after, newer)[0] == after.replace(block, newer)
    assert hook_managers.remove_block(after, separated) == (before or b"")
    assert hook_managers.remove_block(before or b"", False) is None


def test_user_lines_after_the_block_survive_uninstall() -> None:
    block = hook_managers.block("commit-msg", sys.executable)
    edited = b"first\n" + block + b"added later\n"
    assert hook_managers.remove_block(edited, False) == b"first\nadded later\n"
