"""One worker run: prepare the worktree, run the argv with a timeout, collect its commits."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from sage.lib import agents, files, git, index_file, objects, proc, worktrees
from sage.lib.agent_output import Verdict
from sage.lib.collisions import WARNINGS_FILE
from sage.lib.outcomes import Outcome, Usage

__all__ = ["Outcome", "Usage", "Verdict", "WorkerJob", "WorkerResult"]
from sage.lib.errors import SageError
from sage.lib.tickets import DEFAULT_INDEX, Ticket, printable

TEMPFAIL = 75  # EX_TEMPFAIL: e.g. an agent's rate limit; retried without using up an attempt
MAX_ENV_TITLE = 4096  # characters of the title in SAGE_TICKET_TITLE


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerJob:
    """Everything a run of one ticket needs; plain values so it can travel to another machine."""

    ticket: Ticket
    run_id: str
    attempt: int
    base: str
    argv: tuple[str, ...]
    timeout: float
    log: Path
    context_file: Path
    worker_name: str = "worker"
    slot: int = 0  # the worker slot (0 … N-1), stable for the life of the run
    index_path: str = DEFAULT_INDEX.as_posix()  # relative to the repository: never landed
    env: Mapping[str, str] = field(default_factory=dict)  # [agents.<name>] env
    resolve: Resolve | None = None  # a conflict's next attempt: resolve instead of redo


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolve:
    """What a resolve attempt is told: its previous attempt (merged onto the new base, conflict
    markers in place), the files that conflicted, and what it collided with."""

    previous: str  # the previous attempt's commit (kept as refs/sage/previous/<ID>)
    files: tuple[str, ...] = ()
    collided_with: tuple[str, ...] = ()  # "<ticket>@<landed commit>"

    def context(self) -> str:
        files = ", ".join(self.files) or "(git did not name them)"
        other = ", ".join(self.collided_with) or "earlier work on the target"
        return (
            "## Resolve: your previous attempt conflicted\n\n"
            f"Your previous attempt ({self.previous[:12]}) could not land: it conflicted in "
            f"{files} with {other}. It is merged onto the new head in this worktree, with "
            "conflict markers (`<<<<<<<`, `=======`, `>>>>>>>`) left where both changed the same "
            "lines. Resolve them keeping both intents (yours and the work that landed), remove "
            "every marker, and check the result; do not start the ticket over.\n\n"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerResult:
    ticket_id: str
    outcome: str  # an Outcome
    returncode: int
    seconds: float
    log: Path
    detail: str = ""
    branch: str = ""
    base: str = ""
    head: str = ""
    worker_name: str = "worker"
    retry_after: float | None = None  # THROTTLED: seconds until the agent's limit resets
    setup_seconds: float = 0.0  # preparing the slot's worktree ([worktree] setup), not work
    usage: Usage | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def argv_for(
    ticket: Ticket,
    template: Sequence[str],
    settings: Mapping[str, agents.Settings] | None = None,
) -> tuple[str, ...]:
    """The ticket's own command, else the configured worker (a preset becomes its adapter's
    argv, with `[agents.<name>]` model and args when `settings` are given)."""
    if ticket.command:
        return ticket.command
    if not template:
        raise SageError(
            f'ticket {ticket.id} has no "command" and no worker is configured',
            hint="pass --worker CMD (or a preset: claude, codex, aider) or set [stream] worker",
        )
    return agents.expand(template, settings)


def context_text(
    ticket: Ticket, raw: dict[str, object], notes: str | None, resolve: Resolve | None = None
) -> str:
    """What the worker is told: the ticket's markdown (if any) and its index entry; first, for a
    resolve attempt, what to resolve."""
    head = f"# {ticket.id}: {ticket.title}\n\n" + (resolve.context() if resolve else "")
    body = (notes.strip() + "\n\n") if notes else ""
    entry = json.dumps(raw, indent=2, ensure_ascii=False)
    return f"{head}{body}## Ticket\n\n```json\n{entry}\n```\n"


def fill(
    template: Sequence[str],
    ticket: Ticket,
    *,
    worktree: str,
    context_file: str,
    run_id: str = "",
    attempt: int = 1,
) -> list[str]:
    """The argv a ticket's worker runs: placeholders filled, never a shell."""
    values = {"ticket_id": ticket.id, "title": ticket.title, "worktree": worktree,
              "context_file": context_file, "run_id": run_id, "attempt": str(attempt)}  # fmt: skip
    return agents.render(template, values)


