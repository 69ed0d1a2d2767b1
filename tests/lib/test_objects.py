"""Objects written in process against what git writes: the same merge, the same commit id."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sage.lib import objects

IDENT = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.invalid",
    "GIT_COMMITTER_NAME": "Bob",
    "GIT_COMMITTER_EMAIL": "bob@example.invalid",
}
# paths a side may hold; "e" and "e/w" cannot both be there (a file and a folder)
PATHS = ("a", "b", "d/x", "d/y", "d/e/z", "e", "e/w", "f/g/h")
CONTENTS = ("one\n", "two\n", "three\n", "")
MODES = ("100644", "100755")


def git(repo: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=input, capture_output=True, text=True,
        env={**os.environ, **IDENT, **(env or {})}, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("objects") / "repo"
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def blobs(repo: Path) -> dict[str, str]:
    return {c: git(repo, "hash-object", "-w", "--stdin", input=c) for c in CONTENTS}


Side = dict[str, tuple[str, str]]


def valid(side: Side) -> Side:
    """Drop what would make a file and a folder of the same name."""
    return {p: e for p, e in side.items() if not any(q.startswith(p + "/") for q in side)}


def commit_of(repo: Path, side: Side, blobs: dict[str, str], parent: str | None) -> str:
    index = repo / ".git" / "test-index"
    index.unlink(missing_ok=True)
    env = {"GIT_INDEX_FILE": str(index)}
    lines = "".join(f"{mode} {blobs[content]}\t{path}\n" for path, (mode, content) in side.items())
    git(repo, "update-index", "--index-info", input=lines, env=env)
    tree = git(repo, "write-tree", env=env)
    return git(repo, "commit-tree", tree, *(["-p", parent] if parent else []), input="m\n")


entries = st.tuples(st.sampled_from(MODES), st.sampled_from(CONTENTS))
sides = st.dictionaries(st.sampled_from(PATHS), entries, max_size=len(PATHS)).map(valid)


@st.composite
def changed(draw: st.DrawFn, base: Side) -> Side:
    """`base` with some paths changed, deleted or added."""
    side = dict(base)
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=3, unique=True)):
        if draw(st.booleans()) and path in side:
            del side[path]
        else:
            side[path] = draw(entries)
    return valid(side)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_merge_an_edit_and_a_diff_made_in_process_are_the_ones_git_makes(
    repo: Path, blobs: dict[str, str], data: st.DataObject
) -> None:
    base_side = data.draw(sides)
    base = commit_of(repo, base_side, blobs, None)
    ours_side = data.draw(changed(base_side))
    ours = commit_of(repo, ours_side, blobs, base)
    edits = {p: (ours_side[p][0], blobs[ours_side[p][1]]) if p in ours_side else None
             for p in base_side.keys() | ours_side.keys()
             if base_side.get(p) != ours_side.get(p)}  # fmt: skip
    assert objects.edited_tree(repo, base, edits) == git(repo, "rev-parse", f"{ours}^{{tree}}")
    theirs = commit_of(repo, data.draw(changed(base_side)), blobs, base)
    done = subprocess.run(
        ["git", "-C", str(repo), "merge-tree", "--write-tree", ours, theirs],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    listed = git(repo, "diff-tree", "-r", "-z", "--name-only", "--no-renames", base, ours)
    assert objects.changed_paths(repo, base, ours) == {p for p in listed.split("\0") if p}
    mine = objects.merged_tree(repo, base, ours, theirs)
    event("merged in process" if mine else "left to git")
    if mine is not None:  # when sage merges, git merges cleanly to the same tree
        assert done.returncode == 0, done.stdout
        assert mine == done.stdout.split()[0]


def test_different_files_changed_are_merged_without_git(repo: Path, blobs: dict[str, str]) -> None:
    base_side = {"a": ("100644", "one\n"), "d/x": ("100644", "one\n"), "d/y": ("100644", "")}
    base = commit_of(repo, base_side, blobs, None)
    ours = commit_of(repo, {**base_side, "d/x": ("100644", "two\n")}, blobs, base)
    theirs_side = {**base_side, "d/y": ("100755", "three\n"), "f/g/h": ("100644", "")}
    theirs = commit_of(repo, theirs_side, blobs, base)
    mine = objects.merged_tree(repo, base, ours, theirs)
    assert mine is not None
    expect = git(repo, "merge-tree", "--write-tree", ours, theirs)
    assert mine == expect


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ({"a": ("100644", "two\n")}, {"a": ("100644", "three\n")}),  # the same file, differently
        ({}, {"a": ("100644", "two\n")}),  # deleted where the other changed it (renames)
        ({"c": ("100644", "one\n")}, {"e": ("100644", "one\n")}),  # renamed twice, differently
        # a file became a folder (while the other side changed something else)
        ({"a/z": ("100644", "one\n")}, {"a": ("100644", "one\n"), "b": ("100644", "two\n")}),
    ],
)
def test_what_git_must_think_about_is_left_to_git(
    repo: Path, blobs: dict[str, str], ours: Side, theirs: Side
) -> None:
    base = commit_of(repo, {"a": ("100644", "one\n"), "b": ("100644", "")}, blobs, None)
    o = commit_of(repo, {"b": ("100644", ""), **ours}, blobs, base)
    t = commit_of(repo, {"b": ("100644", ""), **theirs}, blobs, base)
    assert objects.merged_tree(repo, base, o, t) is None


def test_a_commit_made_in_process_has_the_id_git_gives_it(
    repo: Path, blobs: dict[str, str]
) -> None:
    parent = commit_of(repo, {"a": ("100644", "one\n")}, blobs, None)
    tree = git(repo, "rev-parse", f"{parent}^{{tree}}")
    message = "R-001: a title\n\nbody line\n\nSage-Ticket: R-001\n"
    when = (1_796_000_000, -(7 * 3600 + 30 * 60))
    mine = objects.commit(repo, tree, [parent], message, env=IDENT, when=when)
    date = {"GIT_AUTHOR_DATE": "1796000000 -0730", "GIT_COMMITTER_DATE": "1796000000 -0730"}
    theirs = git(repo, "commit-tree", tree, "-p", parent, input=message, env=date)
    assert mine == theirs
    # a commit's id stands for its tree too, as in `<commit>^{tree}`
    again = objects.commit(repo, f"{parent}^{{tree}}", [parent], message, env=IDENT, when=when)
    assert again == theirs


@pytest.mark.parametrize(
    "config", [("commit.gpgSign", "true"), ("i18n.commitEncoding", "ISO-8859-1")]
)
def test_a_signed_or_re_encoded_commit_is_left_to_git(
    tmp_path: Path, config: tuple[str, str]
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    tree = git(repo, "write-tree")
    assert objects.commit(repo, tree, [], "m\n", env=IDENT) is not None
    git(repo, "config", *config)
    assert objects.commit(repo, tree, [], "m\n", env=IDENT) is None


def test_a_date_from_the_environment_is_left_to_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    tree = git(repo, "write-tree")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "1796000000 +0000")
    assert objects.commit(repo, tree, [], "m\n", env=IDENT) is None


def test_packed_objects_are_read_in_process(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "d").mkdir()
    for name in ("a", "d/x", "d/y"):
        (repo / name).write_text(f"{name}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "gc", "-q", "--prune=now")  # everything packed, nothing loose
    base = git(repo, "rev-parse", "HEAD")
    (repo / "d" / "x").write_text("ours\n")
    git(repo, "commit", "-q", "-am", "ours")
    ours = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "other", base)
    (repo / "d" / "y").write_text("theirs\n")
    git(repo, "commit", "-q", "-am", "theirs")
    theirs = git(repo, "rev-parse", "HEAD")
    mine = objects.merged_tree(repo, base, ours, theirs)
    assert mine is not None and mine == git(repo, "merge-tree", "--write-tree", ours, theirs)


def test_an_edit_that_turns_a_folder_into_a_file_and_back(
    repo: Path, blobs: dict[str, str]
) -> None:
    """Found by the property test: "e" a file where the folder "e" (with "e/w") was."""
    folder = {"a": ("100644", "one\n"), "e/w": ("100644", "two\n")}
    file = {"e": ("100644", "one\n")}
    one, other = commit_of(repo, folder, blobs, None), commit_of(repo, file, blobs, None)
    to_file = {"a": None, "e/w": None, "e": ("100644", blobs["one\n"])}
    assert objects.edited_tree(repo, one, to_file) == git(repo, "rev-parse", f"{other}^{{tree}}")
    to_folder = {"e": None, "a": ("100644", blobs["one\n"]), "e/w": ("100644", blobs["two\n"])}
    assert objects.edited_tree(repo, other, to_folder) == git(repo, "rev-parse", f"{one}^{{tree}}")
