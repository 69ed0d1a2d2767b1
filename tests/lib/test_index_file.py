"""The index file read in process against git: when sage says a checkout is clean for an update,
git's own dry run (`read-tree -m -u -n OLD NEW`) agrees."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sage.lib import index_file
from sage.lib.queue import checkout
from tests.conftest import git

FILES = ("a.txt", "d/b.txt", "d/e/c.txt")
NEW_FILES = ("n.txt", "d/n.txt", "m/n.txt")
ACTIONS = ("none", "edit", "edit same size", "touch", "chmod", "stage", "delete",
           "untracked in the way", "folder in the way", "intent to add",
           "assume unchanged")  # fmt: skip


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


@pytest.fixture
def two_commits(tmp_path: Path) -> tuple[Path, str, str]:
    return make_two_commits(tmp_path)


def make_two_commits(tmp_path: Path) -> tuple[Path, str, str]:
    """A checkout at OLD; NEW changes every file of OLD and adds NEW_FILES."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for name in FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(f"old {name}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "old")
    old = git(repo, "rev-parse", "HEAD")
    for name in FILES:
        (repo / name).write_text(f"new {name}\n")
    for name in NEW_FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("added\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "new")
    new = git(repo, "rev-parse", "HEAD")
    git(repo, "reset", "-q", "--hard", old)
    return repo, old, new


def act(repo: Path, action: str, path: str) -> None:
    file = repo / path
    if action == "edit":
        file.write_text("the user's edit, longer\n")
    elif action == "edit same size":
        content = file.read_text()
        file.write_text(content.upper())
    elif action == "touch":
        future = time.time() + 5
        os.utime(file, (future, future))
    elif action == "chmod":
        file.chmod(0o755)
    elif action == "stage":
        file.write_text("staged by the user\n")
        git(repo, "add", path)
    elif action == "delete":
        file.unlink()
    elif action == "intent to add":
        new = repo / NEW_FILES[0]
        new.write_text("mine\n")
        git(repo, "add", "-N", NEW_FILES[0])
    elif action == "assume unchanged":
        git(repo, "update-index", "--assume-unchanged", path)
        file.write_text("hidden edit\n")
    elif action == "untracked in the way":
        (repo / NEW_FILES[0]).write_text("untracked, in the way\n")
    elif action == "folder in the way":
        (repo / NEW_FILES[0]).mkdir()
        (repo / NEW_FILES[0] / "x").write_text("x\n")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(action=st.sampled_from(ACTIONS), path=st.sampled_from(FILES), wait=st.booleans())
def test_clean_is_said_only_when_gits_dry_run_passes(
    tmp_path_factory: pytest.TempPathFactory, action: str, path: str, wait: bool
) -> None:
    repo, old, new = make_two_commits(tmp_path_factory.mktemp("clean"))
    if wait:  # the checkout's files no longer racy against its index
        time.sleep(0.02)
        git(repo, "update-index", "-q", "--refresh")
    act(repo, action, path)
    said = checkout._clean_here(repo, old, new)
    event(f"{action}: {'clean' if said else 'asked git'}")
    if said:  # only when the user changed nothing (a touch is no change), and git agrees
        assert action in ("none", "touch")
        git(repo, "update-index", "-q", "--refresh")
        dry = run(repo, "read-tree", "-m", "-u", "-n", old, new)
        assert dry.returncode == 0, (action, dry.stderr)


def test_a_pristine_checkout_is_clean_without_git(two_commits: tuple[Path, str, str]) -> None:
    repo, old, new = two_commits
    assert checkout._clean_here(repo, old, new)
    time.sleep(0.02)
    git(repo, "update-index", "-q", "--refresh")  # stat data now older than the index
    assert checkout._clean_here(repo, old, new)


def test_attributes_keep_a_racy_file_for_git(two_commits: tuple[Path, str, str]) -> None:
    repo, old, new = two_commits
    (repo / "d" / ".gitattributes").write_text("*.txt text eol=crlf\n")
    found = index_file._wanted(repo / ".git" / "index", 20, {"d/b.txt"}, 1 << 20)
    assert found is not None
    written = found["d/b.txt"].stat[2]
    os.utime(repo / ".git" / "index", (written - 10, written - 10))  # every entry now racy
    assert not checkout._clean_here(repo, old, new)


PATHS = ("a", "b", "d/x", "d/y", "d/e/z", "e", "e/w", "f/g/h", "l")
SIDE = st.dictionaries(
    st.sampled_from(PATHS),
    st.tuples(st.sampled_from(("100644", "100755", "120000")), st.sampled_from(("1\n", "2\n", ""))),
    max_size=len(PATHS),
).map(lambda side: {p: e for p, e in side.items() if not any(q.startswith(p + "/") for q in side)})


def commit_side(repo: Path, side: dict[str, tuple[str, str]]) -> str:
    for child in repo.iterdir():
        if child.name != ".git":
            subprocess.run(["rm", "-rf", str(child)], check=True)
    for path, (mode, content) in side.items():
        file = repo / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            os.symlink(content.strip() or "target", file)
        else:
            file.write_text(content)
            file.chmod(0o755 if mode == "100755" else 0o644)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "side")
    return git(repo, "rev-parse", "HEAD")


