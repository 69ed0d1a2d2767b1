"""Markdown task lists read into tasks: spec-kit `tasks.md`, `TASK-NNN` lists, heading plans.

Two forms are lines `- [ ] ID text` (`[x]`: done); a third, for plans without such lines, is
headings:

- spec-kit: `- [ ] T012 [P] [US1] Description in path/file.py` under `## Phase N: …` headings.
  Phases run in the order they are written; inside a phase, an unmarked task waits for the task
  (or the run of consecutive `[P]` tasks) before it, and consecutive `[P]` tasks are independent
  of each other. A document's own phase dependencies replace that order between phases: bullets
  such as `- **User Story 2 (Phase 4)**: Depends on Foundational` (or `(Phase 3+)`, `(Final
  Phase)`; "No dependencies") under a heading that names dependencies. A phase is named by its
  number, its story (`User Story 1`, `US1`, `all user stories`) or the first word of its title
  (`Setup`, `Foundational`, `Polish`); the phase's first step then waits for the last step of
  each phase it names. Priorities come from the user-story headings (`… (Priority: P1)`), paths
  in the text become `files`.
- task lists: `- [ ] **TASK-001: Title**` with indented fields (`**Dependencies:** TASK-002`,
  `**Estimate:** 30 minutes`, `**Files:** a.py`, `**Description:**`, `**Priority:**`). Once a
  document states dependencies, only stated ones count; a task's priority defaults to its phase
  (phase 1 → P0, 2 → P1, 3 → P2, later → P3).
- headings, when a document has no task lines: `### Stream A: Title` (ID STREAM-A) or
  `### TASK-001: Title` with `**Key**: value` lines (a key's bullets are its value); a
  dependency marked soft or optional does not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage.lib.errors import SageError
from sage.lib.tickets import PRIORITIES, TYPES
from sage.lib.words import counted

SPEC_KIT_ID = r"T[0-9]+[a-z]*"  # spec-kit numbers tasks T001, T002, … (T030a when inserted)
SHOWN = 8  # line numbers named in one warning

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_PHASE = re.compile(r"\bphase\s*[0-9]", re.IGNORECASE)
_STORY = re.compile(r"\buser story\s*([0-9]+)", re.IGNORECASE)
_PRIORITY = re.compile(r"\bpriority\s*:?\s*(P[0-9])\b", re.IGNORECASE)
_TASK = re.compile(r"^(?P<indent>\s*)[-*+]\s+\[(?P<mark>[ xX])\]\s+(?P<rest>.*)$")
# PREFIX-123 (TASK-001, AUTH-2) or spec-kit's T001: a bare word such as SHA256 is not an ID
_ID = rf"(?:[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*-[0-9]+[a-z]?|{SPEC_KIT_ID})"
_TASK_ID = re.compile(rf"^(?:\*\*)?(?P<id>{_ID})(?![A-Za-z0-9_-])(?:\*\*)?\s*:?\s*(?P<text>.*)$")
_IDS = re.compile(rf"(?<![A-Za-z0-9_-]){_ID}(?![A-Za-z0-9_-])")
_TAG = re.compile(r"^\[(?P<tag>[A-Za-z0-9_-]+)\]\s*")
_FIELD = re.compile(r"^\s+[-*+]\s+\*\*(?P<key>[^*]+?):?\*\*:?\s*(?P<value>.*)$")
_DURATION = re.compile(
    r"([0-9]+(?:\.[0-9]+)?)\s*(d|days?|h|hrs?|hours?|m|mins?|minutes?)?(?![A-Za-z])",
    re.IGNORECASE,
)
_RANGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:-|–|to)\s*([0-9]+(?:\.[0-9]+)?)")
_KINDS = "stream|workstream|task|ticket|epic|story"
_NAMED = re.compile(  # the kind in any case; the label in capitals or digits: "Stream A"
    rf"^(?P<kind>(?i:{_KINDS}))\s+(?P<label>[A-Z0-9]+(?:\.[A-Z0-9]+)*)\s*[:—–-]\s*(?P<title>.+)$"
)
_LABEL = r"[A-Z0-9]+(?![\w-])"  # "B" in "Streams B + C", not "TASK" in "TASK-001"
_REFS = re.compile(rf"\b((?i:{_KINDS}))s?\s+({_LABEL}(?:\s*(?:,|\+|&|\band\b)\s*{_LABEL})*)")
_BOLD_FIELD = re.compile(r"^\s*(?:[-*+]\s+)?\*\*(?P<key>[^*]+?):?\*\*:?\s*(?P<value>.*)$")
HEADING_ID = r"[A-Z]+-[A-Z0-9]+(?:\.[A-Z0-9]+)*"  # `### Stream A: …` becomes STREAM-A
_UNIT_MINUTES = {"d": 480.0, "h": 60.0, "m": 1.0}  # a day of work is 8 hours
_EXTENSIONS = frozenset(
    re.split(
        r"\s+",
        "py pyi md rst txt toml json yaml yml ini cfg sh bash zsh js jsx ts tsx mjs cjs css scss "
        "html go rs rb java kt swift c h cc cpp hpp cs php sql lock xml csv proto tf",
    )
)
_PATH = re.compile(r"(?<![\w./-])(?:[\w.-]+/)*[\w.-]+(?:/|\.[A-Za-z0-9]+)(?![\w/])")
_NONE = frozenset({"", "none", "-", "n/a", "na", "no", "nothing"})
_KNOWN_FIELDS = {
    "description": "description",
    "estimate": "estimate_minutes",
    "duration": "estimate_minutes",
    "dependencies": "dependencies",
    "depends on": "dependencies",
    "files": "files",
    "priority": "priority",
    "type": "type",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One task of a document: what it states, and what a new ticket starts with otherwise."""

    id: str
    line: int
    done: bool
    fields: Mapping[str, Any]  # taken from the document on every import
    defaults: Mapping[str, Any] = field(default_factory=dict)  # only for a new ticket


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    path: Path
    form: str  # "spec-kit" | "task-list"
    tasks: tuple[Task, ...]
    warnings: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class _Raw:
    """A task while its document is being read (the parser's scratch, not a result)."""

    id: str
    line: int
    done: bool
    text: str
    phase: int
    parallel: bool
    story: str | None
    priority: str | None
    fields: dict[str, str] = field(default_factory=dict)


