"""Worker slots: one worktree per slot, reused across tickets; nothing one ticket leaves reaches
the next, setup runs once (and again when a lockfile changes), broken slots are recreated."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from sage.lib import config, index_file, worktrees
from sage.lib.errors import SageError
from sage.lib.worktrees import SlotSetup
from tests.conftest import git, worktrees_dir
from tests.support.git_wrapper import GitWrapper

NOTHING = SlotSetup()
IGNORES = "*.lock\nnode_modules/\n.env\nout/\n*.log\n"
# A setup that makes an ignored folder and counts its runs in a file outside the repository.
SETUP_CODE = (
    "import os, pathlib, sys\n"
    "pathlib.Path('node_modules').mkdir(exist_ok=True)\n"
    "pathlib.Path('node_modules/lib.js').write_text('installed')\n"
    "with open(sys.argv[1], 'a') as f: f.write(os.environ['SAGE_SLOT'] + '\\n')\n"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text(IGNORES)
    (path / "README.md").write_text("hello\n")
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("print('app')\n")
    (path / "package-lock.json").write_text('{"v": 1}\n')
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def commit_on_main(repo: Path, name: str, text: str) -> str:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"change {name}")
    return git(repo, "rev-parse", "HEAD")


def prepare(
    repo: Path, tid: str, base: str = "main", slot: int = 0, setup: SlotSetup = NOTHING
) -> worktrees.Slot:
    return worktrees.prepare_slot(
        repo, worktrees_dir(repo), slot, tid, git(repo, "rev-parse", base), setup
    )


def everything(path: Path) -> str:
    """Anything in the worktree that is not exactly the checked-out commit."""
    return git(path, "status", "--porcelain", "--ignored", "--untracked-files=all")


def installer(tmp_path: Path, **fields: tuple[str, ...]) -> SlotSetup:
    argv = (sys.executable, "-c", SETUP_CODE, str(tmp_path / "setup-runs"))
    return SlotSetup(setup=argv, **fields)


def setup_runs(tmp_path: Path) -> list[str]:
    runs = tmp_path / "setup-runs"
    return runs.read_text().split() if runs.exists() else []


def test_first_ticket_creates_the_slot_then_the_next_reuses_it(project: Path) -> None:
    first = prepare(project, "A-1")
    assert first.created and not first.recovered
    assert first.path == worktrees_dir(project) / "slot-0"
    second = prepare(project, "A-2")
    assert not second.created and second.path == first.path
    assert git(second.path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-2"
    assert git(second.path, "rev-parse", "HEAD") == git(project, "rev-parse", "main")
    assert second.seconds >= 0 and second.setup_seconds == 0 and not second.setup_ran


def test_nothing_a_ticket_leaves_reaches_the_next(project: Path) -> None:
    path = prepare(project, "A-1").path
    (path / "README.md").write_text("modified\n")
    (path / "src" / "app.py").unlink()
    (path / "untracked.txt").write_text("left\n")
    (path / "out").mkdir()
    (path / "out" / "build.bin").write_text("ignored\n")
    (path / "staged.txt").write_text("staged\n")
    git(path, "add", "staged.txt")
    (path / "nested").mkdir()
    git(path / "nested", "init", "-q")
    (path / "feature.py").write_text("work\n")
    git(path, "add", "feature.py")
    git(path, "commit", "-q", "-m", "A-1's work")
    landed_later = git(path, "rev-parse", "HEAD")
    (path / "more.txt").write_text("uncommitted\n")
    git(path, "add", "more.txt")
    prepare(project, "A-2")
    assert everything(path) == ""
    assert git(path, "rev-parse", "HEAD") == git(project, "rev-parse", "main")
    assert (path / "README.md").read_text() == "hello\n"
    assert (path / "src" / "app.py").exists()
    assert not (path / "feature.py").exists() and not (path / "nested").exists()
    assert git(project, "rev-parse", "sage/A-1") == landed_later  # the queue lands from it


def test_a_stray_branch_or_detached_head_does_not_carry_over(project: Path) -> None:
    path = prepare(project, "A-1").path
    git(path, "checkout", "-q", "-b", "stray")
    (path / "stray.txt").write_text("x\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "stray")
    git(path, "checkout", "-q", "--detach", "HEAD")
    prepare(project, "A-2")
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-2"
    assert git(path, "rev-parse", "HEAD") == git(project, "rev-parse", "main")
    assert not (path / "stray.txt").exists()


def test_a_rerun_resets_the_tickets_own_branch_to_the_new_base(project: Path) -> None:
    path = prepare(project, "A-1").path
    (path / "old.txt").write_text("first attempt\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first attempt")
    head = commit_on_main(project, "src/new.py", "new\n")
    prepare(project, "A-1")
    assert git(path, "rev-parse", "HEAD") == head
    assert not (path / "old.txt").exists() and (path / "src" / "new.py").exists()


def test_only_files_that_differ_are_rewritten(project: Path) -> None:
    path = prepare(project, "A-1").path
    before = (path / "README.md").stat()
    commit_on_main(project, "src/app.py", "print('v2')\n")
    prepare(project, "A-2")
    after = (path / "README.md").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (path / "src" / "app.py").read_text() == "print('v2')\n"


def test_index_flags_a_worker_set_are_cleared(project: Path) -> None:
    path = prepare(project, "A-1").path
    git(path, "update-index", "--skip-worktree", "README.md")
    (path / "README.md").write_text("hidden edit\n")
    git(path, "update-index", "--assume-unchanged", "src/app.py")
    prepare(project, "A-2")
    assert (path / "README.md").read_text() == "hello\n"
    assert (
        git(path, "ls-files", "-v")
        == "H .gitignore\nH README.md\nH package-lock.json\nH src/app.py"
    )
    (path / "src" / "app.py").write_text("the next ticket's edit\n")
    assert "src/app.py" in everything(path)  # seen, so it is collected and lands


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / ".git").unlink(), "no .git file"),
        (lambda p: (p / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n"), "elsewhere"),
        (lambda p: Path(git(p, "rev-parse", "--git-dir"), "index.lock").touch(), "index.lock"),
        (lambda p: Path(git(p, "rev-parse", "--git-dir"), "MERGE_HEAD").touch(), "MERGE_HEAD"),
        (lambda p: Path(git(p, "rev-parse", "--git-dir"), "index").write_bytes(b"junk"), "switch"),
    ],
    ids=["missing .git", "changed .git", "stale index.lock", "merge left half done", "bad index"],
)
def test_a_broken_slot_is_removed_and_recreated(project: Path, damage: object, reason: str) -> None:
    path = prepare(project, "A-1").path
    (path / "leftover.txt").write_text("x\n")
    damage(path)  # type: ignore[operator]
    again = prepare(project, "A-2")
    assert again.created and reason in again.recovered
    assert everything(path) == ""
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-2"
    assert prepare(project, "A-3").created is False
    assert len(git(project, "worktree", "list", "--porcelain").split("worktree ")) == 3


def test_a_deleted_slot_is_simply_created_again(project: Path) -> None:
    import shutil

    path = prepare(project, "A-1").path
    shutil.rmtree(path)
    again = prepare(project, "A-2")
    assert again.created and again.recovered == ""
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-2"


def test_the_same_ticket_may_move_to_another_slot(project: Path) -> None:
    prepare(project, "A-1", slot=0)
    other = prepare(project, "A-1", slot=1)
    assert other.path.name == "slot-1" and other.created
    again = prepare(project, "A-1", slot=0)
    assert git(again.path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-1"


def test_setup_runs_once_per_slot_and_its_output_survives(project: Path, tmp_path: Path) -> None:
    setup = installer(tmp_path)
    first = prepare(project, "A-1", setup=setup)
    assert first.setup_ran and first.setup_reason == "created" and first.setup_seconds > 0
    second = prepare(project, "A-2", setup=setup)
    assert not second.setup_ran and second.setup_seconds == 0
    assert (second.path / "node_modules" / "lib.js").read_text() == "installed"
    assert setup_runs(tmp_path) == ["0"]
    prepare(project, "A-3", slot=1, setup=setup)
    assert setup_runs(tmp_path) == ["0", "1"]


def test_setup_runs_again_when_a_lockfile_changes(project: Path, tmp_path: Path) -> None:
    setup = installer(tmp_path, setup_when=("package-lock.json", "absent.lock"))
    prepare(project, "A-1", setup=setup)
    commit_on_main(project, "README.md", "unrelated\n")
    assert not prepare(project, "A-2", setup=setup).setup_ran
    commit_on_main(project, "package-lock.json", '{"v": 2}\n')
    third = prepare(project, "A-3", setup=setup)
    assert third.setup_ran and third.setup_reason == "changed: package-lock.json"
    assert not prepare(project, "A-4", setup=setup).setup_ran
    assert setup_runs(tmp_path) == ["0", "0"]


def test_a_failed_setup_is_an_error_and_runs_again_next_time(project: Path, tmp_path: Path) -> None:
    failing = SlotSetup(setup=(sys.executable, "-c", "import sys; sys.exit('no network')"))
    with pytest.raises(SageError, match=r"setup failed.*no network"):
        prepare(project, "A-1", setup=failing)
    again = prepare(project, "A-2", setup=installer(tmp_path))
    assert again.setup_ran and again.setup_reason == "not set up yet" and not again.created


def test_copies_come_from_the_users_checkout_and_are_refreshed(project: Path) -> None:
    (project / ".env").write_text("TOKEN=1\n")
    setup = SlotSetup(copy=(".env",))
    path = prepare(project, "A-1", setup=setup).path
    assert (path / ".env").read_text() == "TOKEN=1\n"
    (path / ".env").write_text("TOKEN=changed by a ticket\n")
    prepare(project, "A-2", setup=setup)
    assert (path / ".env").read_text() == "TOKEN=1\n"


def test_a_copy_git_would_see_is_refused(project: Path) -> None:
    (project / "secrets.txt").write_text("not ignored\n")
    with pytest.raises(SageError, match=r"secrets\.txt is not ignored"):
        prepare(project, "A-1", setup=SlotSetup(copy=("secrets.txt",)))


def test_keep_globs_survive_the_clean(project: Path) -> None:
    setup = SlotSetup(keep=("*.log",))
    path = prepare(project, "A-1", setup=setup).path
    (path / "cache.log").write_text("warm\n")
    (path / "other.tmp").write_text("gone\n")
    prepare(project, "A-2", setup=setup)
    assert (path / "cache.log").exists() and not (path / "other.tmp").exists()


def test_worktree_config_keys(tmp_path: Path) -> None:
    (tmp_path / ".sage").mkdir()
    (tmp_path / ".sage" / "config.toml").write_text(
        '[worktree]\nsetup = ["npm", "ci"]\nsetup_when = ["package-lock.json"]\n'
        'copy = [".env"]\nkeep = ["node_modules/"]\n'
    )
    loaded = SlotSetup.of(config.load(tmp_path, environ={"SAGE_COPY": ".env .env.local"}))
    assert loaded == SlotSetup(setup=("npm", "ci"), setup_when=("package-lock.json",),
                               copy=(".env", ".env.local"), keep=("node_modules/",))  # fmt: skip


def test_worktree_paths_must_stay_inside_the_repository(tmp_path: Path) -> None:
    with pytest.raises(SageError, match="copy"):
        config.load(tmp_path, environ={"SAGE_COPY": "../secret"})


def test_the_last_tickets_branch_may_be_deleted_under_the_slot(project: Path) -> None:
    path = prepare(project, "A-1").path
    git(project, "update-ref", "-d", "refs/heads/sage/A-1")  # landed: the queue deletes it
    again = prepare(project, "A-2")
    assert not again.created
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-2"
    assert everything(path) == ""


@pytest.mark.parametrize(
    ("code", "seen"),
    [
        ("open('made.txt', 'w').write('not ignored')", "made.txt"),
        ("open('package-lock.json', 'w').write('rewritten')", "package-lock.json"),
    ],
    ids=["untracked output", "tracked file changed"],
)
def test_setup_output_git_would_see_is_refused(project: Path, code: str, seen: str) -> None:
    with pytest.raises(SageError, match=f"setup left files git sees.*{seen}"):
        prepare(project, "A-1", setup=SlotSetup(setup=(sys.executable, "-c", code)))


def test_a_reused_slot_costs_two_git_calls_and_none_when_it_was_left_tidy(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.reliability.test_process_count import classify, logging_git

    prepare(project, "A-1")
    prepare(project, "A-2")  # and the repository's common dir, read once per process
    worktrees.note_tidy(prepare(project, "A-3").path, tidy=True)
    prepare(project, "A-4")  # where the slot's hooks are, asked once per process
    base, slots = git(project, "rev-parse", "main"), worktrees_dir(project)
    bin_dir, log = logging_git(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def calls(tid: str, at: str = base) -> list[str]:
        log.write_text("")
        worktrees.prepare_slot(project, slots, 0, tid, at)
        return [classify(line)[1] for line in log.read_text().splitlines()]

    assert calls("A-5") == ["checkout", "clean"]  # index flags read from the index file
    worktrees.note_tidy(slots / "slot-0", tidy=True)
    # tidy, and HEAD has base's tree already: only refs change, written as git writes them
    assert calls("A-6") == []
    slot = slots / "slot-0"
    assert git(slot, "symbolic-ref", "HEAD") == "refs/heads/sage/A-6"
    assert git(slot, "rev-parse", "HEAD") == base
    assert git(slot, "status", "--porcelain", "--ignored") == ""
    assert "checkout: moving from sage/A-5 to sage/A-6" in git(slot, "reflog", "-1")
    assert calls("A-7") == ["checkout", "clean"]  # a note is good for one switch
    (project / "other.txt").write_text("other\n")
    git(project, "add", "other.txt")
    git(project, "commit", "-q", "-m", "other")
    worktrees.note_tidy(slot, tidy=True)
    # tidy, files differ: those files and the index moved in process, then the refs
    assert calls("A-8", git(project, "rev-parse", "main")) == []
    assert (slot / "other.txt").read_text() == "other\n"
    assert git(slot, "status", "--porcelain", "--ignored") == ""
    assert git(slot, "rev-parse", "HEAD") == git(project, "rev-parse", "main")


def test_a_tidy_slot_is_still_cleaned_when_a_hook_may_have_written(project: Path) -> None:
    path = prepare(project, "A-1").path
    hook = Path(git(path, "rev-parse", "--git-common-dir")) / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\necho made > made-by-hook.txt\n")
    hook.chmod(0o755)
    worktrees.note_tidy(path, tidy=True)
    prepare(project, "A-2")
    assert everything(path) == ""


@pytest.mark.parametrize("kind", ["v2", "v4", "sha256"])
def test_index_flags_are_read_from_the_index_file(tmp_path: Path, kind: str) -> None:
    repo = tmp_path / "repo"
    fmt = "sha256" if kind == "sha256" else "sha1"
    git(tmp_path, "init", "-q", f"--object-format={fmt}", str(repo))
    for name in ("a.txt", "b.txt", "dir/c d.txt", "dir/sub/é.txt"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(name)
    git(repo, "add", "-A")
    git(repo, "update-index", "--index-version", "4" if kind == "v4" else "2")
    git(repo, "update-index", "--assume-unchanged", "a.txt", "dir/c d.txt")
    git(repo, "update-index", "--skip-worktree", "dir/sub/é.txt", "dir/c d.txt")
    size = 32 if kind == "sha256" else 20
    flagged = index_file.flags(repo / ".git" / "index", size)
    assert flagged == (["a.txt", "dir/c d.txt"], ["dir/c d.txt", "dir/sub/é.txt"])
    assert flagged == worktrees._listed_flags(repo)
    (repo / ".git" / "index").write_bytes(b"DIRC\0\0\0\x09")
    assert index_file.flags(repo / ".git" / "index", size) is None  # ls-files, then


def test_sage_branches_get_no_reflog_but_the_slots_head_keeps_its_own(project: Path) -> None:
    """Two files fewer to create and delete per ticket; the HEAD reflog is how a worker's own
    checkout of another branch is found (workers._moved_users_branch)."""
    path = prepare(project, "A-1").path
    prepare(project, "A-2")
    common = Path(git(path, "rev-parse", "--git-common-dir"))
    assert not (common / "logs" / "refs" / "heads" / "sage" / "A-2").exists()
    head_log = Path(git(path, "rev-parse", "--git-dir")) / "logs" / "HEAD"
    assert "moving from sage/A-1 to sage/A-2" in head_log.read_text()


def test_a_lock_a_killed_run_left_on_a_tickets_branch_is_removed(project: Path) -> None:
    """kill -9 while git (or sage) held `sage/<ID>.lock` leaves the file; git then refuses the
    branch, and without this the ticket failed every attempt."""
    prepare(project, "A-1")
    common = Path(git(project, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    lock = common / "refs" / "heads" / "sage" / "A-2.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    os.utime(lock, (time.time() - 3600, time.time() - 3600))  # from a run before this one
    slot = prepare(project, "A-2")
    assert git(slot.path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-2"
    assert not lock.exists()


def test_made_slots_take_their_first_ticket_without_a_process(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.reliability.test_process_count import logging_git

    base, slots = git(project, "rev-parse", "main"), worktrees_dir(project)
    worktrees.make_slots(project, slots, 2, base)()
    assert git(slots / "slot-1", "rev-parse", "HEAD") == base  # both made, detached at base
    worktrees.hooks_may_write(slots / "slot-1")  # where hooks are: asked once per process
    bin_dir, log = logging_git(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    log.write_text("")
    slot = worktrees.prepare_slot(project, slots, 0, "A-1", base)
    assert log.read_text() == ""  # no checkout, no clean: a fresh checkout is tidy
    assert slot.created and not slot.recovered
    assert git(slot.path, "symbolic-ref", "HEAD") == "refs/heads/sage/A-1"
    assert everything(slot.path) == ""
    assert f"checkout: moving from {base} to sage/A-1" in git(slot.path, "reflog", "-1")
    assert not worktrees.prepare_slot(project, slots, 0, "A-2", base).created


def test_a_made_slot_follows_the_target_that_moved_since(project: Path) -> None:
    slots = worktrees_dir(project)
    worktrees.make_slots(project, slots, 1, git(project, "rev-parse", "main"))()
    head = commit_on_main(project, "src/new.py", "new\n")
    slot = worktrees.prepare_slot(project, slots, 0, "A-1", head)
    assert (slot.path / "src" / "new.py").read_text() == "new\n"
    assert git(slot.path, "rev-parse", "HEAD") == head
    assert everything(slot.path) == ""


def test_slots_that_exist_are_left_as_they_are(project: Path) -> None:
    slots = worktrees_dir(project)
    used = prepare(project, "A-1").path
    (used / "left.txt").write_text("the last ticket's\n")
    worktrees.make_slots(project, slots, 2, git(project, "rev-parse", "main"))()
    assert (used / "left.txt").exists()  # its next ticket's switch cleans it, not this
    assert (slots / "slot-1" / "README.md").exists()
    assert everything(prepare(project, "A-2").path) == ""


def test_when_a_slot_cannot_be_made_each_is_left_to_its_first_ticket(
    project: Path, git_wrapper: GitWrapper
) -> None:
    slots, base = worktrees_dir(project), git(project, "rev-parse", "main")
    git_wrapper.arm("worktree", "fail", nth=2)  # slot-1's add
    worktrees.make_slots(project, slots, 2, base)()
    git_wrapper.disarm()
    assert not (slots / "slot-1").exists()
    # slot-0 was made, but nothing says so: a checkout cut short looks the same
    (slots / "slot-0" / "README.md").unlink()
    for k in (0, 1):
        slot = worktrees.prepare_slot(project, slots, k, f"A-{k}", base)
        assert slot.created == (k == 1)
        assert (slot.path / "README.md").read_text() == "hello\n"
        assert everything(slot.path) == ""


def test_without_sh_each_slot_is_made_by_its_first_ticket(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_git = tmp_path / "only-git"
    only_git.mkdir()
    real = shutil.which("git")
    assert real
    (only_git / "git").symlink_to(real)
    monkeypatch.setenv("PATH", str(only_git))
    slots = worktrees_dir(project)
    worktrees.make_slots(project, slots, 1, git(project, "rev-parse", "main"))()
    assert not (slots / "slot-0").exists()
    assert prepare(project, "A-1").created


def test_only_slots_a_short_checkout_makes_are_made_ahead(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracked = len(git(project, "ls-files").split())
    monkeypatch.setattr(worktrees, "_AHEAD_FILES", tracked * 2 + 1)
    slots = worktrees_dir(project)
    worktrees.make_slots(project, slots, 4, git(project, "rev-parse", "main"))()
    assert sorted(p.name for p in slots.iterdir()) == ["slot-0", "slot-1"]
    monkeypatch.setattr(worktrees, "_AHEAD_FILES", tracked - 1)
    worktrees.make_slots(project, slots, 4, git(project, "rev-parse", "main"))()
    assert sorted(p.name for p in slots.iterdir()) == ["slot-0", "slot-1"]
