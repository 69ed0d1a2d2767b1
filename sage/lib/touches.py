"""Touch sets: the files a ticket says it will touch (paths or globs), and whether two can meet.

Patterns read as globs over paths relative to the repository: `*` and `?` and `[abc]` / `[!abc]`
stay within one folder name, `**` as a whole folder name is any number of folders. A pattern
covers what it names and, in case it names a folder, everything inside it (`docs` and `docs/`
cover `docs/a.md`). Two patterns overlap when some path could match both; the check is exact for
these rules, and errs towards "overlap" where a real path could not exist (a file named like a
folder), never the other way round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

GLOB = frozenset("*?[")
_STAR = "*"  # a token: any run of characters within a folder name
_GLOBSTAR = "**"  # a segment: any number of folder names

TouchSet = tuple[str, ...]  # normalized patterns, in the order first given


def normalize(pattern: str) -> str:
    """`./src//a.py` → `src/a.py`; `docs/` → `docs`; the root (`.`, `/`, ``) → `**`."""
    parts = [p for p in pattern.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts) or _GLOBSTAR


def touch_set(patterns: Iterable[str]) -> TouchSet:
    return tuple(dict.fromkeys(normalize(p) for p in patterns if p.strip()))


def is_glob(pattern: str) -> bool:
    return not GLOB.isdisjoint(pattern)


def overlaps(mine: Sequence[str], theirs: Sequence[str]) -> bool:
    """Whether two touch sets can touch a common path."""
    if not mine or not theirs:
        return False
    return any(overlap(a, b) for a in mine for b in theirs)


def shared(mine: Sequence[str], theirs: Sequence[str]) -> list[str]:
    """The patterns of both sets that meet one of the other's, mine first."""
    met = [(a, b) for a in mine for b in theirs if overlap(a, b)]
    return list(dict.fromkeys([a for a, _ in met] + [b for _, b in met]))


def overlap(a: str, b: str) -> bool:
    """Whether some path is covered by both (normalized) patterns."""
    return _overlap(a, b) if a <= b else _overlap(b, a)  # symmetric: one cache entry per pair


@functools.lru_cache(maxsize=65536)
def _overlap(a: str, b: str) -> bool:
    if a == b:
        return True
    if not is_glob(a) and not is_glob(b):  # plain paths: the same, or one inside the other
        return b.startswith(a + "/") or a.startswith(b + "/")
    return _meet(_segments(a), _segments(b), _segment_meets, _GLOBSTAR)


def matches(pattern: str, path: str) -> bool:
    """Whether `pattern` covers the plain `path` (or, if `path` is a folder, something in it)."""
    return overlap(normalize(pattern), normalize(path))


# ---- the automata ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chars:
    """One character out of `ranges` (inclusive code points), or out of anything else."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False


_ANY = _Chars((), negated=True)
_Token = _Chars | str  # a `_Chars` or `_STAR`


@functools.lru_cache(maxsize=4096)
def _segments(pattern: str) -> tuple[str, ...]:
    """The folder names of a pattern, with the implicit `**` that covers a folder's contents."""
    parts = tuple(pattern.split("/"))
    return parts if parts[-1] == _GLOBSTAR else (*parts, _GLOBSTAR)


def _meet(p: Sequence[Any], q: Sequence[Any], step: Callable[[Any, Any], bool], star: str) -> bool:
    """Whether two patterns over symbols accept a common word: a search of their product, where
    a `star` symbol (`*` in a name, `**` in a path) may stay put or be passed over."""
    todo, seen = [(0, 0)], set[tuple[int, int]]()
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        a = p[i] if i < len(p) else None
        b = q[j] if j < len(q) else None
        if a is None and b is None:
            return True
        if a == star:  # it matches nothing more
            todo.append((i + 1, j))
        if b == star:
            todo.append((i, j + 1))
        if a is not None and b is not None and step(a, b):
            todo.append((i + (a != star), j + (b != star)))
    return False


def _segment_meets(a: str, b: str) -> bool:
    """Whether one folder name can match both segment patterns (`**` matches any)."""
    if _GLOBSTAR in (a, b) or a == b:
        return True
    if not is_glob(a) and not is_glob(b):
        return False
    return _name_meets(a, b)


@functools.lru_cache(maxsize=4096)
def _name_meets(a: str, b: str) -> bool:
    return _meet(_tokens(a), _tokens(b), _chars_meet, _STAR)


def _chars_meet(a: _Token, b: _Token) -> bool:
    x = _ANY if a == _STAR else a
    y = _ANY if b == _STAR else b
    assert isinstance(x, _Chars) and isinstance(y, _Chars)
    if x.negated and y.negated:
        return True  # two exclusions leave infinitely many characters
    if x.negated or y.negated:
        wanted, barred = (y, x) if x.negated else (x, y)
        return any(_uncovered(r, barred.ranges) for r in wanted.ranges)
    return any(lo <= b_hi and b_lo <= hi for lo, hi in x.ranges for b_lo, b_hi in y.ranges)


def _uncovered(span: tuple[int, int], barred: Sequence[tuple[int, int]]) -> bool:
    """Whether some point of `span` lies outside every barred range."""
    point, end = span
    for lo, hi in sorted(barred):
        if lo > point:
            break
        point = max(point, hi + 1)
    return point <= end


@functools.lru_cache(maxsize=4096)
def _tokens(name: str) -> tuple[_Token, ...]:
    out: list[_Token] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char == "*":
            if not out or out[-1] != _STAR:  # `**` inside a name is one star
                out.append(_STAR)
            i += 1
        elif char == "?":
            out.append(_ANY)
            i += 1
        elif char == "[" and (klass := _bracket(name, i)) is not None:
            token, i = klass
            out.append(token)
        else:
            out.append(_Chars(((ord(char), ord(char)),)))
            i += 1
    return tuple(out)


def _bracket(name: str, start: int) -> tuple[_Chars, int] | None:
    """`[a-z]`, `[!.]` or `[^.]` at `start`, and where it ends; None when it does not close
    (then `[` is a plain character)."""
    i = start + 1
    negated = i < len(name) and name[i] in "!^"
    i += negated
    first = i
    ranges: list[tuple[int, int]] = []
    while i < len(name) and (name[i] != "]" or i == first):
        if i + 2 < len(name) and name[i + 1] == "-" and name[i + 2] != "]":
            ranges.append((ord(name[i]), ord(name[i + 2])))
            i += 3
        else:
            ranges.append((ord(name[i]), ord(name[i])))
            i += 1
    if i >= len(name):
        return None
    return _Chars(tuple(r for r in ranges if r[0] <= r[1]), negated=negated), i + 1