def environment(job: WorkerJob, worktree: Path) -> dict[str, str]:
    return proc.clean_env(
        {
            "SAGE_TICKET_ID": job.ticket.id,
            # One variable over 128 KiB makes exec fail; the whole title is in the context file.
            "SAGE_TICKET_TITLE": job.ticket.title[:MAX_ENV_TITLE],
            "SAGE_WORKTREE": str(worktree),
            "SAGE_CONTEXT_FILE": str(job.context_file),
            "SAGE_RUN_ID": job.run_id,
            "SAGE_ATTEMPT": str(job.attempt),
            "SAGE_SLOT": str(job.slot),
            "SAGE_BASE": job.base,
            **_resolve_env(job.resolve),
            **job.env,
        }
    )


def _resolve_env(resolve: Resolve | None) -> dict[str, str]:
    if resolve is None:
        return {"SAGE_MODE": "run"}
    return {
        "SAGE_MODE": "resolve",
        "SAGE_PREVIOUS_ATTEMPT": resolve.previous,
        "SAGE_CONFLICT_FILES": "\n".join(resolve.files),
        "SAGE_COLLIDED_WITH": " ".join(resolve.collided_with),
    }


def merge_previous(worktree: Path, base: str, previous: str) -> None:
    """Put the previous attempt onto `base` in the (clean) worktree, conflict markers and all,
    as uncommitted changes: the worker resolves them and sage commits the result."""
    merged = git.run(worktree, "merge-tree", "--write-tree", "--no-messages", base, previous)
    tree = merged.stdout.split("\n", 1)[0].strip()
    if merged.returncode not in (0, 1) or not tree:
        raise SageError(f"cannot merge the previous attempt {previous[:12]}: {merged.stderr}")
    git.git(worktree, "read-tree", "-m", "-u", base, tree)
    git.git(worktree, "reset", "-q")


def run(
    repo: Path,
    worktree: Path,
    job: WorkerJob,
    *,
    on_start: Callable[[int], None] | None = None,
    on_exit: Callable[[], None] | None = None,
    slots: tuple[Path, worktrees.SlotSetup] | None = None,
) -> WorkerResult:
    """A worktree on `sage/<ID>` at `job.base` (slot `job.slot`'s, reused, when `slots` names
    their folder and setup; else a fresh one at `worktree`), the worker run in it, and what it
    left behind committed.

    `on_exit` hears the moment a successful worker's process is gone, before its work is
    collected (so its slot can take the next ticket).
    """
    branch = worktrees.branch_for(job.ticket.id)
    setup_seconds = 0.0
    if slots is None:
        worktrees.create(repo, worktree, branch, job.base)
    else:
        slot = worktrees.prepare_slot(repo, slots[0], job.slot, job.ticket.id, job.base, slots[1],
                                      log=job.log, on_start=on_start)  # fmt: skip
        worktree, setup_seconds = slot.path, slot.setup_seconds
    if job.resolve is not None:
        merge_previous(worktree, job.base, job.resolve.previous)
    result = _run_in(repo, worktree, job, branch, on_start=on_start, on_exit=on_exit)
    return replace(result, setup_seconds=setup_seconds) if setup_seconds else result


def _run_in(
    repo: Path,
    worktree: Path,
    job: WorkerJob,
    branch: str,
    *,
    on_start: Callable[[int], None] | None,
    on_exit: Callable[[], None] | None,
) -> WorkerResult:
    made, heads = worktrees.ownership(worktree), _branches_before(repo)
    argv = fill(job.argv, job.ticket, worktree=str(worktree), context_file=str(job.context_file),
                run_id=job.run_id, attempt=job.attempt)  # fmt: skip
    _log(job.log, f"=== sage: {job.ticket.id} attempt {job.attempt}: {argv}\n")
    env = environment(job, worktree)
    done = _refused(job, env, worktree) or proc.run_logged(
        argv,
        cwd=worktree,
        env=env,
        log=job.log,
        timeout=_limit(job),
        on_start=on_start,
        watch=_Watch.of(job),
    )
    if on_exit and done.returncode == 0 and not done.timed_out:
        on_exit()  # a failure is reported at once anyway; success still needs collecting
    return _noted(repo, worktree, job, done, (branch, made, heads))


