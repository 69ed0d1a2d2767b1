"""Tickets: the model, the index parser with its per-ticket checks, and the locked store."""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.decoder import scanstring  # type: ignore[attr-defined]  # public, untyped
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from sage.lib import files
from sage.lib.errors import IndexFileError, LockHeld, SageError
from sage.lib.words import counted

STATES = ("UNPROCESSED", "IN_PROGRESS", "COMPLETED", "DEFERRED")
PRIORITIES = ("P0", "P1", "P2", "P3")
TYPES = (
    "implementation", "enhancement", "feature", "bugfix", "bug", "test", "testing",
    "documentation", "docs", "refactor", "research", "spike", "chore", "infrastructure",
    "epic", "story", "task", "validation",
)  # fmt: skip
DEFAULT_INDEX = Path(".sage/tickets/index.json")
_RANKS = {p: rank for rank, p in enumerate(PRIORITIES)}

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# ASCII: `\d` alone also matches lookalike digits such as a fullwidth "１"
_CONVENTIONAL_ID = re.compile(r"[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*-\d+[A-Za-z0-9]*", re.ASCII)
ID_PATTERN = _CONVENTIONAL_ID.pattern  # PREFIX-123: what [tickets] id_pattern defaults to
MAX_ID = 100  # an ID names a branch and files such as `000001-<ID>.json`: stay far below 255 bytes
MAX_ESTIMATE = 1e9  # minutes: sums over any backlog stay finite (Infinity and 1e308 do not)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    id: str
    title: str
    state: str = "UNPROCESSED"
    priority: str = "P2"
    type: str = "implementation"
    dependencies: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # paths or globs it will touch (`sage.lib.touches`)
    estimate_minutes: float | None = None
    command: tuple[str, ...] | None = None
    parent: str | None = None
    allow_empty: bool = False  # a worker leaving nothing to land completes it (else: no changes)

    @property
    def rank(self) -> int:
        """0 for P0 (first) … 3 for P3; unknown priorities sort last."""
        return _RANKS.get(self.priority, len(PRIORITIES))

    @property
    def weight(self) -> float:
        """Minutes of work, or 1 per ticket when no estimate is given."""
        return self.estimate_minutes if self.estimate_minutes is not None else 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One finding of `sage validate`: an error or a warning, naming the ticket where it applies."""

    level: str  # "error" | "warning"
    code: str
    message: str
    ticket: str | None = None
    hint: str | None = None  # what would fix it, when sage can tell ("did you mean CORE-001?")

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "code": self.code,
            "ticket": self.ticket,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Index:
    """A parsed index: the tickets sage understood, the raw document, and what was wrong."""

    path: Path
    tickets: tuple[Ticket, ...]
    raw: dict[str, Any] = field(repr=False)
    problems: tuple[Problem, ...] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    def by_id(self) -> dict[str, Ticket]:
        return {t.id: t for t in self.tickets}


def unsafe_id_reason(ticket_id: str) -> str | None:
    """Why an ID cannot be a branch and folder name, or None when it is safe."""
    if (
        len(ticket_id) <= MAX_ID
        and _SAFE_ID.fullmatch(ticket_id)
        and ".." not in ticket_id
        and not ticket_id.endswith((".lock", "."))
    ):
        return None
    checks: Sequence[tuple[bool, str]] = (
        (ticket_id == "", "is empty"),
        (len(ticket_id) > MAX_ID, f"is longer than {MAX_ID} characters"),
        (any(ord(c) < 32 or ord(c) == 127 for c in ticket_id), "contains a control character"),
        (".." in ticket_id, "contains '..'"),
        ("/" in ticket_id or "\\" in ticket_id, "contains a path separator"),
        (any(c.isspace() for c in ticket_id), "contains whitespace"),
        (ticket_id.startswith("-"), "starts with '-'"),
        (ticket_id.endswith(".lock"), "ends with '.lock'"),
        (not ticket_id.isascii(), "contains a non-ASCII character"),
        (ticket_id.startswith("."), "starts with '.'"),
        (ticket_id.endswith("."), "ends with '.'"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    return "may only use letters, digits, '.', '_' and '-'"


# ANSI escapes: CSI (ESC [ or the C1 byte), OSC to BEL or ST (a window title, a hyperlink), others
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]"
)
# C0 and C1 controls but the whitespace folded below, DEL, and bidi overrides (text that lies)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` fit for one line of a terminal or a commit subject: escapes and controls gone,
    runs of whitespace one space."""
    return " ".join(_CONTROL.sub("", _ESCAPE.sub("", text)).split())


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str, path: Path) -> Index:
    """Parse index text; JSON syntax errors raise, everything else becomes a Problem."""
    with quiet_gc():
        return parse_raw(_decode(text, path), path)