def state(repo: Path) -> tuple[str, str, str]:
    """What git sees: the index's entries, the files against the index, and against HEAD."""
    run(repo, "update-index", "-q", "--refresh")  # stat data is per copy: only content counts
    return (git(repo, "ls-files", "-s"), git(repo, "diff-files", "--name-status"),
            git(repo, "status", "--porcelain", "--untracked-files=all"))  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(old_side=SIDE, new_side=SIDE, wait=st.booleans(), in_place=st.booleans())
def test_a_fast_forward_leaves_the_checkout_read_tree_leaves(
    tmp_path_factory: pytest.TempPathFactory, old_side: dict[str, tuple[str, str]],
    new_side: dict[str, tuple[str, str]], wait: bool, in_place: bool,
) -> None:  # fmt: skip
    top = tmp_path_factory.mktemp("ff")
    mine = top / "mine"
    subprocess.run(["git", "init", "-q", "-b", "main", str(mine)], check=True)
    old = commit_side(mine, old_side)
    new = commit_side(mine, new_side)
    git(mine, "reset", "-q", "--hard", old)
    if wait:  # the files' stat data older than the index: git trusts it
        time.sleep(0.02)
        git(mine, "update-index", "-q", "--refresh")
    else:  # every entry racily clean: the index written in the instant of the oldest file
        oldest = min((os.lstat(f).st_mtime_ns for f in mine.rglob("*") if ".git" not in f.parts),
                     default=time.time_ns())  # fmt: skip
        os.utime(mine / ".git" / "index", ns=(oldest, oldest))
    theirs = top / "theirs"
    subprocess.run(["cp", "-a", str(mine), str(theirs)], check=True)
    run(theirs, "update-index", "-q", "--refresh")  # the copy's files have new inodes
    paths = {p for p in old_side.keys() | new_side.keys() if old_side.get(p) != new_side.get(p)}
    done = index_file.fast_forward(mine, old, new, paths, in_place=in_place)
    event("in process" if done else "left to git")
    if not done:
        return
    # what git sees before anything refreshes the index: nothing changed (exact or racy stat
    # data, never a smudged size: `git apply --index` trusts stat data and refuses otherwise)
    assert git(mine, "diff-files", "--name-status") == ""
    git(theirs, "read-tree", "-m", "-u", old, new)
    for repo in (mine, theirs):
        git(repo, "update-ref", "refs/heads/main", new)
    assert state(mine) == state(theirs)
    assert state(mine)[1:] == ("", "")  # clean: nothing changed, nothing untracked
    listing = {p: sorted(os.listdir(mine / p)) for p in ("", "d") if (mine / p).is_dir()}
    assert listing == {
        p: sorted(os.listdir(theirs / p)) for p in ("", "d") if (theirs / p).is_dir()
    }
    git(mine, "fsck", "--no-progress")  # the index git reads back is sound