# What a run did not land (or killed) is said in the result: `collect` adds to this run's list.
_NOTES: ContextVar[list[str] | None] = ContextVar("sage_worker_notes", default=None)
Made = tuple[str, worktrees.Ownership, dict[str, str]]  # branch, worktree, the user's branches


def _noted(
    repo: Path, worktree: Path, job: WorkerJob, done: proc.Finished, made: Made
) -> WorkerResult:
    left = done.left_running
    notes = [f"killed what the worker left running: {_listed(left, 3)}"] if left else []
    token = _NOTES.set(notes)
    try:
        result = _checked_result(repo, worktree, job, done, made)
    finally:
        _NOTES.reset(token)
    if not notes:
        return result
    return replace(result, detail="; ".join([result.detail, *notes] if result.detail else notes))


def _checked_result(
    repo: Path, worktree: Path, job: WorkerJob, done: proc.Finished, made: Made
) -> WorkerResult:
    """Collect only from a worktree that is still sage's; a refusal is an outcome."""
    branch = made[0]
    try:
        if done.returncode == 0 and not done.timed_out and (worktree / ".git").exists():
            why = worktrees.taken_over(worktree, branch, made[1])
            why = why or _moved_users_branch(repo, worktree, job, made)
            if why:
                raise NotLanded(Outcome.FAILED, f"{why}: nothing was collected")
        return _result(repo, worktree, job, done, branch)
    except NotLanded as exc:
        _log(job.log, f"sage: not landed: {exc.detail}\n")
        return WorkerResult(
            ticket_id=job.ticket.id, outcome=exc.outcome, returncode=done.returncode,
            seconds=done.seconds, log=job.log, detail=exc.detail, branch=branch, base=job.base,
            worker_name=job.worker_name,
        )  # fmt: skip


def _moved_users_branch(repo: Path, worktree: Path, job: WorkerJob, made: Made) -> str | None:
    """A branch outside sage/ the worker switched to, or moved onto its own commits."""
    _, owned, before = made
    for line in worktrees.head_log(owned):
        moved = _CHECKOUT.search(line)
        if moved and f"refs/heads/{moved.group(1)}" in before:
            return f"the worker switched its worktree to {moved.group(1)} during the run"
    try:
        tip = _head(worktree)
    except (OSError, SageError):
        return None  # HEAD unreadable: collecting says so
    if tip == job.base:  # no commit of the worker's own: no branch can hold one
        return None
    after = _branches_now(repo)
    changed = [ref for ref, old in before.items() if after.get(ref, old) != old]
    for ref in changed:
        if ref in after and git.is_ancestor(repo, tip, after[ref]):
            return f"the worker moved {ref} onto its own commits (to {after[ref][:12]})"
    return None


# The user's branches as last seen, by repository. A ticket's "before" may be older than its
# start: a branch that changed since only costs a `contains` check, and is flagged only if it
# now holds this worker's commits.
_BRANCHES: dict[str, dict[str, str]] = {}


def _branches_before(repo: Path) -> dict[str, str]:
    return _BRANCHES.get(str(repo)) or _branches_now(repo)


def _branches_now(repo: Path) -> dict[str, str]:
    heads = git.branch_heads(repo, skip="refs/heads/sage/")
    _BRANCHES[str(repo)] = heads
    return heads


_CHECKOUT = re.compile(r"\tcheckout: moving from \S+ to (\S+)$")


def _limit(job: WorkerJob) -> float | None:
    """Seconds the worker may run (an agent's default applies); None for no limit."""
    seconds = agents.timeout_for(job.argv, job.timeout)
    return None if not seconds or math.isinf(seconds) else seconds


def _refused(job: WorkerJob, env: Mapping[str, str], worktree: Path) -> proc.Finished | None:
    """An agent that cannot run at all (e.g. aider would wait for a browser login) is not run."""
    agent = agents.detect(job.argv)
    why = agent.preflight(env, worktree) if agent else None
    if why:
        _log(job.log, f"sage: not started: {why}\n")
    return proc.Finished(returncode=127, seconds=0.0) if why else None