def parse_document(text: str) -> dict[str, Any]:
    """An index's raw document, checked as `load` checks it (duplicate keys refused)."""
    return _decode(text, Path("index.json"))


def parse_raw(raw: dict[str, Any], path: Path) -> Index:
    with quiet_gc():
        problems: list[Problem] = []
        tickets = [t for i, e in enumerate(raw["tickets"]) if (t := _ticket(e, i, problems))]
    _check_duplicates(tickets, problems)
    return Index(path=path, tickets=tuple(tickets), raw=raw, problems=tuple(problems))


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Pause the cyclic GC while building objects per ticket: at 50k tickets its repeated full
    passes over the fresh (acyclic) objects cost more than the work itself. Nestable."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _decode(text: str, path: Path) -> dict[str, Any]:
    raw = _loads(text, path)
    if _SURROGATE_ESCAPE.search(text):  # rare: only then is the whole document checked
        _refuse_lone_surrogates(raw, text, path)
    if isinstance(raw, list):
        raw = {"tickets": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("tickets"), list):
        raise IndexFileError(
            f'{path}: expected an object with a "tickets" list',
            hint='the index looks like {"tickets": [{"id": "AUTH-001", "title": "…"}]}',
        )
    return raw


class _DuplicateKey(Exception):
    """Raised inside the JSON decoder; `_loads` finds where and says so."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):  # json keeps the last: a write would delete the rest
        raise _DuplicateKey
    return found


def _loads(text: str, path: Path) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except json.JSONDecodeError as exc:
        raise IndexFileError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
            hint="fix the syntax at that line and column",
        ) from exc
    except _DuplicateKey:
        offset, key = duplicate_key(text) or (0, "?")
        raise IndexFileError(
            f"{path}:{_line_column(text, offset)}: duplicate key {json.dumps(key)} in one object",
            hint="JSON keeps only the last of them: merge the two into one key",
        ) from None
    except RecursionError:
        raise IndexFileError(
            f"{path}: the JSON is nested too deeply to read",
            hint="tickets are objects of plain fields: flatten the deeply nested value",
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise IndexFileError(
            f"{path}: a number is too long to read ({exc})",
            hint="shorten that number, or write it as a string",
        ) from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"  # a high half with no low one after it
    r"|(?<![89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a low half with none before
)


def _refuse_lone_surrogates(raw: Any, text: str, path: Path) -> None:
    """JSON may escape half a character (`\\ud800`), which no file or argv can hold."""
    try:
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        found = _LONE_SURROGATE.search(text)
        where = f"{_line_column(text, found.start())}:" if found else ""
        escape = f" {found.group()}" if found else ""
        raise IndexFileError(
            f"{path}:{where} a lone surrogate{escape} is half a character, not valid Unicode",
            hint="write the character itself, or both halves of its escape",
        ) from None


_STRUCTURE = re.compile(r'["{}\[\]]')


def duplicate_key(text: str) -> tuple[int, str] | None:
    """Offset and name of the first key repeated within one object of valid JSON `text`.
    A loop with a stack, not recursion: it must work at any depth the decoder accepts."""
    stack: list[set[str] | None] = []  # the keys seen in each open object; None for arrays
    found = _STRUCTURE.search(text)
    while found:
        at, char = found.start(), found.group()
        end = at + 1
        if char == '"':
            key, end = scanstring(text, at + 1)
            keys = stack[-1] if stack else None
            if keys is not None and _is_key(text, end):
                if key in keys:
                    return at, key
                keys.add(key)
        elif char in "{[":
            stack.append(set() if char == "{" else None)
        elif stack:
            stack.pop()
        found = _STRUCTURE.search(text, end)
    return None


def _is_key(text: str, end: int) -> bool:
    """Whether the string that ends at `end` is a key (a colon follows it)."""
    while end < len(text) and text[end] in " \t\n\r":
        end += 1
    return text.startswith(":", end)


def _line_column(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"{line}:{column}"


def _ticket(entry: Any, position: int, problems: list[Problem]) -> Ticket | None:
    where = f"tickets[{position}]"
    if not isinstance(entry, dict):
        problems.append(
            Problem(level="error", code="not-an-object", message=f"{where} is not an object")
        )
        return None
    tid = entry.get("id")
    if not isinstance(tid, str):
        problems.append(
            Problem(level="error", code="missing-field", message=f'{where} has no string "id"')
        )
        return None
    if len(tid) > MAX_ID or not _CONVENTIONAL_ID.fullmatch(tid):  # conventional: safe, one check
        _check_id(tid, problems)
    return Ticket(id=tid, **_fields(entry, tid, problems))


def _check_id(tid: str, problems: list[Problem]) -> None:
    reason = unsafe_id_reason(tid)
    if reason:
        problems.append(
            _err("unsafe-id", tid, f"ID {tid!r} {reason}: IDs become branch and folder names")
        )
    else:
        problems.append(
            Problem(level="warning", code="id-format", ticket=tid,
                    message=f"{tid}: ID does not look like PREFIX-123")
        )  # fmt: skip


def _err(code: str, tid: str, message: str) -> Problem:
    return Problem(level="error", code=code, ticket=tid, message=message)


_ENUMS = (
    ("state", frozenset(STATES), STATES),
    ("priority", frozenset(PRIORITIES), PRIORITIES),
    ("type", frozenset(TYPES), TYPES),
)
_is_str = str.__instancecheck__  # a C-level isinstance(x, str), for all(map(...)) over lists


def _fields(entry: Mapping[str, Any], tid: str, problems: list[Problem]) -> dict[str, Any]:
    """The known fields, type-checked; a bad one is reported and falls back to its default."""
    out: dict[str, Any] = {}
    title = entry.get("title")
    if isinstance(title, str) and title.strip():
        out["title"] = title
        if "\0" in title:  # it goes into the worker's argv and environment: exec refuses NUL
            problems.append(_err("bad-title", tid, f'{tid}: "title" contains a NUL character'))
    else:
        problems.append(_err("missing-field", tid, f'{tid}: "title" is missing or empty'))
        out["title"] = ""
    for key, allowed, names in _ENUMS:
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, str) and value in allowed:
            out[key] = value
        else:
            problems.append(
                _err(f"bad-{key}", tid, f"{tid}: {key} {value!r} is not one of {', '.join(names)}")
            )
    _list_fields(entry, tid, problems, out)
    _check_history(entry, tid, problems)
    allow_empty = entry.get("allow_empty", False)
    if isinstance(allow_empty, bool):
        out["allow_empty"] = allow_empty
    else:
        problems.append(_err("bad-allow-empty", tid, f'{tid}: "allow_empty" must be true or false'))
    return out


def _list_fields(
    entry: Mapping[str, Any], tid: str, problems: list[Problem], out: dict[str, Any]
) -> None:
    deps = entry.get("dependencies", [])
    if isinstance(deps, list) and all(map(_is_str, deps)):
        out["dependencies"] = tuple(dict.fromkeys(deps))
    else:
        problems.append(
            _err("bad-dependencies", tid, f'{tid}: "dependencies" must be a list of IDs')
        )
    touched = entry.get("files")
    if touched is not None:
        _files_field(touched, tid, problems, out)
    estimate = entry.get("estimate_minutes")
    if estimate is not None:
        number = isinstance(estimate, int | float) and not isinstance(estimate, bool)
        if number and 0 <= estimate <= MAX_ESTIMATE:  # NaN fails both comparisons
            out["estimate_minutes"] = float(estimate)
        else:
            problems.append(
                _err("bad-estimate", tid,
                     f'{tid}: "estimate_minutes" must be a number from 0 to {MAX_ESTIMATE:g}')
            )  # fmt: skip
    _command_field(entry.get("command"), tid, problems, out)
    parent = entry.get("parent")
    if parent is not None:
        out["parent"] = str(parent)


def _command_field(command: Any, tid: str, problems: list[Problem], out: dict[str, Any]) -> None:
    if command is None:
        return
    if not (isinstance(command, list) and command and all(map(_is_str, command))):
        example = '["make", "test"]'
        message = f'{tid}: "command" must be a non-empty argv list such as {example}'
        problems.append(_err("bad-command", tid, message))
        return
    out["command"] = tuple(command)
    if any("\0" in arg for arg in command):  # exec refuses it: every attempt would fail
        problems.append(_err("bad-command", tid, f'{tid}: "command" contains a NUL character'))


def _check_history(entry: Mapping[str, Any], tid: str, problems: list[Problem]) -> None:
    """sage appends to `state_history` on every state change: it must be a list of objects."""
    history = entry.get("state_history", [])
    if not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
        message = f'{tid}: "state_history" must be a list of changes (objects); remove it to reset'
        problems.append(_err("bad-state-history", tid, message))


def _check_duplicates(tickets: Iterable[Ticket], problems: list[Problem]) -> None:
    seen: dict[str, int] = {}
    for ticket in tickets:
        seen[ticket.id] = seen.get(ticket.id, 0) + 1
    for tid, count in seen.items():
        if count > 1:
            problems.append(_err("duplicate-id", tid, f"{tid}: ID is used by {count} tickets"))


def _files_field(value: Any, tid: str, problems: list[Problem], out: dict[str, Any]) -> None:
    if isinstance(value, list) and all(map(_is_str, value)):
        if value:
            out["files"] = tuple(dict.fromkeys(value))
    else:
        message = f'{tid}: "files" must be a list of paths or globs such as ["src/*.py"]'
        problems.append(_err("bad-files", tid, message))


def load(path: Path) -> Index:
    return parse(_read(path), path)


def _read(path: Path) -> str:
    with _reading(path):
        return path.read_text(encoding="utf-8")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """The index's read errors as one clear error."""
    try:
        yield
    except FileNotFoundError as exc:
        raise IndexFileError(
            f"no ticket index at {path}",
            hint="run `sage init` to create one, or pass --index PATH",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"cannot read {path}: {exc}") from exc