def read(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SageError(
            f"no such file: {path}", hint="pass the path of a markdown task list"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SageError(f"cannot read {path}: {exc}") from None
    return parse(text, path)


def parse(text: str, path: Path) -> Document:
    warnings: list[str] = []
    lines = text.splitlines()
    found = list(_scan(lines))
    by_heading = not found
    raws = _dedupe(found or list(_scan_headings(lines)), warnings)
    if not raws:
        raise SageError(
            f"{path}: no tasks found",
            hint="sage reads lines such as `- [ ] T001 Title in src/app.py` (spec-kit tasks.md), "
            "`- [ ] **TASK-001: Title**` with `**Dependencies:**` lines under it, or headings "
            "such as `### Stream A: Title` or `### TASK-001: Title` with such lines",
        )
    explicit = by_heading or any("dependencies" in _known(r.fields) for r in raws)
    deps = (_stated_dependencies(raws) if explicit
            else _ordered_dependencies(raws, _phase_dependencies(lines, warnings)))  # fmt: skip
    phases = sorted({r.phase for r in raws})
    tasks = tuple(_task(r, deps[r.id], explicit, phases.index(r.phase), warnings) for r in raws)
    form = "headings" if by_heading else "task-list" if explicit else "spec-kit"
    return Document(path=path, form=form, tasks=tasks, warnings=tuple(warnings))


def _scan_headings(lines: Sequence[str]) -> Iterator[_Raw]:
    """Tasks as headings (`### Stream A: Title`, `### TASK-001: Title`) with `**Key**: value`
    lines under them; the bullets after a key line are its value, joined with "; "."""
    current, key, fenced = None, None, False
    for number, line in enumerate(lines, 1):
        fenced = fenced != bool(_FENCE.match(line))
        heading = None if fenced else _HEADING.match(line)
        if heading:
            current, key = _heading_task(heading, number), None
            if current:
                yield current
        elif current is not None and not fenced:
            key = _heading_field(current, key, line)


def _heading_task(heading: re.Match[str], number: int) -> _Raw | None:
    text = _plain(heading.group(2))
    named = _NAMED.match(text)
    head = None if named else _TASK_ID.match(text)
    if named:
        tid, title = f"{named.group('kind')}-{named.group('label')}".upper(), named.group("title")
    elif head and len(heading.group(1)) > 1:
        tid, title = head.group("id"), head.group("text")
    else:
        return None
    title = re.sub(r"\s*\([^)]*\)\s*$", "", title).strip() or title  # "(Blocker: None)"
    return _Raw(id=tid, line=number, done=False, text=title, phase=0, parallel=False,
                story=None, priority=None)  # fmt: skip


def _heading_field(task: _Raw, key: str | None, line: str) -> str | None:
    """Record one line under a heading task; returns the key that following bullets extend."""
    found = _BOLD_FIELD.match(line)
    if found:
        key = found.group("key").strip().lower()
        task.fields[key] = found.group("value").strip()
        if key == "status" and re.search(r"complete|done|✅", found.group("value"), re.I):
            task.done = True
        return key
    bullet = re.match(r"^\s*[-*+]\s+(.*)$", line)
    if key and bullet:
        task.fields[key] = "; ".join(v for v in (task.fields[key], bullet.group(1).strip()) if v)
        return key
    return key if not line.strip() else None


@dataclass(frozen=True, slots=True)
class _Line:
    """A line outside fenced code: its number (from 1), its heading if it is one, and the phase
    it is in (counted as `_starts_phase` says; a phase's heading is in the phase it starts)."""

    number: int
    text: str
    heading: re.Match[str] | None
    phase: int
    starts: bool  # the heading of a new phase


def _lines(lines: Sequence[str]) -> Iterator[_Line]:
    by_phase = any(_PHASE.search(m.group(2)) for line in lines if (m := _HEADING.match(line)))
    fenced, phase = False, 0
    for number, line in enumerate(lines, 1):
        if _FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        heading = _HEADING.match(line)
        starts = heading is not None and _starts_phase(heading, by_phase)
        phase += 1 if starts else 0
        yield _Line(number, line, heading, phase, starts)


def _scan(lines: Sequence[str]) -> Iterator[_Raw]:
    """Tasks with their phase, markers and indented fields; fenced code is skipped."""
    headings = [m.group(2) for line in lines if (m := _HEADING.match(line))]
    stories = _story_priorities(headings)
    phase_priority, current = None, None
    for at in _lines(lines):
        number, line, heading = at.number, at.text, at.heading
        if heading and at.starts:
            phase_priority, current = _priority_in(heading.group(2)), None
        elif (task := _task_line(line, number, at.phase, stories, phase_priority)) is not None:
            current = task
            yield task
        elif current is not None and (found := _FIELD.match(line)):
            current.fields[found.group("key").strip().lower()] = found.group("value").strip()
        elif heading or not line.startswith((" ", "\t")):
            current = None if line.strip() else current


def _starts_phase(heading: re.Match[str], by_phase: bool) -> bool:
    if by_phase:
        return bool(_PHASE.search(heading.group(2)))
    return len(heading.group(1)) > 1  # without phases, every section (not the title) is one


def _story_priorities(headings: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for heading in headings:
        story, priority = _STORY.search(heading), _priority_in(heading)
        if story and priority:
            found.setdefault(f"US{story.group(1)}", priority)
    return found


def _priority_in(text: str) -> str | None:
    found = _PRIORITY.search(text)
    return _clamp(found.group(1)) if found else None


def _clamp(priority: str) -> str:
    return priority.upper() if priority.upper() in PRIORITIES else PRIORITIES[-1]


def _task_line(
    line: str, number: int, phase: int, stories: Mapping[str, str], phase_priority: str | None
) -> _Raw | None:
    match = _TASK.match(line)
    head = _TASK_ID.match(match.group("rest").strip()) if match else None
    if match is None or head is None:
        return None
    text, tags = _tags(head.group("text"))
    story = next((t for t in tags if re.fullmatch(r"US[0-9]+", t)), None)
    return _Raw(
        id=head.group("id"),
        line=number,
        done=match.group("mark") != " ",
        text=text.strip().strip("*").strip(),
        phase=phase,
        parallel="P" in tags,
        story=story,
        priority=stories.get(story or "", phase_priority),
    )


def _tags(text: str) -> tuple[str, list[str]]:
    """`[P] [US1] Add x` → ("Add x", ["P", "US1"])."""
    tags = []
    while found := _TAG.match(text):
        tags.append(found.group("tag"))
        text = text[found.end() :]
    return text, tags


def _dedupe(raws: list[_Raw], warnings: list[str]) -> list[_Raw]:
    """The first task with an ID wins: a second list with the same numbers is reported."""
    seen: dict[str, int] = {}
    kept, again = [], []
    for raw in raws:
        if raw.id in seen:
            again.append(raw)
        else:
            seen[raw.id] = raw.line
            kept.append(raw)
    if again:
        lines = ", ".join(str(r.line) for r in again[:SHOWN])
        more = f" and {len(again) - SHOWN} more" if len(again) > SHOWN else ""
        label = "line" if len(again) == 1 else "lines"
        first = f"{again[0].id} on line {seen[again[0].id]}, …"
        reuse = "reuses" if len(again) == 1 else "reuse"
        warnings.append(f"{counted(len(again), 'task')} {reuse} an ID defined earlier "
                        f"({label} {lines}{more}): skipped, the first of each ({first}) "
                        "is kept")  # fmt: skip
    return kept


def _ordered_dependencies(
    raws: Sequence[_Raw], stated: Mapping[int, frozenset[int]] | None = None
) -> dict[str, list[str]]:
    """Steps in document order: a step is one unmarked task or a run of `[P]` tasks in one
    phase; every task waits for the whole step before its own. The first step of a phase in
    `stated` (phase → the earlier phases it depends on) waits instead for the last step of each
    of those (for a phase without tasks, for what that phase waits for)."""
    stated = stated or {}
    deps: dict[str, list[str]] = {}
    previous: list[str] = []
    step: list[str] = []
    ends: dict[int, list[str]] = {}  # phase -> what its end stands for: its last step
    for index, raw in enumerate(raws):
        joins = index > 0 and raw.parallel and raws[index - 1].parallel
        if not (joins and raws[index - 1].phase == raw.phase):
            previous, step = step or previous, []
            if index == 0 or raws[index - 1].phase != raw.phase:
                previous = _phase_start(raw.phase, stated, ends, previous)
        deps[raw.id] = list(previous)
        step.append(raw.id)
        ends[raw.phase] = list(step)
    return deps


def _phase_start(
    phase: int, stated: Mapping[int, frozenset[int]], ends: Mapping[int, list[str]],
    previous: list[str],
) -> list[str]:  # fmt: skip
    """What the first step of `phase` waits for: the ends of the phases it states, else the
    step before it."""
    return _stated_ends(phase, stated, ends) if phase in stated else previous


def _end(
    phase: int, stated: Mapping[int, frozenset[int]], ends: Mapping[int, list[str]]
) -> list[str]:
    """What waiting for the whole of `phase` means: its last step; for a phase without tasks,
    what it waits for itself (the phases it states, else the phase before it)."""
    if ends.get(phase):
        return ends[phase]
    if phase in stated:
        return _stated_ends(phase, stated, ends)
    return _end(phase - 1, stated, ends) if phase > 0 else []


def _stated_ends(
    phase: int, stated: Mapping[int, frozenset[int]], ends: Mapping[int, list[str]]
) -> list[str]:
    return list(dict.fromkeys(t for e in sorted(stated[phase]) for t in _end(e, stated, ends)))


_PHASE_BULLET = re.compile(r"^\s*[-*+]\s+\*\*(?P<name>[^*]+?)\*\*\s*:?\s*(?P<text>.*)$")
_PHASE_OF = re.compile(r"\((?:phase\s*(?P<number>[0-9]+)(?P<on>\+)?|(?P<final>final phase))\)",
                       re.IGNORECASE)  # fmt: skip
_DEPENDS = re.compile(r"\bdepends?\s+on\b|\bstarts?\s+after\b", re.IGNORECASE)
_PHASE_NUMBER = re.compile(r"\bphase\s*([0-9]+)", re.IGNORECASE)
_STORIES = re.compile(r"\buser\s+stor", re.IGNORECASE)
_STORY_NAMED = re.compile(r"\buser\s+story\s*([0-9]+)|\bUS([0-9]+)\b", re.IGNORECASE)
_NO_DEPENDENCIES = re.compile(r"\bno\s+dependencies\b|\bstart\s+immediately\b", re.IGNORECASE)


def _phase_dependencies(lines: Sequence[str], warnings: list[str]) -> dict[int, frozenset[int]]:
    """The phase dependencies a spec-kit document states (phase → earlier phases, phases
    counted as `_scan` counts them); a phase it does not name keeps the document's order."""
    titles: dict[int, str] = {}  # phase -> its heading
    bullets: list[tuple[int, str, str]] = []  # line, the bullet's name, its text
    section = ""
    for at in _lines(lines):
        if at.heading:
            section = at.heading.group(2)
            if at.starts:
                titles[at.phase] = section
        elif (bullet := _PHASE_BULLET.match(at.text)) and re.search(r"dependenc", section, re.I):
            bullets.append((at.number, bullet.group("name"), bullet.group("text")))
    numbered = {p: int(m.group(1)) for p, t in titles.items() if (m := _PHASE_NUMBER.search(t))}
    stories = {p: s.group(1) for p, t in titles.items() if (s := _STORY.search(t))}
    stated: dict[int, frozenset[int]] = {}
    for broad in (True, False):  # "Phase 3+" first: a bullet for one phase overrides it
        for number, name, text in bullets:
            subject = _PHASE_OF.search(name)
            if subject is None or bool(subject.group("on")) != broad:
                continue
            if subject.group("final"):
                phases = [max(numbered)] if numbered else []
            else:  # "User Stories (Phase 3+)": the stories' phases from the third on
                first, only_stories = int(subject.group("number")), _STORIES.search(name)
                phases = [p for p, n in numbered.items() if n == first or (broad and n > first
                          and (not only_stories or p in stories))]  # fmt: skip
            targets = _phases_named(text, titles, numbered, stories)
            if targets is None:
                warnings.append(f"line {number}: cannot tell which phases {name.strip()!r} "
                                f"depends on ({text.strip()!r}): the bullet is not used "
                                "(the phase waits as if it were not there)")  # fmt: skip
                continue
            for p in phases:
                earlier = frozenset(t for t in targets if t < p)
                if targets and not earlier:  # only itself or later phases: not a dependency
                    warnings.append(f"line {number}: {name.strip()!r} names no earlier phase: "
                                    "the bullet is not used for it")  # fmt: skip
                else:
                    stated[p] = earlier
    return stated


def _phases_named(
    text: str, titles: Mapping[int, str], numbered: Mapping[int, int], stories: Mapping[int, str]
) -> frozenset[int] | None:
    """The phases a bullet's text says it depends on (none: "No dependencies"); None when it
    says neither."""
    depends = _DEPENDS.search(text)
    if depends is None:
        return frozenset() if _NO_DEPENDENCIES.search(text) else None
    said = re.split(r"\s[-–—]\s|;", text[depends.end() :], maxsplit=1)[0]  # not the comment
    numbers = {int(n) for n in _PHASE_NUMBER.findall(said)}
    named = {a or b for a, b in _STORY_NAMED.findall(said)}
    every_story = re.search(r"\ball\b.*\buser\s+stories\b", said, re.IGNORECASE)
    found = {p for p, n in numbered.items() if n in numbers}
    found |= {p for p, story in stories.items() if every_story or story in named}
    for p, title in titles.items():  # "Setup", "Foundational", "Polish": a title's first word
        words = _PHASE_NUMBER.split(title, maxsplit=1)[-1].strip(" :.—–-").split()
        first = words[0] if words else ""
        if (
            p not in stories
            and len(first) > 3
            and re.search(rf"\b{re.escape(first)}\b", said, re.I)
        ):
            found.add(p)
    return frozenset(found) if found else None


def _stated_dependencies(raws: Sequence[_Raw]) -> dict[str, list[str]]:
    return {r.id: _ids(_known(r.fields).get("dependencies", "")) for r in raws}


def _ids(text: str) -> list[str]:
    """The IDs a dependency text names: `TASK-001, TASK-002`, or `Hard: Streams B + C` (an item
    marked soft or optional is not a dependency)."""
    found: list[str] = []
    for item in text.split(";"):
        item = re.sub(r"\([^)]*\)", " ", item).strip()
        if item.lower().strip(".") in _NONE or item.lower().startswith(("soft", "optional")):
            continue
        found += _IDS.findall(item)
        for kind, labels in _REFS.findall(item):
            found += [f"{kind}-{label}".upper() for label in re.findall(_LABEL, labels)]
    return list(dict.fromkeys(found))


def _known(fields: Mapping[str, str]) -> dict[str, str]:
    return {_KNOWN_FIELDS[k]: v for k, v in fields.items() if k in _KNOWN_FIELDS}


def _task(raw: _Raw, deps: list[str], explicit: bool, ordinal: int, warnings: list[str]) -> Task:
    known = _known(raw.fields)
    stated: dict[str, Any] = {"title": _plain(raw.text), "dependencies": deps}
    if "description" in known:
        stated["description"] = known["description"]
    named = known.get("files", "" if explicit else raw.text)  # spec-kit: "… in path/file.py"
    if paths := files_in(named):
        stated["files"] = paths
    _estimate(raw, known, stated, warnings)
    _enum(raw, known, stated, warnings)
    details = {k: v for k, v in raw.fields.items() if k not in _KNOWN_FIELDS}
    if details:
        stated["details"] = details
    priority = stated.get("priority") or raw.priority
    if priority:
        stated["priority"] = priority
    defaults = {} if priority or not explicit else {"priority": PRIORITIES[min(ordinal, 3)]}
    return Task(id=raw.id, line=raw.line, done=raw.done, fields=stated, defaults=defaults)


def _plain(text: str) -> str:
    return re.sub(r"\*\*(.*?)\*\*", r"\1", text).strip() or text


def _estimate(
    raw: _Raw, known: Mapping[str, str], out: dict[str, Any], warnings: list[str]
) -> None:
    text = known.get("estimate_minutes")
    if text is None:
        return
    minutes = parse_estimate(text)
    if minutes is None:
        warnings.append(f"line {raw.line}: {raw.id}: cannot read the estimate {text!r} "
                        "(try '30 minutes' or '1.5 hours')")  # fmt: skip
    else:
        out["estimate_minutes"] = minutes


def _enum(raw: _Raw, known: Mapping[str, str], out: dict[str, Any], warnings: list[str]) -> None:
    if "priority" in known:
        found = _priority_in(f"priority {known['priority']}")
        if found:
            out["priority"] = found
        else:
            warnings.append(f"line {raw.line}: {raw.id}: priority {known['priority']!r} ignored")
    kind = known.get("type", "").strip().lower()
    if kind in TYPES:
        out["type"] = kind
    elif kind:
        warnings.append(f"line {raw.line}: {raw.id}: type {kind!r} ignored")


def parse_estimate(text: str) -> float | None:
    """'30 minutes' → 30, '1.5 hours' → 90, '1h 30m' → 90, '45' → 45, '1-2 days' → 1.5 days;
    None when unreadable."""
    text = _RANGE.sub(lambda m: f"{(float(m.group(1)) + float(m.group(2))) / 2:g}", text)
    pairs = _DURATION.findall(text)
    if not pairs:
        return None
    total = sum(float(n) * _UNIT_MINUTES[(unit or "m")[0].lower()] for n, unit in pairs)
    return int(total) if float(total).is_integer() else total


def files_in(text: str) -> list[str]:
    """Relative paths named in a text: `src/app.py`, `tests/`, `README.md`; not URLs,
    absolute paths or words such as start/stop."""
    spans = re.findall(r"`([^`\s]+)`", text) or _PATH.findall(text.replace("`", " "))
    found = [s.rstrip(".,;:)") for s in spans if _looks_like_path(s.rstrip(".,;:)"))]
    return list(dict.fromkeys(found))


def _looks_like_path(candidate: str) -> bool:
    if candidate.startswith(("/", "~")) or "://" in candidate or ".." in candidate.split("/"):
        return False
    if candidate.endswith("/"):
        return "/" in candidate[:-1] or (candidate[0].isalpha() and candidate[:-1].isidentifier())
    name = candidate.rsplit("/", 1)[-1]
    return "." in name.strip(".") and name.rsplit(".", 1)[1].lower() in _EXTENSIONS