def _result(
    repo: Path, worktree: Path, job: WorkerJob, done: proc.Finished, branch: str
) -> WorkerResult:
    verdict = _verdict(job, done)

    def result(outcome: str, detail: str = "", head: str = "") -> WorkerResult:
        return WorkerResult(
            ticket_id=job.ticket.id,
            outcome=outcome,
            returncode=done.returncode,
            seconds=done.seconds,
            log=job.log,
            detail=detail,
            branch=branch,
            base=job.base,
            head=head,
            worker_name=job.worker_name,
            retry_after=verdict.retry_after if verdict else None,
            usage=verdict.usage if verdict else None,
        )

    if verdict and verdict.outcome != Outcome.OK:
        return result(verdict.outcome, verdict.detail)
    if done.returncode != 0:
        return result("failed", f"worker exited {done.returncode}{_last_line(job.log)}")
    if not (worktree / ".git").exists():
        return result("failed", "the worker deleted its worktree")
    try:
        head = collect(worktree, job, repo=repo)
    except SageError as exc:
        return result("error", f"could not commit the worker's changes: {exc.message}")
    return result("ok", detail=verdict.detail if verdict else "", head=head)


def _verdict(job: WorkerJob, done: proc.Finished) -> Verdict | None:
    """What ended the attempt: a timeout, exit 75, or what the agent says in its output."""
    if done.timed_out:
        timeout = _limit(job) or 0
        return Verdict(outcome=Outcome.TIMEOUT,
                       detail=f"timed out after {timeout:g}s (process group killed)")  # fmt: skip
    agent = agents.detect(job.argv)
    if agent and done.returncode == 127:  # not started (see proc.run_logged and _refused)
        return Verdict(outcome=Outcome.UNUSABLE, detail=f"{agent.name}{_last_line(job.log)}")
    said = _said(agent, job, done) if agent else None
    if done.returncode == TEMPFAIL:
        wait = said.retry_after if said else None
        detail = said.detail if said and said.detail else "exit 75: temporary failure"
        usage = said.usage if said else None
        return Verdict(outcome=Outcome.THROTTLED, detail=detail, retry_after=wait, usage=usage)
    return said


def _said(agent: agents.Agent, job: WorkerJob, done: proc.Finished) -> Verdict | None:
    """What the agent's output says; for a run its watch stopped (`_Watch`), what it printed it
    would end on."""
    output = _attempt_output(job)
    stopped = agent.hopeless(output) if done.stopped else None
    return stopped or agent.read(done.returncode, output)


def collect(worktree: Path, job: WorkerJob, *, repo: Path | None = None) -> str:
    """Commit leftovers as `<ID>: <title>` with a Sage-Ticket trailer and return the head.

    Work that cannot land as it is raises `NotLanded` naming the cause; sage's own files (the
    index, run state) are kept out, and what was kept out is logged and reported.
    """
    with git.one_look():
        return _collect(worktree, job, repo)


def _collect(worktree: Path, job: WorkerJob, repo: Path | None) -> str:
    head, entries = _status(worktree)
    _refuse_unfinished(worktree, entries)
    kept_out, restored = _keep_out(worktree, job, head, entries)
    landing = [e for e in entries if e.kind != "!" and not _is_kept_out(e.path, job)]
    added = any(e.kind == "?" or e.xy[1] != "." for e in landing)
    if added:
        git.git(worktree, "add", "-A", "--", ".", *(f":(exclude,literal){p}" for p in _own(job)))
    known = head == job.base and not restored
    changes = _known_changes(landing) if known else None
    changes = _staged(worktree, job.base) if changes is None else changes
    _refuse_unlandable(worktree, job.base, changes)
    if not changes and not job.ticket.allow_empty:
        raise NotLanded(Outcome.NO_CHANGES, _nothing_to_land(kept_out))
    if head == job.base or git.run(worktree, "diff", "--cached", "--quiet", "HEAD").returncode:
        index = None
        if known:
            index = _index_after_add(worktree, job, landing) if added else _index_changes(landing)
        _commit(worktree, job, repo or worktree, index)
    # Nothing ignored, and every untracked file now committed: the next ticket in this slot
    # needs no `git clean`.
    left = any(e.kind == "!" or (e.kind == "?" and _is_kept_out(e.path, job)) for e in entries)
    worktrees.note_tidy(worktree, tidy=not left and not restored)
    return _head(worktree)


