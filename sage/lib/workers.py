"""One worker run: prepare the worktree, run the argv with a timeout, collect its commits."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sage.lib import agents, git, proc, worktrees
from sage.lib.agent_output import Verdict
from sage.lib.outcomes import Outcome, Usage

__all__ = ["Outcome", "Usage", "Verdict", "WorkerJob", "WorkerResult"]
from sage.lib.errors import SageError
from sage.lib.tickets import Ticket

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
    env: Mapping[str, str] = field(default_factory=dict)  # [agents.<name>] env


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


def context_text(ticket: Ticket, raw: dict[str, object], notes: str | None) -> str:
    """What the worker is told: the ticket's markdown (if any) and its index entry."""
    head = f"# {ticket.id}: {ticket.title}\n\n"
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
            "SAGE_BASE": job.base,
            **job.env,
        }
    )


def run(
    repo: Path,
    worktree: Path,
    job: WorkerJob,
    *,
    on_start: Callable[[int], None] | None = None,
    on_exit: Callable[[], None] | None = None,
) -> WorkerResult:
    """Fresh worktree from `job.base`, run the worker in it, commit what it left behind.

    `on_exit` hears the moment a successful worker's process is gone, before its work is
    collected (so its slot can take the next ticket).
    """
    branch = worktrees.branch_for(job.ticket.id)
    worktrees.create(repo, worktree, branch, job.base)
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
    )
    if on_exit and done.returncode == 0 and not done.timed_out:
        on_exit()  # a failure is reported at once anyway; success still needs collecting
    return _result(repo, worktree, job, done, branch)


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
        head = collect(worktree, job)
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
    said = agent.read(done.returncode, _attempt_output(job)) if agent else None
    if done.returncode == TEMPFAIL:
        wait = said.retry_after if said else None
        detail = said.detail if said and said.detail else "exit 75: temporary failure"
        usage = said.usage if said else None
        return Verdict(outcome=Outcome.THROTTLED, detail=detail, retry_after=wait, usage=usage)
    return said


def collect(worktree: Path, job: WorkerJob) -> str:
    """Commit leftovers as `<ID>: <title>` with a Sage-Ticket trailer; drop `.sage/` edits.

    Few git calls on purpose: this runs once per ticket (status, add, commit, rev-parse).
    """
    ticket = job.ticket
    head, dirty = _status(worktree)
    if head != job.base and _touches_sage(worktree, job.base):
        restore = ("restore", f"--source={job.base}", "--staged", "--worktree", "--", ".sage")
        if git.run(worktree, *restore).returncode != 0:  # .sage/ absent from the base
            git.git(worktree, "rm", "-r", "-q", "--ignore-unmatch", "--", ".sage")
        _log(job.log, "sage: changes under .sage/ are not landed (the index is sage's to write)\n")
        dirty = True
    if dirty:
        git.git(worktree, "add", "-A", "--", ".", ":(exclude).sage")
    if not dirty and head != job.base:
        return head  # the worker committed all of its work itself
    message = f"{ticket.id}: {ticket.title}\n\nSage-Ticket: {ticket.id}\n"
    args = ("commit", "--quiet", "--allow-empty", "--no-verify", "-F", "-")
    git.git(worktree, *args, input=message, env=git.identity_env(worktree))
    return git.git(worktree, "rev-parse", "HEAD")


def _status(worktree: Path) -> tuple[str, bool]:
    """HEAD and whether anything outside `.sage/` is modified or untracked, in one call."""
    out = git.git(worktree, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all")
    head, dirty = "", False
    for record in out.split("\0"):
        if record.startswith("# branch.oid "):
            head = record.split()[2]
        elif record and not record.startswith("#") and not _under_sage(record):
            dirty = True
    return head, dirty


_PATH_FIELD = {"1": 8, "2": 9, "u": 10}  # porcelain v2: fields before the path


def _under_sage(record: str) -> bool:
    fields = _PATH_FIELD.get(record[0])
    path = record.split(" ", fields)[fields] if fields else record[2:]
    return path == ".sage" or path.startswith(".sage/")


def _touches_sage(worktree: Path, base: str) -> bool:
    return bool(git.git(worktree, "diff", "--name-only", base, "HEAD", "--", ".sage"))


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


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log) - 2048))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [line for line in lines if not line.startswith("=== sage:")]
    return f": {useful[-1][:200]}" if useful else ""