def test_a_fast_forward_in_place_rewrites_a_plain_file_where_it_is(
    two_commits: tuple[Path, str, str],
) -> None:
    """A slot's update keeps a changed file's inode (no file made anew); a file with a second
    name is made anew, as git does, so the other name keeps its content."""
    repo, old, new = two_commits
    kept = os.lstat(repo / "a.txt").st_ino
    os.link(repo / "d" / "b.txt", repo.parent / "other-name")
    assert index_file.fast_forward(repo, old, new, set(FILES) | set(NEW_FILES), in_place=True)
    assert os.lstat(repo / "a.txt").st_ino == kept
    assert (repo / "a.txt").read_text() == "new a.txt\n"
    assert (repo.parent / "other-name").read_text() == "old d/b.txt\n"
    assert (repo / "d" / "b.txt").read_text() == "new d/b.txt\n"
    git(repo, "update-ref", "refs/heads/main", new)
    assert run(repo, "diff-files", "--name-status").stdout == ""
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.parametrize(
    "before, after",
    [("a longer old text\n" * 3, "short\n"), ("short\n", "a longer new text\n" * 3)],
)
def test_a_file_rewritten_in_place_holds_exactly_the_new_content(
    tmp_path: Path, before: str, after: str
) -> None:
    """Written over the old content, the old rest cut off when the new one is shorter."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    commits = []
    for text in (before, after):
        (repo / "f.txt").write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "f")
        commits.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "reset", "-q", "--hard", commits[0])
    time.sleep(0.02)
    git(repo, "update-index", "-q", "--refresh")
    assert index_file.fast_forward(repo, commits[0], commits[1], {"f.txt"}, in_place=True)
    assert (repo / "f.txt").read_text() == after
    git(repo, "update-ref", "refs/heads/main", commits[1])
    assert git(repo, "status", "--porcelain") == ""


def test_a_fast_forward_keeps_out_of_an_edited_checkout(two_commits: tuple[Path, str, str]) -> None:
    repo, old, new = two_commits
    (repo / "a.txt").write_text("the user's\n")
    paths = set(FILES) | set(NEW_FILES)
    assert not index_file.fast_forward(repo, old, new, paths)
    assert (repo / "a.txt").read_text() == "the user's\n"
    assert git(repo, "ls-files", "-s", "a.txt").split()[1] == git(repo, "rev-parse", f"{old}:a.txt")


WORK = ("edit and stage", "edit", "add and stage", "add", "delete and stage", "delete",
        "chmod and stage", "ignored file", "nested repository", "same size edit",
        "make a link and stage", "stage then edit back")  # fmt: skip


def work(repo: Path, action: str, path: str) -> None:
    """What a worker may do to one path of its slot (nothing where a file is in the way of
    the path's folders)."""
    with contextlib.suppress(FileExistsError, NotADirectoryError):
        _work(repo, action, path)


def _work(repo: Path, action: str, path: str) -> None:
    file = repo / path
    if action in ("add and stage", "add", "ignored file", "nested repository"):
        file = repo / "new" / path
        file.parent.mkdir(parents=True, exist_ok=True)
    if action == "ignored file":
        (repo / ".git" / "info").mkdir(exist_ok=True)
        (repo / ".git" / "info" / "exclude").write_text("new/\n")
    if action == "nested repository":
        subprocess.run(["git", "init", "-q", str(file.parent)], check=True)
        return
    if file.is_symlink() or (file.exists() and not file.is_file()):
        return  # an edit through a link or into a folder: not this test's concern
    if action.startswith(("edit", "add")) or action == "ignored file":
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"{action} of {path}\n")
    elif action == "same size edit" and file.exists():
        file.write_text(file.read_text().swapcase() or "x")
    elif action.startswith("delete") and file.exists():
        file.unlink()
    elif action == "chmod and stage" and file.exists():
        file.chmod(file.stat().st_mode ^ 0o100)
    elif action == "make a link and stage" and not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("somewhere", file)
    elif action == "stage then edit back" and file.exists():
        before = file.read_bytes()
        file.write_text("staged\n")
        git(repo, "add", "-A", "--", str(file.relative_to(repo)))
        file.write_bytes(before)
        return
    if action.endswith("and stage"):  # (a path never there: nothing to stage, git says so)
        run(repo, "add", "-A", "--", str(file.relative_to(repo)))