def _commit(
    worktree: Path, job: WorkerJob, repo: Path, index: Mapping[str, tuple[str, str] | None] | None
) -> None:
    """sage's commit of what the worker left. No auto-maintenance after it (a `git maintenance`
    process per ticket): the executor runs it once per run instead. No reflog for the branch
    (see `worktrees.NO_REFLOG`). When HEAD is the base and `index` says what the index holds
    for every changed path, the commit is written in process (`_commit_here`)."""
    title = printable(job.ticket.title)
    subject = f"{job.ticket.id}: {title}" if title else job.ticket.id
    message = _whitespace_cleaned(f"{subject}\n\nSage-Ticket: {job.ticket.id}\n")
    if index is not None and _commit_here(worktree, job, repo, index, message):
        return
    args = (*worktrees.NO_REFLOG, "-c", "maintenance.auto=false", "commit", "--quiet",
            "--allow-empty", "--no-verify", "-F", "-")  # fmt: skip
    git.git(worktree, *args, input=message, env=git.identity_env(repo))


def _commit_here(
    worktree: Path, job: WorkerJob, repo: Path, index: Mapping[str, tuple[str, str] | None],
    message: str,
) -> bool:  # fmt: skip
    """The commit `git commit` would make on the base, without a process: the base's tree with
    the index's version of each changed path, the commit object, the branch moved from the base
    (its reflog left alone, HEAD's appended to as git does). False when git must do it: a hook
    that runs on commit, signing, a ref or object that is not in plain files."""
    if worktrees.hooks_may_write(worktree):
        return False
    tree = objects.edited_tree(worktree, job.base, index)
    env = git.identity_env(repo)
    commit = objects.commit(worktree, tree, [job.base], message, env=env) if tree else None
    if commit is None:
        return False
    admin = _admin_dir(worktree)
    head_log = admin / "logs" / "HEAD"
    subject = message.split("\n", 1)[0]
    ref = f"refs/heads/{worktrees.branch_for(job.ticket.id)}"
    moved = git.move_ref(worktree, ref, commit, job.base, logs=[(head_log, False)],
                         message=f"commit: {subject}")  # fmt: skip
    return moved is True


def _index_changes(landing: list[_Entry]) -> dict[str, tuple[str, str] | None] | None:
    """What the index holds for each path that differs from HEAD (mode and object id, None
    where it is deleted), from `git status` when everything is staged; None otherwise."""
    changed: dict[str, tuple[str, str] | None] = {}
    for entry in landing:
        if entry.kind not in ("1", "2") or entry.xy[1] != "." or not entry.staged[1]:
            return None
        changed[entry.path] = None if entry.xy[0] == "D" else entry.staged
        if entry.old:
            changed[entry.old] = None
    return changed


