"""Ticket worktrees: `<worktrees dir>/<ID>` on branch `sage/<ID>`, made fresh from a base commit;
and worker slots, which keep one worktree each across tickets."""

from __future__ import annotations

import filecmp
import functools
import json
import os
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage.lib import files, git, index_file, objects, proc
from sage.lib.config import Config
from sage.lib.errors import GitError, SageError

BRANCH_PREFIX = "sage/"  # every ticket's branch, and only theirs


def branch_for(ticket_id: str) -> str:
    return f"{BRANCH_PREFIX}{ticket_id}"


def create(repo: Path, path: Path, branch: str, base: str) -> None:
    """A fresh worktree at `path`, `branch` reset to `base` (a dead run's leftovers removed)."""
    if path.exists():
        remove(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # -f also reuses a path that is registered but gone (a worker deleted it, a crash)
    git.git(repo, "worktree", "add", "--quiet", "-f", "-B", branch, str(path), base)


def remove(repo: Path, path: Path) -> None:
    """Remove a worktree and its registration; tolerate one a worker already deleted."""
    if git.run(repo, "worktree", "remove", "--force", "--force", str(path)).returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        git.run(repo, "worktree", "prune")


def delete_branch(repo: Path, branch: str) -> None:
    """Delete a branch even where a worker slot still has it checked out (its next ticket
    switches the slot), which `git branch -D` refuses."""
    git.run(repo, "update-ref", "-d", f"refs/heads/{branch}")


def keep_unlanded(repo: Path, branch: str, target: str, label: str) -> str | None:
    """Rename a branch that holds commits not on `target`, so a re-run cannot overwrite them."""
    tip = git.rev_parse(repo, f"refs/heads/{branch}")
    if tip is None or git.is_ancestor(repo, tip, target):
        return None
    kept = f"{branch}-{label}"
    git.git(repo, "branch", "-M", branch, kept)
    return kept


def repair(repo: Path) -> list[str]:
    """Drop registrations a `git worktree add` killed halfway left with an empty `commondir`:
    git cannot read them, so every worktree command (prune too) fails until they go. Only git's
    bookkeeping is removed; the worktree's files are left alone."""
    admin = git.common_dir(repo) / "worktrees"
    broken = [
        entry
        for entry in (sorted(admin.iterdir()) if admin.is_dir() else [])
        if (entry / "commondir").is_file() and not (entry / "commondir").read_bytes().strip()
    ]
    for entry in broken:
        shutil.rmtree(entry, ignore_errors=True)
    return [entry.name for entry in broken]


# Worker slots: slot k keeps one worktree, `<dir>/slot-<k>`, across the tickets it runs.

SLOT_STATE = "sage-slot.json"  # in the slot's git admin dir, so it goes when the worktree goes
# A git killed mid-command leaves these; a worker can leave an operation half done.
_STUCK = ("index.lock", "HEAD.lock", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD",
          "rebase-merge", "rebase-apply", "BISECT_LOG")  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotSetup:
    """The `[worktree]` config: how a slot is set up once and what survives between tickets."""

    setup: tuple[str, ...] = ()  # argv, run in the slot
    setup_when: tuple[str, ...] = ()  # tracked paths whose blob change reruns setup
    copy: tuple[str, ...] = ()  # untracked (and ignored) paths copied from the user's checkout
    keep: tuple[str, ...] = ()  # gitignore-style patterns the clean leaves alone

    @classmethod
    def of(cls, config: Config) -> SlotSetup:
        return cls(setup=config.setup, setup_when=config.setup_when, copy=config.copy,
                   keep=config.keep)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """What preparing a slot did, so setup time can be reported apart from work time."""

    path: Path
    branch: str
    created: bool  # a new worktree: the slot's first ticket, or a broken one replaced
    recovered: str = ""  # why the old worktree was replaced ("" when none was broken)
    setup_ran: bool = False
    setup_reason: str = ""  # "created", "changed: package-lock.json", "not set up yet"
    setup_seconds: float = 0.0
    seconds: float = 0.0  # all of it, setup included


def slot_path(slots_dir: Path, slot: int) -> Path:
    return slots_dir / f"slot-{slot}"


# Slots `make_slots` made, not yet used: their first `prepare_slot` says so (`created`).
_MADE: set[str] = set()
# What `make_slots` checks out in all: about what git writes while a run checks its index
# (a tenth of a second), so that the wait for them all costs the first ticket nothing.
_AHEAD_FILES = 400


def make_slots(repo: Path, slots_dir: Path, count: int, base: str) -> Callable[[], None]:
    """Start making slots 0 to `count - 1` that do not exist yet, detached at `base`, and
    return the call that waits until they are made (`nothing_made` when none is). The caller
    goes on meanwhile: a run checks its index and graph while its first tickets' slots are
    checked out (on a second core; they would otherwise be made one at a time as those
    tickets start, on theirs).
    git's worktree commands take turns (see `git._turns`): one `sh` runs them one after the
    other, a process no thread of this one has to drive. Only as many as a checkout of about
    `_AHEAD_FILES` files in all: the caller waits for them all, where its first ticket would
    have waited for one (a repository of thousands of files is left to its first tickets).

    The made slots are noted tidy (a fresh checkout has nothing untracked: its first ticket
    switches it without a process, see `_switched_refs_only`) and as created. When any
    `worktree add` fails none is: each slot is then checked, switched or made again as it is
    first used (`prepare_slot`), as if this had not run. Slots with setup to run or files to
    copy are left to their first ticket (`runs.first_slots`)."""
    tracked = index_file.tracked_count(repo)
    fit = 0 if tracked is None else _AHEAD_FILES // max(1, tracked)
    paths = [p for p in (slot_path(slots_dir, k) for k in range(count)) if not p.exists()]
    paths = paths[:fit]
    if not paths:
        return nothing_made
    slots_dir.mkdir(parents=True, exist_ok=True)
    adds = [["git", "-C", str(repo), "worktree", "add", "--quiet", "-f", "--detach", str(p), base]
            for p in paths]  # fmt: skip
    try:
        making = proc.spawn(["sh", "-c", " && ".join(shlex.join(a) for a in adds)])
    except OSError:  # no `sh`: each slot is made by its first ticket
        return nothing_made

    def wait() -> None:
        if making.wait() == 0:
            for path in paths:
                note_tidy(path, tidy=True)
                _MADE.add(str(path))

    return wait


def prepare_slot(
    repo: Path,
    slots_dir: Path,
    slot: int,
    ticket_id: str,
    base: str,
    setup: SlotSetup = SlotSetup(),
    *,
    log: Path | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Slot:
    """Make slot `slot`'s worktree ready for `ticket_id`: on branch `sage/<ID>` at `base`,
    exactly base's tracked files and nothing else but the slot's setup (see below).

    The first call for a slot creates `<slots_dir>/slot-<slot>` (`git worktree add`, unless
    `make_slots` did), copies `setup.copy` from `repo` and runs `setup.setup` in it. Later
    calls reuse it: index flags a worker set (assume-unchanged, skip-worktree) are cleared,
    `git checkout --force -B sage/<ID> <base>` rewrites only the files that differ, and
    `git clean -ffdx` removes everything untracked or ignored except what setup produced (the
    ignored paths it left), the copies and `setup.keep` (no clean when the collect of the
    slot's last ticket saw nothing untracked or ignored, see `note_tidy`, and no hook could
    have written there since). Copies are refreshed where they differ from the user's; setup
    runs again when a `setup.setup_when` file's blob differs from the last setup's. A slot
    that cannot be reused (no `.git` file, one pointing elsewhere, a stale `index.lock`, a
    merge or rebase left half done), or one git refuses to switch, is removed and created
    again. The previous ticket's branch is left as it is (the queue lands from it); the slot
    keeps `sage/<ID>` checked out until its next ticket.

    Setup runs as a worker does: in a process group of its own (a terminal's Ctrl+C is sage's
    to act on, and a graceful stop lets it finish), its output appended to `log` (else to
    `sage-setup.log` in the slot's git dir), `on_start` told its group (to be killed by a second
    Ctrl+C, or by the next run if sage dies).

    One caller per slot at a time (a slot is one worker). Raises SageError when setup fails or
    leaves anything git sees (the slot is kept and sets up again next time), or a copied path is
    not ignored (it would land).
    """
    started = time.monotonic()
    path, branch = slot_path(slots_dir, slot), branch_for(ticket_id)
    with git.one_look():  # setup, below, may change what git reads
        problem = _switch_slot(repo, path, branch, base, setup)
    created = _made_ahead(path) or bool(problem)
    reason = _setup_reason(path, setup, created=created)
    setup_seconds = _run_setup(path, slot, setup, log, on_start) if reason else 0.0
    return Slot(path=path, branch=branch, created=created,
                recovered="" if problem in ("", "missing") else problem,
                setup_ran=bool(reason), setup_reason=reason, setup_seconds=setup_seconds,
                seconds=time.monotonic() - started)  # fmt: skip


def _switch_slot(repo: Path, path: Path, branch: str, base: str, setup: SlotSetup) -> str:
    """The slot on `branch` at `base`, switched or made anew, the copies in; why it was made
    anew ("missing", a problem with it), or "" if switched."""
    _drop_stale_lock(repo, branch)
    noted = _noted_tidy(path)
    problem = slot_problem(repo, path) or _switched(
        path, branch, base, setup, tidy=noted and not hooks_may_write(path)
    )
    if problem:
        _recreate(repo, path, branch, base)
        _check_copies_ignored(repo, path, setup.copy)
    _copy_in(repo, path, setup.copy)
    return problem


# When this process began: a lock file older than that on a ticket's own branch is no lock of
# this run's (one stream per repository, one runner per ticket), but one a killed run left.
_SINCE = time.time()


def _drop_stale_lock(repo: Path, branch: str) -> None:
    """Remove `refs/heads/<branch>.lock` when a run that was killed left it: git would refuse
    the branch until then, and the ticket would fail every attempt."""
    lock = git.shared_dir(repo) / "refs" / "heads" / f"{branch}.lock"
    try:
        if lock.stat().st_mtime < _SINCE:
            lock.unlink()
    except FileNotFoundError:
        pass


def slot_problem(repo: Path, path: Path) -> str:
    """Why the worktree at `path` cannot be reused as it is ("missing" if absent), or ""."""
    if not path.exists():
        return "missing"
    admin = git.linked_git_dir(path)
    if admin is None:
        return "no .git file"
    if not _same(admin.parent, _common(repo) / "worktrees"):
        return "its .git file points elsewhere"
    registered = _registered_at(admin)
    if registered is None or not _same(registered, path / ".git"):
        return "not registered with the repository"
    stuck = files.present(admin, _STUCK)
    return f"left mid-operation ({stuck[0]})" if stuck else ""


def _same(one: Path, other: Path) -> bool:
    """The same place: the same path (as git writes them: absolute, resolved), else the same
    once both are resolved (a resolve is a few lstat calls per component)."""
    return one == other or one.resolve() == other.resolve()


def _registered_at(admin: Path) -> Path | None:
    try:
        text = (admin / "gitdir").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return _absolute(admin, text)


def _absolute(folder: Path, text: str) -> Path:
    link = Path(text)
    return link if link.is_absolute() else (folder / link).resolve()


@functools.lru_cache(maxsize=16)
def _common(repo: Path) -> Path:
    return git.common_dir(repo)


def _recreate(repo: Path, path: Path, branch: str, base: str) -> None:
    if path.exists() or path.is_symlink():
        remove(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    git.git(repo, "worktree", "add", "--quiet", "-f", "--detach", str(path), base)
    # not `worktree add -B`: it refuses a branch another slot has checked out (a retry moved)
    admin = None if hooks_may_write(path) else git.linked_git_dir(path)  # a post-checkout hook runs
    if admin is None or not _on_new_branch(path, admin, branch, base, was=base, at=base):
        git.git(path, "checkout", "--quiet", "--ignore-other-worktrees", "-B", branch, base)


def _switched(path: Path, branch: str, base: str, setup: SlotSetup, *, tidy: bool) -> str:
    """Switch a healthy-looking slot; "" when done, else why it must be recreated (a damaged
    index, a ref lock a killed git left: whatever git refuses, a fresh worktree cures)."""
    try:
        _switch(path, branch, base, None if tidy else _excludes(path, setup))
    except GitError as exc:
        return f"could not switch: {exc.message}"
    except OSError as exc:
        return f"could not switch: {exc}"
    return ""


# For sage's own moves of a slot's branch: a `sage/<ID>` branch lives until its ticket lands, and
# a reflog for it is two more files to create and delete per ticket. The slot's HEAD reflog,
# which already exists, is still written (see `head_log`).
NO_REFLOG = ("-c", "core.logAllRefUpdates=false")


def _switch(path: Path, branch: str, base: str, excludes: list[str] | None) -> None:
    """Checkout, then `git clean` unless `excludes` is None (the slot is known to be tidy)."""
    _clear_flags(path, base)
    if excludes is None and _switched_refs_only(path, branch, base):
        return
    args = (*NO_REFLOG, "checkout", "--quiet", "--force", "--ignore-other-worktrees", "-B",
            branch, base)  # fmt: skip
    git.git(path, *args)
    if excludes is not None:
        git.git(path, "clean", "-ffdxq", *(f"--exclude={e}" for e in excludes))


def _switched_refs_only(path: Path, branch: str, base: str) -> bool:
    """A tidy slot switched without a process: the files that differ between its HEAD (a
    branch, or detached) and `base` (none when its last ticket landed as it was, and nothing
    else did) moved to `base` (`index_file.fast_forward`), then what `git checkout -B`
    writes, the new branch at `base` and HEAD naming it. False: git switches (an error once
    files moved propagates: the slot is then made again)."""
    admin = git.linked_git_dir(path)
    head = _read(admin / "HEAD") if admin else None
    if admin is None or head is None:
        return False
    if head.startswith("ref: refs/heads/"):
        current_ref = head.removeprefix("ref: ").strip()
        current, was = git.rev_parse(path, current_ref), current_ref.removeprefix("refs/heads/")
    elif git.is_object_id(head.strip()):  # detached (as `make_slots` leaves a slot)
        current = was = head.strip()
    else:
        return False
    tree = objects.tree_id(path, current) if current else None
    if current is None or tree is None:
        return False
    if tree != objects.tree_id(path, base):
        paths = objects.changed_paths(path, current, base)
        if paths is None or not index_file.fast_forward(path, current, base, paths, in_place=True):
            return False
    return _on_new_branch(path, admin, branch, base, was=was, at=current)


def _on_new_branch(path: Path, admin: Path, branch: str, base: str, *, was: str, at: str) -> bool:
    """What `git checkout -B <branch> <base>` writes once the slot's files are at `base`, for a
    branch that does not exist yet: the branch at `base` and HEAD naming it (HEAD's reflog says
    it moved from `was`, commit `at`). False: git must do it (the branch exists, a lock is in
    the way, a hook would run), maybe with the branch made."""
    ref = f"refs/heads/{branch}"
    if git.move_ref(path, ref, base, "", logs=[]) is not True:
        return False
    what = f"checkout: moving from {was} to {branch}"
    return git.point_head(path, admin / "HEAD", ref, old=at, new=base, message=what)


# Slots whose last ticket's collect saw nothing untracked or ignored (`note_tidy`): switching
# one rewrites every tracked file that differs, so no `git clean` is needed after it. Known to
# this process only (a new run cleans each slot once), and used once.
_TIDY: set[str] = set()
# Hooks that sage's own git calls in a slot (status, add, commit, checkout) may run, which
# could leave files after the collect looked (`--no-verify` skips pre-commit and commit-msg).
_HOOKS_IN_SLOT = ("post-checkout", "post-commit", "prepare-commit-msg", "reference-transaction",
                  "post-index-change")  # fmt: skip


def note_tidy(path: Path, *, tidy: bool) -> None:
    """The collect of the ticket in the slot at `path` found nothing untracked or ignored
    (`tidy`), or did not look."""
    if tidy:
        _TIDY.add(str(path))
    else:
        _TIDY.discard(str(path))


def nothing_made() -> None:
    """The wait for slots when none is being made."""


def _made_ahead(path: Path) -> bool:
    """Whether `make_slots` made the slot at `path` for this use; asked once."""
    made = str(path) in _MADE
    _MADE.discard(str(path))
    return made


def _noted_tidy(path: Path) -> bool:
    """Whether the last collect in the slot at `path` found it tidy; asked once per note."""
    noted = str(path) in _TIDY
    _TIDY.discard(str(path))
    return noted


def hooks_may_write(path: Path) -> bool:
    """Whether a hook sage's own git calls in the slot may run is installed."""
    hooks = git.hooks_dir(path)
    return any(os.access(hooks / name, os.X_OK) for name in _HOOKS_IN_SLOT)


def _clear_flags(path: Path, base: str) -> None:
    """Index entries a worker marked assume-unchanged or skip-worktree: checkout would leave
    them as they are and hide the next ticket's edits from status. Read from the index file
    (`ls-files -v` when it is a kind this does not read); update-index applies one such option
    per path, hence one call per flag."""
    admin = git.linked_git_dir(path)
    flagged = index_file.flags(admin / "index", len(base) // 2) if admin else None
    assumed, skipped = flagged if flagged is not None else _listed_flags(path)
    for option, paths in (("--no-assume-unchanged", assumed), ("--no-skip-worktree", skipped)):
        if paths:
            git.git(path, "update-index", option, "-z", "--stdin", input="\0".join(paths))


def _listed_flags(path: Path) -> tuple[list[str], list[str]]:
    """Assume-unchanged (a lowercase tag) and skip-worktree (`S`, `s`) paths, asked of git."""
    out = git.git(path, "ls-files", "-v", "-z")
    tags = [(e[0], e[2:]) for e in out.split("\0") if e]
    return [n for t, n in tags if t.islower()], [n for t, n in tags if t in "Ss"]


def _excludes(path: Path, setup: SlotSetup) -> list[str]:
    made = _read_state(path).get("keep", [])
    paths = [*setup.copy, *(p for p in made if isinstance(p, str))]
    return [*setup.keep, *(_anchored(p) for p in paths)]


def _anchored(path: str) -> str:
    """A literal path as a gitignore pattern matching that path only."""
    escaped = "".join(f"\\{c}" if c in "*?[]\\!#" else c for c in path.strip("/"))
    return f"/{escaped}" + ("/" if path.endswith("/") else "")


def _check_copies_ignored(repo: Path, path: Path, copies: tuple[str, ...]) -> None:
    if not copies:
        return
    done = git.run(path, "check-ignore", "-z", "--stdin", input="\0".join(copies))
    loose = sorted(set(copies) - set(done.stdout.split("\0")))
    if loose:
        remove(repo, path)  # so the next attempt checks again
        raise SageError(
            f"[worktree] copy: {', '.join(loose)} is not ignored by git",
            hint="add it to .gitignore: a copied file that git sees would land with the work",
        )


def _copy_in(repo: Path, path: Path, copies: tuple[str, ...]) -> None:
    for name in copies:
        source, target = repo / name, path / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
        elif source.is_file() and not (target.is_file() and filecmp.cmp(source, target, False)):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _setup_reason(path: Path, setup: SlotSetup, *, created: bool) -> str:
    if not setup.setup:
        return ""
    state = _read_state(path)
    if created or not state:
        return "created" if created else "not set up yet"
    was, now = state.get("blobs"), _blobs(path, setup.setup_when)
    was = was if isinstance(was, dict) else {}
    changed = [p for p in setup.setup_when if was.get(p) != now.get(p)]
    return f"changed: {', '.join(changed)}" if changed else ""


def _blobs(path: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Blob ids of `names` in the slot's index (just checked out: the base's)."""
    if not names:
        return {}
    out = git.git(path, "ls-files", "-s", "-z", "--", *names)
    entries = (e.split("\t", 1) for e in out.split("\0") if e)
    return {name: meta.split()[1] for meta, name in entries}


def _run_setup(
    path: Path, slot: int, setup: SlotSetup, log: Path | None,
    on_start: Callable[[int], None] | None,
) -> float:  # fmt: skip
    started = time.monotonic()
    state_file = _state_file(path)
    state_file.unlink(missing_ok=True)  # killed halfway: set up again next time
    log = log or state_file.with_name(SETUP_LOG)
    with open(log, "ab") as sink:
        sink.write(f"=== sage: slot {slot} setup: {shlex.join(setup.setup)}\n".encode())
        offset = sink.tell()
    env = proc.clean_env({"SAGE_SLOT": str(slot), "SAGE_WORKTREE": str(path)})
    done = proc.run_logged(setup.setup, cwd=path, env=env, log=log, on_start=on_start,
                           what="the setup")  # fmt: skip
    if done.returncode != 0:
        said = _tail(log, offset)
        raise SageError(
            f"[worktree] setup failed in {path} (exit {done.returncode})"
            + (f": {said}" if said else ""),
            hint=f"its output is in {log}; run {shlex.join(setup.setup)} there to see why",
        )
    state = {"blobs": _blobs(path, setup.setup_when), "keep": _setup_output(path)}
    state_file.write_text(json.dumps(state), encoding="utf-8")
    return time.monotonic() - started


SETUP_LOG = "sage-setup.log"


def _tail(log: Path, offset: int) -> str:
    """The last line the setup wrote (after `offset`), if any."""
    try:
        with open(log, "rb") as source:
            source.seek(offset)
            lines = source.read()[-4096:].decode("utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _setup_output(path: Path) -> list[str]:
    """The ignored paths setup left, kept from now on. Anything else it left git would see, and
    the worker's commit would land it: refused."""
    out = git.git(path, "status", "--porcelain=v1", "-z", "--ignored", "--untracked-files=normal")
    records = [r for r in out.split("\0") if r]
    seen = sorted(r[3:] if r[2:3] == " " else r for r in records if not r.startswith("!! "))
    if seen:
        raise SageError(
            f"[worktree] setup left files git sees in {path}: {', '.join(seen[:5])}",
            hint="what setup makes must be ignored (.gitignore) and leave tracked files alone, "
            "or it would land with the ticket's work",
        )
    return [r[3:] for r in records]


def _state_file(path: Path) -> Path:
    admin = git.linked_git_dir(path)
    if admin is None:
        raise SageError(f"{path} is not a worktree")
    return admin / SLOT_STATE


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_state_file(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Ownership:
    """What sage made: the worktree's `.git` link and its admin dir's pointer to the common dir.
    A worker can rewrite either (and then git in the worktree acts on another repository)."""

    link: str
    admin: Path
    commondir: str


def ownership(path: Path) -> Ownership:
    link = _read(path / ".git") or ""
    admin = git.git_dir_named(path, link) or path / ".git"
    return Ownership(link=link, admin=admin, commondir=_read(admin / "commondir") or "")


def taken_over(path: Path, branch: str, made: Ownership) -> str | None:
    """Why the worktree at `path` is no longer sage's worktree of `branch`, or None."""
    if _read(path / ".git") != made.link:
        return f"the worker rewrote its worktree's .git file (sage made it {made.link.strip()!r})"
    if _read(made.admin / "commondir") != made.commondir:
        return f"the worker rewrote {made.admin / 'commondir'}"
    head = (_read(made.admin / "HEAD") or "").strip().removeprefix("ref: ")
    if not head.startswith("refs/"):
        head = ""  # detached: HEAD holds a commit
    if head != f"refs/heads/{branch}":
        where = f"on {head.removeprefix('refs/heads/')}" if head else "detached"
        return f"the worker moved its worktree off {branch} (HEAD is {where})"
    return None


def head_log(made: Ownership) -> Iterator[str]:
    """The worktree's HEAD reflog, one line per move (empty if the worker removed it)."""
    yield from (_read(made.admin / "logs" / "HEAD") or "").splitlines()


def _read(path: Path) -> str | None:
    try:
        return files.read_text(path, errors="replace")
    except OSError:
        return None
