"""Touch sets: when two paths or globs can meet, by example and by property."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.lib import touches

FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/**/*.py", "src/a.py"),  # `**` is zero folders too
        ("src/**/*.py", "src/x/y/a.py"),
        ("*.md", "README.md"),
        ("docs/", "docs/guide/a.md"),  # a folder covers what is inside it
        ("docs", "docs/a.md"),
        ("./CHANGELOG.md", "CHANGELOG.md"),
        ("src//a.py", "src/a.py"),
        ("src/*.py", "src/**/x.py"),  # glob against glob: src/x.py
        ("src/*.py", "*/a.*"),
        ("x/*/y", "x/**"),
        ("a*", "*b"),  # ab
        ("[!a]*", "bbc"),
        ("[a-c]x", "[c-e]x"),  # cx
        ("file?.txt", "file[0-9].txt"),
        ("**", "anything/at/all"),
        (".", "README.md"),  # the root is everything
        ("tests/*", "tests"),
        ("a[", "a["),  # an unclosed bracket is a plain character
    ],
)
def test_these_overlap(a: str, b: str) -> None:
    assert touches.overlap(touches.normalize(a), touches.normalize(b))
    assert touches.overlaps([a], [b]) or touches.overlaps(touches.touch_set([a]), [b])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/a.py", "src/b.py"),
        ("src/a.py", "src/a.pyc"),  # a prefix of the name is not a folder
        ("src/*.py", "src/a/b.py"),  # `*` stays within a folder name
        ("*.md", "docs/a.md"),
        ("[!a]*", "abc"),
        ("[a-c]x", "[d-f]x"),
        ("a*b", "*c"),
        ("docs/*.md", "src/**"),
        ("file[0-9].txt", "file?.md"),
        ("CHANGELOG.md", "changelog.md"),
    ],
)
def test_these_do_not(a: str, b: str) -> None:
    assert not touches.overlap(touches.normalize(a), touches.normalize(b))


def test_an_empty_set_overlaps_nothing() -> None:
    assert not touches.overlaps((), ("**",))
    assert not touches.overlaps(("**",), ())
    assert touches.touch_set(["", "  ", "./a", "a"]) == ("a",)


def test_shared_names_the_patterns_that_meet() -> None:
    mine = touches.touch_set(["src/**/*.py", "README.md"])
    theirs = touches.touch_set(["src/a.py", "docs/x.md"])
    assert touches.shared(mine, theirs) == ["src/**/*.py", "src/a.py"]


# ---- properties ------------------------------------------------------------------------------

NAMES = st.text(alphabet="abc.", min_size=1, max_size=4).filter(lambda n: n.strip("."))
PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)
GLOB_PARTS = st.one_of(
    NAMES,
    st.sampled_from(["*", "**", "?", "*.c", "a*", "[ab]", "[!a]*", "[a-b]?", "*a*"]),
)
GLOBS = st.lists(GLOB_PARTS, min_size=1, max_size=4).map("/".join)


def _generalize(path: str, data: st.DataObject) -> str:
    """A glob that matches `path` by construction: names become stars or classes, runs of
    folders become `**`."""
    out: list[str] = []
    parts = path.split("/")
    i = 0
    while i < len(parts):
        name = parts[i]
        choice = data.draw(st.sampled_from(["keep", "star", "chars", "globstar", "prefix"]))
        if choice == "globstar":
            skip = data.draw(st.integers(0, len(parts) - i))
            out.append("**")
            i += skip
            continue
        if choice == "star":
            name = "*"
        elif choice == "chars":
            name = "".join(data.draw(st.sampled_from([c, "?", f"[{c}x]", "*"])) for c in name)
        elif choice == "prefix" and len(name) > 1:
            name = name[:1] + "*"
        out.append(name)
        i += 1
    return "/".join(out)


@FAST
@given(GLOBS, GLOBS)
def test_overlap_is_symmetric(a: str, b: str) -> None:
    a, b = touches.normalize(a), touches.normalize(b)
    assert touches.overlap(a, b) == touches.overlap(b, a)


@FAST
@given(PATHS, st.data())
def test_a_path_overlaps_every_glob_that_matches_it(path: str, data: st.DataObject) -> None:
    glob = _generalize(path, data)
    assert touches.matches(glob, path), (glob, path)
    assert touches.overlaps(touches.touch_set([glob]), touches.touch_set([path]))


@FAST
@given(PATHS, st.data())
def test_two_globs_matching_one_path_overlap(path: str, data: st.DataObject) -> None:
    a, b = _generalize(path, data), _generalize(path, data)
    assert touches.overlap(touches.normalize(a), touches.normalize(b)), (a, b, path)


@FAST
@given(PATHS, PATHS)
def test_two_plain_paths_overlap_when_equal_or_nested(a: str, b: str) -> None:
    nested = a == b or a.startswith(b + "/") or b.startswith(a + "/")
    assert touches.overlap(a, b) == nested


@FAST
@given(GLOBS, PATHS)
def test_a_glob_matching_a_path_by_regular_expression_overlaps_it(glob: str, path: str) -> None:
    if _reference(glob, path):
        assert touches.matches(glob, path), (glob, path)


def _name(part: str) -> str:
    out, i = "", 0
    while i < len(part):
        c, end = part[i], -1
        if c == "[":
            j = i + 1 + (part[i + 1 : i + 2] in ("!", "^"))
            end = part.find("]", j + (part[j : j + 1] == "]"))
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif end > 0:
            body = part[i + 1 : end]
            out += f"[^{body[1:]}/]" if body[:1] in "!^" else f"[{body}]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return out


def _reference(glob: str, path: str) -> bool:
    """The same rules as a regular expression: the glob matches the path or a parent folder."""
    parts = touches.normalize(glob).split("/")
    if parts == ["**"]:
        return True
    regex = "(?:[^/]+/)*" if parts[0] == "**" else _name(parts[0])
    for k, part in enumerate(parts[1:], 1):
        after_globstar = parts[k - 1] == "**" and k == 1
        if part == "**":
            regex += "(?:/[^/]+)*"
        else:
            regex += ("" if after_globstar else "/") + _name(part)
    folders = path.split("/")
    candidates = ["/".join(folders[:n]) for n in range(1, len(folders) + 1)]
    return any(re.fullmatch(regex, c) for c in candidates)