def _index_after_add(
    worktree: Path, job: WorkerJob, landing: list[_Entry]
) -> dict[str, tuple[str, str] | None] | None:
    """After `add -A`: what the index file holds for each path the status listed (nothing
    else can differ from HEAD, the base); None when the file cannot tell."""
    paths = {e.path for e in landing} | {e.old for e in landing if e.old}
    return index_file.staged(_admin_dir(worktree) / "index", len(job.base) // 2, paths)


def _whitespace_cleaned(message: str) -> str:
    """The message as `git commit -F` keeps it (`--cleanup=whitespace`): no trailing blanks on
    a line, no leading or trailing empty lines, no two empty lines in a row, a final newline."""
    lines = [line.rstrip() for line in message.split("\n")]
    kept: list[str] = []
    for line in lines:
        if line or (kept and kept[-1]):
            kept.append(line)
    while kept and not kept[-1]:
        kept.pop()
    return "\n".join(kept) + "\n" if kept else ""


def _head(worktree: Path) -> str:
    """The worktree's HEAD commit (`git.worktree_head`), else asked of git."""
    return git.worktree_head(worktree, _admin_dir(worktree)) or git.git(
        worktree, "rev-parse", "HEAD"
    )


class NotLanded(Exception):
    """The worker's work cannot land as it is: `outcome` and the cause, raised from inside
    `collect`. Not a SageError on purpose: those mean sage could not collect (ERROR)."""

    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    """One record of `git status --porcelain=v2`."""

    kind: str  # "1" changed, "2" renamed, "u" unmerged, "?" untracked, "!" ignored
    path: str
    submodule: str = "N..."  # "S<commit><modified><untracked>" for a submodule
    xy: str = ".."  # staged (index against HEAD), unstaged (worktree against the index)
    mode: str = ""  # what `add -A` would stage: the worktree's mode if unstaged, else the index's
    old: str = ""  # a rename's old path
    staged: tuple[str, str] = ("", "")  # the index's mode and object id


_FIELDS_BEFORE_PATH = {"1": 8, "2": 9, "u": 10}


def _status(worktree: Path) -> tuple[str, list[_Entry]]:
    """HEAD and every changed path, untracked and ignored ones too (an ignored folder as one
    entry), in one call. A rename's old path is a NUL field of its own (whatever it starts
    with, it is no record). Read from the files instead when all there is is staged
    (`_status_here`)."""
    here = _status_here(worktree)
    if here is not None:
        return here
    # --no-optional-locks: the commit after it refreshes and writes the index anyway
    out = git.git(worktree, "--no-optional-locks", "status", "--porcelain=v2", "--branch", "-z",
                  "--untracked-files=all", "--ignored=matching")  # fmt: skip
    fields = iter(out.split("\0"))
    head, entries = "", []
    for record in fields:
        kind = record[:1]
        if record.startswith("# branch.oid "):
            head = record.split()[2]
        elif kind in _FIELDS_BEFORE_PATH:
            parts = record.split(" ", _FIELDS_BEFORE_PATH[kind])
            xy, modes = parts[1], parts[3:6]
            mode = modes[2] if xy[1:] != "." else modes[1]
            old = next(fields, "") if kind == "2" else ""
            entries.append(_Entry(kind=kind, path=parts[-1], submodule=parts[2], xy=xy,
                                  mode=mode, old=old, staged=(modes[1], parts[7])))  # fmt: skip
        elif kind in ("?", "!"):
            entries.append(_Entry(kind=kind, path=record[2:]))
    return head, entries


def _status_here(worktree: Path) -> tuple[str, list[_Entry]] | None:
    """`_status` without a process, when the slot holds staged changes and nothing else
    (`index_file.status`): each a record as `git status` gives it, though a rename is its
    deletion and its addition (what lands is the same)."""
    head = git.worktree_head(worktree, _admin_dir(worktree))
    found = index_file.status(worktree, head) if head else None
    if head is None or found is None:
        return None
    entries = []
    for path, (before, staged) in sorted(found.items()):
        if before is None:
            xy = "A."
        elif staged is None:
            xy = "D."
        else:
            xy = "T." if int(before[0], 8) >> 12 != int(staged[0], 8) >> 12 else "M."
        staged = staged or ("000000", "0" * len(head))
        entries.append(_Entry(kind="1", path=path, xy=xy, mode=staged[0], staged=staged))
    return head, entries


_UNFINISHED = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or `git am`",
}


def _refuse_unfinished(worktree: Path, entries: list[_Entry]) -> None:
    """A merge left half done, unmerged files, nested repositories, submodule edits."""
    unmerged = _listed(e.path for e in entries if e.kind == "u")
    admin = _admin_dir(worktree)
    markers = files.present(admin, _UNFINISHED)
    if markers:
        conflicts = f" (unmerged: {unmerged})" if unmerged else ""
        what = _UNFINISHED[markers[0]]
        _fail(f"the worker exited in the middle of {what}{conflicts}: finish or abort it")
    if unmerged:
        _fail(f"the worker left unmerged files: {unmerged}: resolve them and `git add` them")
    nested = [e.path for e in entries if e.kind == "?" and e.path.endswith("/")]
    if nested:
        _fail(_nested_repository(nested[0]))
    inside = [e.path for e in entries if e.submodule[2:] not in ("..", "")]
    if inside:
        _fail(f"the worker changed files inside submodule {_listed(inside)}: they are not "
              "landed (a submodule's work lands as a commit in its own repository)")  # fmt: skip
    _refuse_unseen_submodule_writes(worktree)


def _nested_repository(path: str) -> str:
    return (
        f"{path} is a git repository of its own (as `git init` or `cargo new` make): it would "
        f"land as a link to a commit that exists only in the worktree; remove {path}.git "
        "or add it as a submodule"
    )