def porcelain(repo: Path) -> list[str]:
    out = git(repo, "--no-optional-locks", "status", "--porcelain=v2", "-z", "--no-renames",
              "--untracked-files=all", "--ignored=matching")  # fmt: skip
    return [record for record in out.split("\0") if record]


@settings(max_examples=60, deadline=None)
@given(side=SIDE, actions=st.lists(st.tuples(st.sampled_from(WORK), st.sampled_from(PATHS)),
                                   max_size=3),
       racy=st.booleans())  # fmt: skip
def test_status_in_process_is_what_git_status_lists(
    tmp_path_factory: pytest.TempPathFactory, side: dict[str, tuple[str, str]],
    actions: list[tuple[str, str]], racy: bool,
) -> None:  # fmt: skip
    """When sage reads a slot's status from its files, git's own status lists the same staged
    paths with the same index entries, and nothing unstaged, untracked or ignored; where it
    does not (git is asked), the test says how often."""
    repo = tmp_path_factory.mktemp("status") / "slot"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    head = commit_side(repo, side)
    if not racy:
        time.sleep(0.02)
        git(repo, "update-index", "-q", "--refresh")
    for action, path in actions:
        work(repo, action, path)
    if racy:  # every entry racily clean: git must read the files again
        newest = max((os.lstat(f).st_mtime_ns for f in repo.rglob("*") if ".git" not in f.parts),
                     default=time.time_ns())  # fmt: skip
        os.utime(repo / ".git" / "index", ns=(newest, newest))
    found = index_file.status(repo, head)
    event("in process" if found is not None else "left to git")
    if found is None:
        return
    records = porcelain(repo)
    assert all(r.startswith("1 ") and r.split(" ")[1][1] == "." for r in records), records
    listed = {}
    for record in records:
        fields = record.split(" ", 8)
        head_mode, index_mode, head_id, index_id, path = fields[3], fields[4], *fields[6:9]
        before = None if head_mode == "000000" else (head_mode, head_id)
        after = None if index_mode == "000000" else (index_mode, index_id)
        listed[path] = (before, after)
    assert found == listed


def test_status_in_process_leaves_untracked_work_to_git(tmp_path: Path) -> None:
    repo = tmp_path / "slot"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    head = commit_side(repo, {"a": ("100644", "1\n")})
    (repo / "a").write_text("2\n")
    git(repo, "add", "a")
    before, staged = git(repo, "rev-parse", "HEAD:a"), git(repo, "rev-parse", ":a")
    assert index_file.status(repo, head) == {"a": (("100644", before), ("100644", staged))}
    (repo / "b").write_text("the worker's, not added\n")
    assert index_file.status(repo, head) is None


def test_status_in_process_sees_an_edit_hidden_behind_old_stat_data(tmp_path: Path) -> None:
    """A worker that edits a staged file again, same size, and sets its old times back: the
    change time still differs (no one can set it), so the file is read, and git answers."""
    repo = tmp_path / "slot"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    head = commit_side(repo, {"a": ("100644", "1\n")})
    (repo / "a").write_text("2\n")
    git(repo, "add", "a")
    time.sleep(0.02)
    git(repo, "update-index", "-q", "--refresh")
    seen = os.lstat(repo / "a")
    with open(repo / "a", "r+b") as handle:  # same inode, same size
        handle.write(b"3\n")
    os.utime(repo / "a", ns=(seen.st_atime_ns, seen.st_mtime_ns))
    assert index_file.status(repo, head) is None
    assert git(repo, "status", "--porcelain") == "MM a"  # staged, and changed since