def read_notes(index_path: Path, ticket_id: str) -> str | None:
    """A ticket's optional `<ID>.md` beside the index, for its worker. Bytes that are not UTF-8
    are shown as U+FFFD (the file itself is left alone); one that cannot be read is an error."""
    path = index_path.parent / f"{ticket_id}.md"
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexFileError(
            f"cannot read {path}: {exc.strerror or exc}",
            hint=f"{ticket_id}'s notes must be a readable text file (or absent)",
        ) from None


def require_valid(index: Index) -> Index:
    """Refuse to act on an index with errors, naming the first few."""
    errors = index.errors
    if errors:
        shown = "; ".join(p.message for p in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise IndexFileError(
            f"{index.path} has {counted(len(errors), 'error')}: {shown}{more}",
            hint="run `sage validate` to see every problem",
        )
    return index


LOCK_POLL = 0.005  # as sage.lib.locks.POLL (which imports this module): 50 ms lost a meeting


class TicketStore:
    """The index on disk and the ticket states sage keeps beside it.

    The index (`index.json`, tracked by the project) is the user's: tickets, their fields, and
    COMPLETED, which a landing writes in the commit that lands the ticket (see
    `completed_in`). States that only mean something while sage works (IN_PROGRESS,
    DEFERRED, UNPROCESSED again after a stop) go to `states`, a file in sage's run state,
    which `load` lays over the index. Every write re-reads under a lock (a read parses only
    what changed since, see `record`), keeps unknown fields, and is atomic; the index's writes
    are also durable, the states' are not (run state: see `sage.lib.files`). Without `states`
    (an index outside any project) every state goes to the index, as for an index git does
    not track."""

    def __init__(
        self, path: Path, *, lock_timeout: float = 30.0, states: Path | None = None,
        lock: Path | None = None,
    ) -> None:  # fmt: skip
        """`lock`: the index's lock file (default: beside it; a project keeps it in its run
        state, so that it never shows in `git status`)."""
        self.path = path
        self.lock = FileLock(str(lock or f"{path}.lock"), timeout=lock_timeout)
        self.states = RunStates(states, lock_timeout=lock_timeout) if states else None
        self._index = files.Snapshot(path, self._parse_document)  # for `record`: never changed
        # Each ticket's text as `_record_in_index` last wrote it, by id() of its dict in the
        # document written then (which keeps those dicts alive, so no id is reused meanwhile).
        self._rendered: tuple[IndexDocument | None, dict[int, str]] = (None, {})
        # Told of each write `_record_in_index` makes (a lander's process tells the stream's)
        self.on_write: Callable[[IndexWrite], None] | None = None

    def load(self) -> Index:
        if self.states is None:
            return load(self.path)
        with quiet_gc():
            raw = _decode(_read(self.path), self.path)
            self.states.overlay(raw)
        return parse_raw(raw, self.path)

    def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Apply `change` to the raw document and write it back, all under the lock."""
        with _writing(self.lock, self.path, "the ticket index is", "the index is unchanged"):
            raw = _decode(_read(self.path), self.path)  # no per-ticket parse: raw is enough
            result = change(raw)
            files.write_json(self.path, raw)
            return result

    def transition(
        self,
        changes: Sequence[tuple[str, str]],
        *,
        reason: str | None = None,
        run_id: str | None = None,
        fields: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Move tickets to new states (id, state), recording each change in their history."""
        self.record([
            StateChange(ticket_id=tid, state=state, reason=reason or "", run_id=run_id,
                        fields=(fields or {}).get(tid, {}), strict=True)
            for tid, state in changes
        ])  # fmt: skip

    def record(self, changes: Sequence[StateChange]) -> None:
        """Several tickets' states in one write, idempotently (see `record_changes`). With
        run states, a COMPLETED that the landing commit carried is in the index once the
        checkout followed: only what the index does not say is kept beside it. A COMPLETED
        no commit carried (the index is not in the repository) is written into the index.
        The index is parsed again only when it changed since this store last read or wrote it
        (`files.Snapshot`): at 50k tickets a parse costs as much as a load."""
        if self.states is None:
            self.update(lambda raw: record_changes(raw, changes))
            return
        direct = [c for c in changes if c.state == "COMPLETED" and not c.committed]
        if direct:
            self._record_in_index(direct)
        kept = [c for c in changes if c.state != "COMPLETED" or c.committed]
        if kept:
            self.states.record(self._document().by_id, kept, self.path)

    def _record_in_index(self, changes: Sequence[StateChange]) -> None:
        """`record_changes` written into the index, from the document as last read (a copy:
        the snapshot's own is never changed)."""
        with _writing(self.lock, self.path, "the ticket index is", "the index is unchanged"):
            before = self._document()
            written, rendered = self._rendered
            if written is not before:  # read anew: its tickets' texts are in the bytes read
                seen = self._index.seen()
                read = seen[0] if seen is not None and seen[1] is before else None
                rendered = files.rendered_in(read.decode(), before.raw) if read else {}
            data, document = written_with(before, changes, rendered)
            tell = self.on_write
            digest = self._tell(tell, data, document, changes) if tell is not None else None
            files.write_atomic(self.path, data)
            self._index.wrote(data, document, digest=digest)
            self._rendered = (document, rendered)

    def _tell(
        self, tell: Callable[[IndexWrite], None], data: bytes, document: IndexDocument,
        changes: Sequence[StateChange],
    ) -> bytes:  # fmt: skip
        """`tell` told of a write about to replace the index (first: the reader it tells may
        read the file the moment it is there); the written bytes' digest."""
        digest, was = files.content_digest(data), self._index.latest()
        if was is not None:
            changed = {c.ticket_id for c in changes if c.ticket_id in document.by_id}
            tell(IndexWrite(before=was[0], after=digest,
                            tickets={t: document.by_id[t] for t in changed}))  # fmt: skip
        return digest

    def follow(self, write: IndexWrite) -> None:
        """Another process (the lander's) wrote the index: when it wrote over the index this
        store knows, its next read takes the tickets it changed instead of parsing the file
        (at 20k tickets a parse costs 70 ms: once per landing, for the stream, before this)."""
        latest = self._index.latest()
        if latest is None or latest[0] != write.before:
            return
        document = latest[1]
        if document.at.keys() >= write.tickets.keys():  # same bytes, same tickets: checked anyway
            self._index.told(write.after, document.replaced(write.tickets))

    def followed(self, data: bytes, document: IndexDocument) -> None:
        """The user's checkout followed a landing whose commit carries `data` as the index,
        which reads as `document`: the next read compares the file's bytes with `data` instead
        of parsing them (at 20k tickets a parse is a third of a landing). A file that differs
        (the user's own edits merged in) is parsed, as before."""
        self._index.wrote(data, document)

    def _document(self) -> IndexDocument:
        """The index, parsed only if it changed. Read without the lock, then once more under it
        if that failed: a checkout's update (`read-tree -u`, which holds the lock) deletes the
        file and writes it again."""
        try:
            with _reading(self.path):
                return self._index.read()
        except IndexFileError:
            with _reading(self.path), _locked(self.lock, "the ticket index is"):
                return self._index.read()

    def _parse_document(self, data: bytes) -> IndexDocument:
        return index_document(data, self.path)


def index_document(data: bytes, path: Path = Path("index.json")) -> IndexDocument:
    """An index file's document, checked as `load` checks it (duplicate keys refused)."""
    with quiet_gc():
        raw = _decode(data.decode("utf-8"), path)
        at = {t.get("id"): i for i, t in enumerate(raw["tickets"]) if isinstance(t, dict)}
        return IndexDocument(raw=raw, by_id={k: raw["tickets"][i] for k, i in at.items()}, at=at)


def written_with(
    before: IndexDocument, changes: Sequence[StateChange], rendered: dict[int, str]
) -> tuple[bytes, IndexDocument]:
    """The index's text with `changes` recorded, and its document (`IndexDocument.changed`).
    `rendered`: each ticket's text as last written from `before`, by id() of its dict, reused
    for the tickets the changes leave alone (see `files.dumps`) and kept up to date for the
    next write from the document returned."""
    document = before.changed(changes)
    for change in changes:  # replaced in `document` (the others are shared)
        rendered.pop(id(before.by_id.get(change.ticket_id)), None)
    return files.json_text(document.raw, rendered=rendered).encode("utf-8"), document


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexWrite:
    """One write of the index: the `files.content_digest` of what it replaced and of what it
    wrote, and the tickets it changed (by ID, as a read of the file gives them back)."""

    before: bytes
    after: bytes
    tickets: dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexDocument:
    """The index's raw document, its tickets by ID (the last of a duplicated ID) and where
    each is in the list. Shared: never changed."""

    raw: dict[str, Any]
    by_id: dict[Any, dict[str, Any]]
    at: dict[Any, int]

    def replaced(self, tickets: Mapping[Any, dict[str, Any]]) -> IndexDocument:
        """The document with these tickets' entries (by ID, each already in it) in place of
        theirs: a copy that shares every other ticket."""
        entries, by_id = list(self.raw["tickets"]), dict(self.by_id)
        for tid, entry in tickets.items():
            entries[self.at[tid]] = by_id[tid] = entry
        return IndexDocument(raw={**self.raw, "tickets": entries}, by_id=by_id, at=self.at)

    def changed(self, changes: Sequence[StateChange]) -> IndexDocument:
        """The document with `changes` recorded (`record_changes`): a copy that shares every
        ticket they leave alone. The changed ones are as JSON reads them back (a tuple in a
        field is a list), as a read of the file written would give them."""
        tickets, by_id = list(self.raw["tickets"]), dict(self.by_id)
        wanted = [(tid, self.at[tid]) for tid in {c.ticket_id for c in changes} if tid in self.at]
        for tid, i in wanted:
            tickets[i] = by_id[tid] = _ticket_copy(tickets[i])
        _record_in(by_id, changes)
        for tid, i in wanted:
            tickets[i] = by_id[tid] = json.loads(json.dumps(tickets[i]))
        return IndexDocument(raw={**self.raw, "tickets": tickets}, by_id=by_id, at=self.at)


def _ticket_copy(entry: dict[str, Any]) -> dict[str, Any]:
    """A copy `record_state` may change: the history it appends to is copied too."""
    copied = dict(entry)
    if isinstance(entry.get("state_history"), list):
        copied["state_history"] = list(entry["state_history"])
    return copied


class RunStates:
    """Ticket states sage keeps outside the index: `{"tickets": {ID: {"state", "over",
    "fields", "history"}}}`. A state applies while the index still says `over`, the state it
    laid itself over: once the user changes the ticket's state in the index, or a landing
    commit makes it COMPLETED there, the index speaks again (the newer word wins)."""

    def __init__(self, path: Path, *, lock_timeout: float) -> None:
        self.path = path
        self.lock = FileLock(str(path) + ".lock", timeout=lock_timeout)
        self._kept = files.Snapshot(path, self._parse)  # parsed again only once it changed

    def read(self) -> dict[str, dict[str, Any]]:
        """The kept states by ID (shared with the next read: not to be changed)."""
        try:
            return self._kept.read()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexFileError(f"cannot read {self.path}: {exc}") from None

    def _parse(self, data: bytes) -> dict[str, dict[str, Any]]:
        try:
            document = json.loads(data.decode("utf-8"))
        except json.JSONDecodeError as exc:
            raise IndexFileError(
                f"{self.path} is not valid JSON (line {exc.lineno}, column {exc.colno})",
                hint="it holds sage's ticket states between runs (IN_PROGRESS, DEFERRED): "
                "delete it to forget them; the index is untouched",
            ) from None
        found = document.get("tickets") if isinstance(document, dict) else None
        if not isinstance(found, dict):
            raise IndexFileError(
                f'{self.path}: expected an object with a "tickets" object',
                hint="delete it to forget sage's ticket states; the index is untouched",
            )
        return {k: v for k, v in found.items() if isinstance(v, dict)}

    def overlay(self, raw: dict[str, Any]) -> None:
        """Lay the kept states over a raw index (in place; copies: the kept ones are shared)."""
        kept = self.read()
        if not kept:
            return
        for entry in raw["tickets"]:
            mine = kept.get(str(entry.get("id"))) if isinstance(entry, dict) else None
            if mine is not None and entry.get("state", "UNPROCESSED") == mine.get("over"):
                mine = copy.deepcopy(mine)
                entry["state"] = mine.get("state")
                fields = mine.get("fields")
                entry.update(fields if isinstance(fields, dict) else {})
                history = entry.get("state_history")
                added = mine.get("history")
                if isinstance(history, list) and isinstance(added, list):
                    entry["state_history"] = history + added
                elif isinstance(added, list):
                    entry["state_history"] = list(added)

    def record(
        self, index: Mapping[Any, dict[str, Any]], changes: Sequence[StateChange], path: Path
    ) -> None:
        with _writing(self.lock, self.path, "sage's ticket states are", "nothing was changed"):
            kept = {  # what the index has spoken over since is forgotten
                tid: mine for tid, mine in self.read().items()
                if tid in index and mine.get("over") == index[tid].get("state", "UNPROCESSED")
            }  # fmt: skip
            for change in changes:
                self._apply(kept, index, change, path)
            # compact: run state nobody edits, rewritten at each start (json's indenting
            # encoder is pure Python, its compact one C: a fifth of a stream's transition)
            data = (json.dumps({"tickets": kept}, ensure_ascii=False) + "\n").encode("utf-8")
            files.write_atomic(self.path, data, durable=False)  # run state: see sage.lib.files
            changed = {c.ticket_id for c in changes if c.ticket_id in kept}
            self._kept.wrote(data, {  # as a read would give it back: a tuple is a list
                tid: json.loads(json.dumps(mine)) if tid in changed else mine
                for tid, mine in kept.items()
            })  # fmt: skip

    @staticmethod
    def _apply(
        kept: dict[str, dict[str, Any]], index: Mapping[Any, dict[str, Any]],
        change: StateChange, path: Path,
    ) -> None:  # fmt: skip
        entry = index.get(change.ticket_id)
        if entry is None:
            if change.strict:
                raise SageError(f"ticket {change.ticket_id} is no longer in {path}")
            return
        said = entry.get("state", "UNPROCESSED")
        mine = kept.get(change.ticket_id)
        now_state = mine.get("state") if mine else said
        now_fields = {**entry, **(mine.get("fields", {}) if mine else {})}
        if (
            not change.strict
            and now_state == change.state
            and all(now_fields.get(k) == v for k, v in change.fields.items())
        ):
            return  # a recovery doing it again
        if said == change.state and change.state == "COMPLETED":
            kept.pop(change.ticket_id, None)  # the landing commit said it in the index
            return
        step: dict[str, Any] = {"from": now_state, "to": change.state, "at": now()}
        if change.reason:
            step["reason"] = change.reason
        if change.run_id:
            step["run"] = change.run_id
        history = list(mine.get("history", [])) if mine else []
        fields = dict(mine.get("fields", {})) if mine else {}
        if change.state == said and not change.fields and said != "COMPLETED":
            kept.pop(change.ticket_id, None)  # back to what the index says: nothing to keep
            return
        fields.update(change.fields)
        kept[change.ticket_id] = {
            "state": change.state, "over": said, "fields": fields, "history": [*history, step],
        }  # fmt: skip


@contextlib.contextmanager
def _writing(lock: FileLock, path: Path, what: str, unchanged: str) -> Iterator[None]:
    """`lock` held while `path` is rewritten; a lock held too long or a failed write (read-only,
    disk full: the old file is intact, the write is atomic) as one clear error."""
    try:
        with _locked(lock, what):
            yield
    except OSError as exc:
        raise SageError(
            f"cannot write {path}: {exc.strerror or exc}",
            hint=f"{unchanged}; make it writable or free some space",
        ) from exc


@contextlib.contextmanager
def _locked(lock: FileLock, what: str) -> Iterator[None]:
    """`lock` held; held too long by another, one clear error."""
    try:
        Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
        with lock.acquire(poll_interval=LOCK_POLL):
            yield
    except Timeout as exc:
        raise LockHeld(
            f"{what} locked: {lock.lock_file}",
            hint="another sage process is writing; try again, or remove a stale lock file",
        ) from exc


def _by_id(raw: Mapping[str, Any]) -> dict[Any, dict[str, Any]]:
    return {t.get("id"): t for t in raw["tickets"] if isinstance(t, dict)}


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChange:
    ticket_id: str
    state: str
    reason: str
    run_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False  # a ticket gone from the index is an error (else: left alone)
    committed: bool = False  # COMPLETED: the landing commit wrote it into the index


def record_changes(raw: dict[str, Any], changes: Sequence[StateChange]) -> None:
    """Apply state changes to a raw index. A ticket already in that state with those fields (a
    recovery doing it again) or gone from the index is left alone: landing must not stall."""
    _record_in(_by_id(raw), changes)


def _record_in(by_id: Mapping[Any, dict[str, Any]], changes: Sequence[StateChange]) -> None:
    for change in changes:
        ticket = by_id.get(change.ticket_id)
        if ticket is None and change.strict:
            raise SageError(f"ticket {change.ticket_id} is no longer in the index")
        if ticket is None or (
            not change.strict  # a transition is always recorded
            and ticket.get("state") == change.state
            and all(ticket.get(k) == v for k, v in change.fields.items())
        ):
            continue
        record_state(ticket, change.state, reason=change.reason, run_id=change.run_id)
        ticket.update(change.fields)


def record_state(
    entry: dict[str, Any], state: str, *, reason: str | None = None, run_id: str | None = None
) -> None:
    previous = entry.get("state", "UNPROCESSED")
    entry["state"] = state
    change: dict[str, Any] = {"from": previous, "to": state, "at": now()}
    if reason:
        change["reason"] = reason
    if run_id:
        change["run"] = run_id
    entry.setdefault("state_history", []).append(change)


def merge_index(user: bytes, old: bytes, new: bytes) -> bytes | None:
    """Three-way merge of an index, ticket by ticket: the user's uncommitted copy (`user`)
    and a landing's change from `old` to `new` (a ticket COMPLETED, tickets a worker added).
    What only one side changed is taken from it; where both changed one ticket, the user's
    fields stay but the landing's `state` wins and both histories are kept. None when a side
    is not a valid index (then it is not sage's to merge)."""
    try:
        mine, base, theirs = (parse_document(b.decode("utf-8")) for b in (user, old, new))
    except (UnicodeDecodeError, SageError):
        return None
    merged = {k: v for k, v in _merge_fields(mine, base, theirs).items() if k != "tickets"}
    merged["tickets"] = _merge_tickets(mine["tickets"], base["tickets"], theirs["tickets"])
    ordered = {k: merged[k] for k in mine if k in merged}  # the user's key order first
    ordered.update((k, v) for k, v in merged.items() if k not in ordered)
    return files.json_text(ordered).encode("utf-8")


def _merge_fields(
    mine: Mapping[str, Any], base: Mapping[str, Any], theirs: Mapping[str, Any]
) -> dict[str, Any]:
    missing = object()
    merged = dict(mine)
    for key in base.keys() | theirs.keys():
        was, now = base.get(key, missing), theirs.get(key, missing)
        if was == now:
            continue
        if mine.get(key, missing) == was or key == "state":
            if now is missing:
                merged.pop(key, None)
            else:
                merged[key] = now
        elif key == "state_history" and isinstance(now, list):
            kept: list[Any] = mine[key] if isinstance(mine.get(key), list) else []
            seen: list[Any] = was if isinstance(was, list) else []
            merged[key] = [*kept, *(h for h in now if h not in seen and h not in kept)]
    return merged


def _merge_tickets(mine: list[Any], base: list[Any], theirs: list[Any]) -> list[Any]:
    """In the user's order; a ticket the user removed stays removed."""
    was, now = _by_id({"tickets": base}), _by_id({"tickets": theirs})
    merged: list[Any] = []
    for entry in mine:
        tid = entry.get("id") if isinstance(entry, dict) else None
        if tid not in was or tid not in now:  # the user's own, or one side added/removed it
            if tid not in was or entry != was[tid]:  # drop only what they removed unchanged
                merged.append(entry)
        elif was[tid] == now[tid]:
            merged.append(entry)
        elif entry == was[tid]:
            merged.append(now[tid])
        else:
            merged.append(_merge_fields(entry, was[tid], now[tid]))
    have = {e.get("id") for e in mine if isinstance(e, dict)}
    merged += [e for tid, e in now.items() if tid not in have and tid not in was]
    return merged