def _refuse_unseen_submodule_writes(worktree: Path) -> None:
    """Files written into a submodule folder that is not checked out: git cannot see them."""
    for path in _submodule_paths(worktree):
        folder = worktree / path
        if folder.is_dir() and not (folder / ".git").exists() and any(folder.iterdir()):
            _fail(f"the worker wrote into {path}/, a submodule that is not checked out in the "
                  "worktree: git cannot see those files, so they cannot land")  # fmt: skip


def _submodule_paths(worktree: Path) -> list[str]:
    if not (worktree / ".gitmodules").is_file():
        return []
    done = git.run(
        worktree, "config", "-f", ".gitmodules", "--get-regexp", r"^submodule\..*\.path$"
    )
    return [line.split(" ", 1)[1] for line in done.stdout.splitlines() if " " in line]


def _admin_dir(worktree: Path) -> Path:
    """The worktree's own git dir, from its `.git` file (checked to be sage's before this)."""
    admin = git.linked_git_dir(worktree)
    if admin is None:
        raise SageError(f"{worktree}/.git no longer links the worktree to its git dir")
    return admin


def _own(job: WorkerJob) -> tuple[str, ...]:
    """Paths in the worktree sage writes itself and so never lands: the index (and its lock),
    the early-warning file. The run state is outside every worktree (`Project.state_dir`), and
    the rest of `.sage/` is the project's: it lands like any file."""
    return (job.index_path, f"{job.index_path}.lock", WARNINGS_FILE)


def _is_kept_out(path: str, job: WorkerJob) -> bool:
    return any(path == own or path.startswith(own.rstrip("/") + "/") for own in _own(job))


def _keep_out(
    worktree: Path, job: WorkerJob, head: str, entries: list[_Entry]
) -> tuple[list[str], bool]:
    """Take sage's own files out of what lands (the worker's commits too); say which, and
    whether any tracked one was put back as it was in the base."""
    mine = [e for e in entries if e.kind != "!" and _is_kept_out(e.path, job)]
    tracked = [e.path for e in mine if e.kind in _FIELDS_BEFORE_PATH]  # staged, maybe
    if head != job.base:
        own = (f":(literal){path}" for path in _own(job))
        diff = ("diff", "--name-only", "-z", "--no-renames", job.base, "HEAD", "--", *own)
        tracked += [p for p in git.git(worktree, *diff).split("\0") if p]
    restore = ("restore", f"--source={job.base}", "--staged", "--worktree", "--")
    for path in dict.fromkeys(tracked):  # one by one: a path in neither base nor index fails
        git.run(worktree, *restore, f":(literal){path}")
    kept = sorted(({e.path for e in mine} | set(tracked)) - {WARNINGS_FILE})
    if kept:
        note = f"not landed: {_listed(kept)} (sage writes its index itself)"
        _log(job.log, f"sage: {note}\n")
        notes = _NOTES.get()
        if notes is not None:
            notes.append(note)
    return kept, bool(tracked)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Change:
    path: str
    mode: str  # the new mode: 160000 is a link to a commit (a submodule)


def _staged(worktree: Path, base: str) -> list[_Change]:
    """What would land: the index (worker's commits and leftovers) against the base."""
    out = git.git(worktree, "diff", "--cached", "--raw", "-z", "--no-renames", base)
    fields = out.split("\0")
    return [
        _Change(path=path, mode=meta.split(" ")[1])
        for meta, path in zip(fields[0::2], fields[1::2], strict=False)
        if meta.startswith(":")
    ]


def _known_changes(landing: list[_Entry]) -> list[_Change] | None:
    """What would land, read from `git status` alone when HEAD is the base: after `add -A`
    every listed path differs from the base, unless a path both staged and changed again may
    be back to the base's content (or an untracked file stands where a deletion is staged).
    Then None: ask git."""
    deleted = {e.path for e in landing if e.xy[:1] == "D"}
    if any("." not in e.xy or (e.kind == "?" and e.path in deleted) for e in landing):
        return None
    changes = [_Change(path=e.path, mode=e.mode) for e in landing]  # untracked: no mode, no link
    return changes + [_Change(path=e.old, mode="000000") for e in landing if e.old]


def _marked_files(worktree: Path, base: str) -> list[str]:
    """Files whose added lines open and close a conflict (`<<<<<<< ` … `>>>>>>> `). Both ends,
    so a reStructuredText `=======` underline or one quoted marker is not taken for one."""
    diff = ("-c", "core.quotePath=false", "diff", "--cached", "-U0", "--no-color",
            "--no-ext-diff", "--no-textconv", "--no-renames", base)  # fmt: skip
    seen: dict[str, set[str]] = {}
    path, header = "", False
    for line in git.git(worktree, *diff).splitlines():
        if line.startswith(("diff --git ", "@@ ")):
            header = line.startswith("diff")
        elif header and line.startswith("+++ "):  # in a hunk, `+++` is an added "++" line
            path = line[4:].removeprefix("b/")
        elif line.startswith(("+<<<<<<<", "+>>>>>>>")) and line[8:9] in (" ", ""):
            seen.setdefault(path, set()).add(line[1])
    return [path for path, ends in seen.items() if ends == {"<", ">"}]


def _may_have_markers(worktree: Path, changes: list[_Change]) -> bool:
    """Whether any changed file holds both conflict-marker lines now (cheap: no git call)."""
    for change in changes:
        try:
            text = files.read_bytes(worktree / change.path)
        except OSError:
            continue
        if b"\n<<<<<<<" in b"\n" + text and b"\n>>>>>>>" in b"\n" + text:
            return True
    return False


def _refuse_unlandable(worktree: Path, base: str, changes: list[_Change]) -> None:
    """Links to nested repositories and unresolved conflict markers never land."""
    links = [c.path for c in changes if c.mode == "160000"]
    known = set(_submodule_paths(worktree)) if links else set()
    for path in links:
        if path not in known:
            _fail(
                f"{path} is a link to a nested git repository, not a submodule: its commit "
                "exists only in the worktree; remove its .git or add it as a submodule"
            )
    if not changes or not _may_have_markers(worktree, changes):
        return
    marked = _marked_files(worktree, base)
    if marked:
        _fail(f"conflict markers in {_listed(marked)}: the worker left a merge unresolved")


def _nothing_to_land(kept_out: list[str]) -> str:
    also = f" ({_listed(kept_out)} are sage's own files)" if kept_out else ""
    return (
        f"the worker exited 0 and left nothing to land{also}; if that is fine for this "
        'ticket, set "allow_empty": true on it'
    )


def _fail(detail: str) -> NoReturn:
    raise NotLanded(Outcome.FAILED, detail)


def _listed(paths: Iterable[str], most: int = 5) -> str:
    items = list(paths)
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _log(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def _attempt_output(job: WorkerJob, limit: int = 4 << 20) -> str:
    """What the worker printed in this attempt: the log after the attempt's `=== sage:` line."""
    try:
        with open(job.log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(job.log) - limit))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    marker = f"=== sage: {job.ticket.id} attempt {job.attempt}: "
    start = text.rfind(marker)
    return text[text.find("\n", start) + 1 :] if start >= 0 else text


class _Watch:
    """Asked while an agent runs (proc.run_logged's `watch`): has it printed that its run can
    only end badly (`Agent.hopeless`)? Reads only what the log gained since the last look."""

    WINDOW = 64 << 10  # characters of the latest output looked at

    def __init__(self, agent: agents.Agent, log: Path) -> None:
        self.agent, self.log, self.text = agent, log, ""
        try:
            self.offset = os.path.getsize(log)  # after this attempt's `=== sage:` line
        except OSError:
            self.offset = 0

    @classmethod
    def of(cls, job: WorkerJob) -> _Watch | None:
        agent = agents.detect(job.argv)
        return cls(agent, job.log) if agent and agent.retries_for else None

    def __call__(self) -> bool:
        try:
            with open(self.log, "rb") as handle:
                handle.seek(self.offset)
                new = handle.read()
        except OSError:
            return False
        if not new:
            return False
        self.offset += len(new)
        self.text = (self.text + new.decode(errors="replace"))[-self.WINDOW :]
        return self.agent.hopeless(self.text) is not None


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log) - 2048))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [line for line in lines if not line.startswith("=== sage:")]
    return f": {useful[-1][:200]}" if useful else ""
