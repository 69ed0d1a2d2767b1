"""The one module that talks to git: plain argv for plumbing, GitPython where it reads well."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sage.lib import files, proc
from sage.lib.errors import GitError, NotARepository, RefRefused, SageError

FALLBACK_NAME = "sage"
FALLBACK_EMAIL = "sage@localhost"
TRAILER = "Sage-Ticket"
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeResult:
    """A merge computed without touching any working tree."""

    tree: str
    conflicts: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.conflicts


def git(
    repo: Path,
    *args: str,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run `git -C repo args…` and return stdout without its trailing newline."""
    argv = ["git", "-C", str(repo), *args]
    with _turns(args):
        done = proc.run(argv, check=check, input=input, env=proc.clean_env(env) if env else None)
    return done.stdout.rstrip("\n")


def run(
    repo: Path, *args: str, env: Mapping[str, str] | None = None, input: str | None = None
) -> proc.Result:
    """Like `git` but never raises: for commands whose exit code is the answer."""
    with _turns(args):
        argv = ["git", "-C", str(repo), *args]
        return proc.run(argv, check=False, input=input, env=proc.clean_env(env) if env else None)


def run_bytes(repo: Path, *args: str, input: bytes | None = None) -> proc.Output:
    """Like `run`, for commands whose input or output is file content (bytes)."""
    return proc.run_bytes(["git", "-C", str(repo), *args], input=input)


def read_blob(repo: Path, blob: str, *, path: str | None = None) -> bytes:
    """A blob's content; with `path`, as git writes it there (its filters and line endings)."""
    how = ("--filters", f"--path={path}") if path is not None else ("blob",)
    done = run_bytes(repo, "cat-file", *how, blob)
    if done.returncode != 0:
        raise GitError(["git", "cat-file", *how, blob], done.returncode, "", done.stderr)
    return done.stdout


def write_blob(repo: Path, data: bytes, *, path: str | None = None) -> str:
    """Store `data` as a blob, as `git add` would store it at `path` (as is without one)."""
    how = (f"--path={path}",) if path is not None else ("--no-filters",)
    done = run_bytes(repo, "hash-object", "-w", "--stdin", *how, input=data)
    if done.returncode != 0:
        raise GitError(["git", "hash-object", "-w", *how], done.returncode, "", done.stderr)
    return done.stdout.decode().strip()


def starts_blob(repo: Path, blob: str, path: str, file: Path) -> bool:
    """Whether `file` holds the beginning of `blob` as git writes it at `path`, but not all of
    it: a write that was cut short. Read piece by piece: the blob may be large."""
    argv = ["git", "-C", str(repo), "cat-file", "--filters", f"--path={path}", blob]
    with proc.stdout_of(argv) as theirs, open(file, "rb") as mine:
        while chunk := mine.read(1 << 20):
            if theirs.read(len(chunk)) != chunk:
                return False
        return bool(theirs.read(1))


def merge_file(
    mine: bytes, base: bytes, theirs: bytes, *, labels: tuple[str, str, str]
) -> tuple[bytes, int]:
    """`git merge-file`: the three-way merge of three contents and how many conflicts it left
    marked in it; -1 when git cannot merge them (binary files), with `mine` as the result."""
    with tempfile.TemporaryDirectory(prefix="sage-merge-") as tmp:
        names = []
        for name, data in zip(("mine", "base", "theirs"), (mine, base, theirs), strict=True):
            (Path(tmp) / name).write_bytes(data)
            names.append(str(Path(tmp) / name))
        flags = [flag for label in labels for flag in ("-L", label)]
        done = proc.run_bytes(["git", "merge-file", "-p", *flags, *names])
    if not 0 <= done.returncode <= 127:
        return mine, -1
    return done.stdout, done.returncode


_WORKTREE_TURNS = threading.Lock()


def _turns(args: Sequence[str]) -> AbstractContextManager[object]:
    """`git worktree add` writes its admin files one by one and `remove` deletes the shared
    folder once it is empty; a concurrent worktree (or branch) command trips over either
    ("failed to read .git/worktrees/X/commondir"). Sage's worker threads take turns."""
    return _WORKTREE_TURNS if args[:1] in (("worktree",), ("branch",)) else nullcontext()


@functools.cache
def version() -> tuple[int, ...]:
    try:
        out = proc.run(["git", "--version"]).stdout
    except SageError as exc:
        raise SageError("git is not installed", hint="install git 2.38 or newer") from exc
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(p) for p in match.groups(default="0")) if match else (0,)


def toplevel(path: Path) -> Path:
    """The top of the checkout `path` is in, asked of git once per path a process."""
    return _toplevel(os.fspath(path))


@functools.lru_cache(maxsize=64)
def _toplevel(path: str) -> Path:
    done = proc.run(["git", "-C", path, "rev-parse", "--show-toplevel"], check=False)
    if done.returncode != 0:
        raise NotARepository(
            f"not a git repository: {path}", hint="run sage inside a git repository (git init)"
        )
    return Path(done.stdout.strip())


def head_branch(checkout: Path) -> str | None:
    """The branch checked out at `checkout`'s top (`main`, not `refs/heads/main`), read from its
    HEAD file; asked of git when the file does not say it plainly. None when HEAD is detached."""
    admin = git_dir_of(checkout)
    try:
        head = _text(f"{admin}/HEAD") if admin else ""
    except (OSError, ValueError):
        head = ""
    if head.startswith("ref: refs/heads/") and not os.path.islink(f"{admin}/HEAD"):
        return head.removeprefix("ref: refs/heads/")
    if _HEX.fullmatch(head):
        return None
    named = git(checkout, "symbolic-ref", "--quiet", "HEAD", check=False)
    return named.removeprefix("refs/heads/") if named.startswith("refs/heads/") else None


def common_dir(repo: Path) -> Path:
    """The shared .git directory, the same from every worktree (hooks live there): read from
    the files of a checkout's top (its `.git` folder, or a linked worktree's link and its
    `commondir`) where they tell, else asked of git."""
    found = _common_dir_here(repo)
    if found is not None:
        return found
    out = git(repo, "rev-parse", "--git-common-dir")
    path = Path(out)
    return path if path.is_absolute() else (repo / path).resolve()


def _common_dir_here(top: Path) -> Path | None:
    admin = git_dir_of(top)
    if admin is None or not (admin / "HEAD").is_file():
        return None  # not a checkout's top (a folder in one), or no git dir where it points
    try:
        common = _text(f"{admin}/commondir")
    except FileNotFoundError:
        return admin.resolve()  # a repository's own .git, or a submodule's git dir
    except (OSError, ValueError):
        return None
    return (admin / common).resolve()


def worktree_head(worktree: Path, admin: Path) -> str | None:
    """The commit a worktree's HEAD names, read from its files (`admin`: its own git dir) where
    they tell: a detached HEAD, or a branch with a loose ref (the common dir's, as `commondir`
    names it); None else."""
    at = os.fspath(admin)
    try:
        head = _text(f"{at}/HEAD")
        if head.startswith("ref: "):
            common = _text(f"{at}/commondir")
            common = common if common.startswith("/") else f"{at}/{common}"
            head = _text(f"{common}/{head[5:]}")
    except (OSError, ValueError):
        return None
    return head if _HEX.fullmatch(head) else None


def git_dir_of(checkout: Path) -> Path | None:
    """A checkout top's own git dir: its `.git` folder, or the one its `.git` file links to;
    None when it has neither (a folder inside a checkout, no repository)."""
    dot = checkout / ".git"
    return dot if dot.is_dir() else linked_git_dir(checkout)


def linked_git_dir(checkout: Path) -> Path | None:
    """The git dir a linked worktree's `.git` file names ("gitdir: <path>", made absolute);
    None when `.git` is missing, a folder (a repository of its own), or no such link."""
    try:
        text = _text(f"{checkout}/.git")
    except (OSError, ValueError):
        return None
    return git_dir_named(checkout, text)


def git_dir_named(checkout: Path, link: str) -> Path | None:
    """The git dir that the text of `checkout`'s `.git` file names ("gitdir: <path>", made
    absolute); None when it names none."""
    text = link.strip()
    if not text.startswith("gitdir: "):
        return None
    named = Path(text[len("gitdir: ") :])
    return named if named.is_absolute() else (checkout / named).resolve()


def _text(path: str) -> str:
    """A small file's text, stripped (a ref, HEAD, a link to a folder)."""
    return files.read_text(path).strip()


def shared_dir(repo: Path) -> Path:
    """`common_dir`, asked of git once per path."""
    return _common_dir_cached(str(repo))


def rev_parse(repo: Path, rev: str) -> str | None:
    """The commit `rev` names, or None. A branch (or any shared `refs/…`) whose loose ref file
    holds a commit is read from the files (no git process, on every landing)."""
    known = _ref_tip(repo, rev)
    if known is not None:
        return known
    done = run(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return done.stdout.strip() if done.returncode == 0 else None


_PER_WORKTREE = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")


def _ref_tip(repo: Path, ref: str) -> str | None:
    """The commit a full ref points to, from its loose file in the common dir; None when the
    files cannot tell for sure (not a shared ref, reftable, packed or missing, symbolic, or not
    a commit object read in process): then git answers."""
    if not ref.startswith("refs/") or ref.startswith(_PER_WORKTREE) or ref.endswith(".lock"):
        return None
    if "/." in ref or ".." in ref:
        return None
    common = _common_dir_cached(str(repo))
    try:
        sha = _text(f"{common}/{ref}")
    except (OSError, ValueError):
        return None
    if not _HEX.fullmatch(sha) or os.path.exists(f"{common}/reftable"):
        return None
    return (
        sha if _is_loose_commit(common / "objects", sha) or _is_packed_commit(repo, sha) else None
    )


def _is_packed_commit(repo: Path, sha: str) -> bool:
    """A commit in a pack (a clone's, a gc's: the base of a run's first tickets), read in
    process as `objects` reads everything else (None there: git answers)."""
    from sage.lib import objects  # it reads through this module: asked only once both exist

    found = objects.reader(repo)(sha)
    return found is not None and found[0] == "commit"


def _is_loose_commit(objects: Path, sha: str) -> bool:
    try:
        fd = os.open(f"{objects}/{sha[:2]}/{sha[2:]}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            start = zlib.decompressobj().decompress(os.read(fd, 64), 16)
        finally:
            os.close(fd)
    except (OSError, zlib.error):
        return False
    return start.startswith(b"commit ")


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    return run(repo, "merge-base", "--is-ancestor", ancestor, descendant).returncode == 0


def contains(repo: Path, ref: str, commit: str) -> bool:
    """Whether `ref` exists and its tip has `commit` in its history: the target still holds
    what sage landed there last (False for a missing ref or an unknown commit)."""
    tip = rev_parse(repo, ref)
    return tip is not None and is_ancestor(repo, commit, tip)


def branch_heads(repo: Path, *, skip: str = "") -> dict[str, str]:
    """Every local branch and its tip, but those under `skip` (a ref prefix)."""
    out = git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
    rows = (line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {ref: tip for tip, ref in rows if not (skip and ref.startswith(skip))}


def identity_env(repo: Path) -> dict[str, str]:
    """Author/committer variables for sage's own commits when git has no identity configured."""
    return dict(_identity(str(repo)))


@functools.lru_cache(maxsize=64)
def _identity(repo: str) -> tuple[tuple[str, str], ...]:
    if run(Path(repo), "var", "GIT_COMMITTER_IDENT").returncode == 0:
        return ()
    return tuple(
        {
            "GIT_AUTHOR_NAME": FALLBACK_NAME,
            "GIT_AUTHOR_EMAIL": FALLBACK_EMAIL,
            "GIT_COMMITTER_NAME": FALLBACK_NAME,
            "GIT_COMMITTER_EMAIL": FALLBACK_EMAIL,
        }.items()
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """What `git var -l` says: the configuration (keys as git prints them: section and name
    lower-cased) and the author and committer git would use."""

    values: Mapping[str, str]
    idents: Mapping[str, str]  # "AUTHOR"/"COMMITTER" -> "Name <email>"

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean as git reads it (a key with no value is true)."""
        if key not in self.values:
            return default
        return self.values[key].lower() in ("", "true", "yes", "on", "1")

    def ident(self, who: str, env: Mapping[str, str]) -> str:
        """`who`'s "Name <email>", with sage's own identity variables (`identity_env`)."""
        name, email = env.get(f"GIT_{who}_NAME"), env.get(f"GIT_{who}_EMAIL")
        if name is None or email is None:
            return self.idents[who]
        return f"{name} <{email}>"


def settings(repo: Path) -> Settings | None:
    """git's settings for `repo`, read with one process while no config file and no GIT_
    variable changes; None if git will not say. Every worktree of a repository shares them,
    unless `extensions.worktreeConfig` gives each its own."""
    stamp = _config_stamp(repo)
    shared = _SHARED_SETTINGS.get((str(_common_dir_cached(str(repo))), stamp))
    if shared is not None:
        return shared
    found = _settings(str(repo), stamp)
    if found is not None and not found.flag("extensions.worktreeconfig"):
        _SHARED_SETTINGS[(str(_common_dir_cached(str(repo))), stamp)] = found
    return found


_SHARED_SETTINGS: dict[tuple[str, tuple[object, ...]], Settings] = {}


def hooks_dir(worktree: Path, found: Settings | None = None) -> Path:
    """Where git looks for hooks when run in `worktree`: core.hooksPath (relative to the
    worktree), else the common dir's hooks. `found`: its settings, if already read."""
    found = found or settings(worktree)
    if found is None:
        return worktree / git(worktree, "rev-parse", "--git-path", "hooks")
    configured = found.get("core.hookspath")
    if configured:
        return worktree / os.path.expanduser(configured)
    return _common_dir_cached(str(worktree)) / "hooks"


class _Looks(threading.local):
    """What the calling thread found out in the step it is in (`one_look`), per repository."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], object] | None = None


_LOOKS = _Looks()


@contextmanager
def one_look() -> Iterator[None]:
    """A step done in process (a landing pass, a slot's switch, a collect) reads git's settings
    and whether replace refs or grafts change what git sees once per repository, at the first
    ask, as a git process reads them once when it starts; outside a step, at every ask. No step
    changes them itself; a change made meanwhile counts from the next step, as it would for a
    git process already running. Nested steps are one."""
    if _LOOKS.seen is not None:
        yield
        return
    _LOOKS.seen = {}
    try:
        yield
    finally:
        _LOOKS.seen = None


def per_step(what: str, key: str | os.PathLike[str], find: Callable[[], T]) -> T:
    """`find()`, asked once per `key` (a repository, a folder) in a step (`one_look`); at every
    call outside one."""
    seen = _LOOKS.seen
    if seen is None:
        return find()
    at = (what, os.fspath(key))
    if at not in seen:
        seen[at] = find()
    return seen[at]  # type: ignore[return-value]


def _config_stamp(repo: Path) -> tuple[object, ...]:
    return per_step("config", repo, lambda: _config_stamp_now(repo))


def _config_stamp_now(repo: Path) -> tuple[object, ...]:
    env: tuple[object, ...] = tuple(os.environ.get(name) for name in _CONFIG_VARIABLES)
    if env[_COUNT_AT]:  # GIT_CONFIG_COUNT: GIT_CONFIG_KEY_<n> and GIT_CONFIG_VALUE_<n> too
        env += tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("GIT_CONFIG_")))
    stamps: list[object] = [env]
    for path in _config_files(str(repo), *(os.environ.get(n) for n in _CONFIG_VARIABLES[:4])):
        try:
            found = os.stat(path)
            stamps.append((found.st_mtime_ns, found.st_size, found.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


# What git's settings (config and identity) depend on besides the config files' content: the
# first ones also say where those files are.
_CONFIG_VARIABLES = ("HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_GLOBAL",
                     "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS",
                     "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                     "GIT_COMMITTER_EMAIL", "EMAIL", "GIT_DIR", "GIT_COMMON_DIR",
                     "GIT_REPLACE_REF_BASE")  # fmt: skip
_COUNT_AT = 5


@functools.lru_cache(maxsize=64)
def _config_files(
    repo: str, home: str | None, xdg: str | None, system: str | None, user: str | None
) -> tuple[str, ...]:
    """The files git reads its configuration from for `repo`, given HOME, XDG_CONFIG_HOME,
    GIT_CONFIG_SYSTEM and GIT_CONFIG_GLOBAL."""
    common, at = _common_dir_cached(repo), Path(home or "/")
    return (str(common / "config"), str(common / "config.worktree"),
            user or str(at / ".gitconfig"), str(Path(xdg or at / ".config") / "git" / "config"),
            system or "/etc/gitconfig")  # fmt: skip


@functools.lru_cache(maxsize=16)
def _settings(repo: str, stamp: tuple[object, ...]) -> Settings | None:
    done = run(Path(repo), "var", "-l")
    if done.returncode != 0:
        return None
    values: dict[str, str] = {}
    idents: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, equals, value = line.partition("=")
        if key in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
            idents[key[4:-6]] = value.rsplit(" ", 2)[0]  # without the time and its zone
        elif not key.startswith("GIT_"):
            values[key] = value if equals else ""
    if set(idents) != {"AUTHOR", "COMMITTER"}:
        return None
    return Settings(values=values, idents=idents)


def merge_tree(repo: Path, ours: str, theirs: str) -> MergeResult:
    """`git merge-tree --write-tree`: the merged tree, or the conflicting paths."""
    done = run(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs)
    if done.returncode not in (0, 1):
        raise GitError(
            ["git", "merge-tree", ours, theirs], done.returncode, done.stdout, done.stderr
        )
    lines = done.stdout.splitlines()
    conflicts = tuple(dict.fromkeys(line for line in lines[1:] if line))
    return MergeResult(tree=lines[0].strip(), conflicts=conflicts if done.returncode else ())


def commit_tree(
    repo: Path,
    tree: str,
    parents: Sequence[str],
    message: str,
    env: Mapping[str, str] | None = None,
) -> str:
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    return git(repo, *args, input=message, env=env)


_LOCK_EXISTS = re.compile(r"Unable to create '([^']+\.lock)': File exists")


def lock_in_the_way(stderr: str) -> str | None:
    """The git lock file a failed command names (one that another git holds, or that a killed
    git left behind), or None when the failure is something else."""
    found = _LOCK_EXISTS.search(stderr)
    return found.group(1) if found else None


def update_ref(repo: Path, ref: str, new: str, old: str) -> bool:
    """Compare-and-swap: move `ref` to `new` only if it is still at `old` (False if it is not).
    Done on the ref's file as git's files backend does (`move_ref`) where that is exact, else by
    `git update-ref`.

    A git lock file in the way for a whole second is no race: a git process killed mid-update
    leaves it behind, and git refuses that ref until it is removed. Say so, naming it."""
    moved = _update_loose_ref(repo, ref, new, old)
    if moved is not None:
        return moved
    done = run(repo, "-c", "core.filesRefLockTimeout=1000", "update-ref", ref, new, old)
    if done.returncode == 0:
        return True
    stuck = lock_in_the_way(done.stderr)
    if stuck:
        running = gits_in(repo)
        raise SageError(
            f"cannot move {ref}: git's lock file {stuck} exists",
            hint=f"a git is running here (pid {running[0]}): wait for it, then run again"
            if running
            else "no git is running here, so one was killed and left it behind: remove that "
            "file and run again",
        )
    if rev_parse(repo, ref) == old:  # nobody moved it: git itself said no
        said = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise RefRefused(
            f"git refused to move {ref}: {said}",
            hint="a reference-transaction hook (or the repository's permissions) refused the "
            "update; nothing moved, and the entries stay queued",
        )
    return False


def _update_loose_ref(repo: Path, ref: str, new: str, old: str) -> bool | None:
    """`git update-ref ref new old` done as git's files backend does it, without a process (see
    `move_ref`); None when git must do it. The reflogs are those git writes: the ref's, and
    HEAD's while HEAD names the ref, each as `core.logAllRefUpdates` says."""
    common, settings_now = _common_dir_cached(str(repo)), settings(repo)
    if settings_now is None or not (repo / ".git").is_dir():  # HEAD is in the repo's git dir
        return None
    always = settings_now.get("core.logallrefupdates", "true").lower() == "always"
    create = always or (settings_now.flag("core.logallrefupdates") and ref.startswith(_LOGGED))
    logs = [(common / "logs" / ref, create)]
    try:
        if _text(f"{common}/HEAD") == f"ref: {ref}":
            logs.append((common / "logs" / "HEAD", create))
    except OSError:
        return None
    return move_ref(repo, ref, new, old, logs=logs)


def _refs_as_files(repo: Path, ref: str, new: str, old: str) -> tuple[Path, Settings] | None:
    """The common dir and git's settings when `ref` may be moved by writing files: a loose ref
    holding a commit (or, to create it, neither a loose nor a packed one), the files
    backend, no reference-transaction hook, no shared repository, refs git is not told to
    fsync, no date from the environment."""
    found = _files_backend(repo)
    if found is None:
        return None
    common, settings_now = found
    if (
        not _HEX.fullmatch(new)
        or (_ref_tip(repo, ref) is None if old else _ref_anywhere(common, ref))
        or settings_now.get("core.sharedrepository")
        or any(w in settings_now.get("core.fsync") for w in ("reference", "committed", "all"))
        or "GIT_COMMITTER_DATE" in os.environ
    ):
        return None
    return common, settings_now


def _files_backend(repo: Path) -> tuple[Path, Settings] | None:
    """The common dir and git's settings where refs are git's files to change by hand: read
    settings, the files backend, not bare, no reference-transaction hook to run."""
    common, settings_now = _common_dir_cached(str(repo)), settings(repo)
    if (
        settings_now is None
        or settings_now.get("extensions.refstorage", "files") != "files"
        or settings_now.flag("core.bare")
        or os.access(hooks_dir(repo, settings_now) / "reference-transaction", os.X_OK)
    ):
        return None
    return common, settings_now


def move_ref(
    repo: Path, ref: str, new: str, old: str, *, logs: Sequence[tuple[Path, bool]],
    message: str = "",
) -> bool | None:  # fmt: skip
    """Compare-and-swap a loose ref as git's files backend does: take `<ref>.lock`
    (create-exclusive), compare, append a line to each reflog in `logs` (path, create it if
    missing), rename the lock over the ref. `old` "": create it. False if the ref is not at
    `old`; None when git must do it (`_refs_as_files` says no, or a lock is in the way: git
    waits and explains)."""
    found = _refs_as_files(repo, ref, new, old)
    if found is None:
        return None
    common, settings_now = found
    path = common / ref

    def at_old() -> bool | None:  # True: still at `old`; False: at another commit
        try:
            current = files.read_bytes(path).decode("ascii").strip()
        except FileNotFoundError:
            current = ""
        return True if current == old else False if _HEX.fullmatch(current) else None

    line = f"{old or _ZERO[: len(new)]} {new} {settings_now.idents['COMMITTER']} {stamp()}"
    line += f"\t{message}\n" if message else "\n"
    return _rewrite_locked(path, new, at_old, line, logs, make_folder=True)


def _rewrite_locked(
    target: Path, text: str, still: Callable[[], bool | None], line: str,
    logs: Sequence[tuple[Path, bool]], *, make_folder: bool = False,
) -> bool | None:  # fmt: skip
    """Rewrite a ref or HEAD as git's files backend does: `<target>.lock` made create-exclusive
    (its folder too if `make_folder`), `still()` asked under it (True: go on; else what to
    return, the lock gone), `text` written into it, `line` added to each reflog in `logs` (path,
    create it if missing), the lock renamed over `target`. None when the lock is in the way or
    a step fails (the lock gone)."""
    lock = Path(f"{target}.lock")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        if make_folder:
            fd = files.in_folder(target.parent, lambda: os.open(lock, flags, 0o666))
        else:
            fd = os.open(lock, flags, 0o666)
    except OSError:
        return None
    try:
        try:
            going_on = still()
            if going_on is not True:
                lock.unlink()
                return going_on
            files.write_all(fd, f"{text}\n".encode())
        finally:
            os.close(fd)
        for log, create in logs:
            _append_log(log, line, create=create)
        os.replace(lock, target)
    except OSError:
        lock.unlink(missing_ok=True)
        return None
    return True


def point_head(repo: Path, head: Path, ref: str, *, old: str, new: str, message: str) -> bool:
    """Make the HEAD file `head` (a worktree's) name `ref`, as `git checkout` does when no file
    changes: `HEAD.lock`, then renamed over HEAD; a line in HEAD's reflog if it has one.
    False (nothing changed) when the lock is in the way or git's settings are unknown."""
    return _swap_head(repo, head, f"ref: {ref}", old=old, new=new, message=message)


def detach_head(repo: Path, head: Path, ref: str, at: str, *, message: str) -> bool:
    """Detach the HEAD file `head` at commit `at` if it still names `ref` (whose tip `at` is),
    as `git checkout --detach` does when no file changes; False: nothing changed."""
    return _swap_head(repo, head, at, old=at, new=at, message=message, was=f"ref: {ref}")


def _swap_head(
    repo: Path, head: Path, text: str, *, old: str, new: str, message: str, was: str = ""
) -> bool:
    found = settings(repo)
    if found is None:
        return False

    def unmoved() -> bool:  # `was`: what HEAD must still say
        return not was or files.read_text(head).strip() == was

    line = f"{old} {new} {found.idents['COMMITTER']} {stamp()}\t{message}\n"
    logs = [(head.parent / "logs" / "HEAD", False)]
    return _rewrite_locked(head, text, unmoved, line, logs) is True


_ZERO = "0" * 64


def ref_exists(repo: Path, ref: str) -> bool:
    """Whether a full ref (`refs/…`) exists, loose or packed; True when the files cannot tell."""
    common = _common_dir_cached(str(repo))
    return os.path.exists(f"{common}/reftable") or _ref_anywhere(common, ref)


def _ref_anywhere(common: Path, ref: str) -> bool:
    """Whether `ref` exists as a loose file or in packed-refs (or cannot be told)."""
    if (common / ref).exists():
        return True
    packed = _packed_refs(common)
    return packed is None or f" {ref}\n".encode() in packed


def _packed_refs(common: Path) -> bytes | None:
    """The packed-refs file's bytes (none there: empty); None when it cannot be read."""
    try:
        return files.read_bytes(common / "packed-refs")
    except FileNotFoundError:
        return b""
    except OSError:
        return None


def delete_refs(repo: Path, refs: Mapping[str, str | None]) -> dict[str, bool] | None:
    """Delete loose refs as git's files backend does, each on its own: `<ref>.lock` taken
    (create-exclusive), the ref compared with its old value (None: any commit, or none: a ref
    that is not there is gone already), the ref and its reflog removed, the lock too; then the
    folders that left empty. Each ref -> whether it is gone (False: it moved on, or a lock is in
    the way; kept). None, with nothing deleted, when git must do it: a ref that is packed,
    another ref backend, a reference-transaction hook to run, or settings that cannot be read."""
    found = _files_backend(repo)
    if found is None:
        return None
    common, packed = found[0], _packed_refs(found[0])
    if packed is None or any(f" {ref}\n".encode() in packed for ref in refs):
        return None
    done, emptied = {}, {}
    for ref, old in refs.items():
        path, log = f"{common}/{ref}", f"{common}/logs/{ref}"
        if old is None and not os.path.lexists(path):
            done[ref] = True
            continue
        done[ref] = _unlink_locked(path, log, old)
        if done[ref]:
            top = "/".join(ref.split("/")[:2])  # refs/heads: git never removes it
            emptied[os.path.dirname(path)] = f"{common}/{top}"
            emptied[os.path.dirname(log)] = f"{common}/logs/{top}"
    for folder, top in sorted(emptied.items(), reverse=True):  # the deepest first
        _remove_empty(Path(folder), Path(top))
    return done


def _unlink_locked(path: str, log: str, old: str | None) -> bool:
    """Remove a loose ref under its lock if it holds a commit (`old`, if given), then its
    reflog."""
    lock = f"{path}.lock"
    try:
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError:
        return False
    try:
        current = files.read_bytes(path).decode("ascii").strip()
        if not _HEX.fullmatch(current) or old not in (None, current):
            return False
        os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
    except (OSError, UnicodeDecodeError):
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    return True


def _remove_empty(folder: Path, top: Path) -> None:
    """`folder` and the folders above it, up to `top` (kept), while they are empty."""
    while top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


_LOGGED = ("refs/heads/", "refs/remotes/", "refs/notes/")


def _append_log(log: Path, line: str, *, create: bool) -> None:
    """Append a reflog line; a missing log is created only when git would create it."""
    try:
        if create:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            fd = files.in_folder(log.parent, lambda: os.open(log, flags, 0o666))
        else:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:  # no log, and git would not make one
        return
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def stamp(when: tuple[int, int] | None = None) -> str:
    """A time as git writes it in commits and reflogs ("<seconds> +hhmm"); `when` is
    (seconds, UTC offset in seconds), else now in the local zone."""
    if when is None:
        seconds = int(time.time())
        when = seconds, time.localtime(seconds).tm_gmtoff
    seconds, offset = when
    sign, offset = ("-", -offset) if offset < 0 else ("+", offset)
    return f"{seconds} {sign}{offset // 3600:02d}{offset % 3600 // 60:02d}"


def gits_in(path: Path) -> list[int]:
    """PIDs of git processes running in `path` (or below it), where /proc tells."""
    where, found = path.resolve(), []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if (proc_dir / "comm").read_text().strip() != "git":
                continue
            cwd = (proc_dir / "cwd").resolve()
        except OSError:
            continue
        if cwd == where or where in cwd.parents:
            found.append(int(proc_dir.name))
    return sorted(found)


def worktrees(repo: Path) -> dict[Path, str | None]:
    """Every worktree of the repository and the branch it has checked out (None if detached)."""
    found: dict[Path, str | None] = {}
    current: Path | None = None
    for line in _worktree_list(repo).splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree ") :])
            found[current] = None
        elif line.startswith("branch ") and current is not None:
            found[current] = line[len("branch ") :]
    return found


def _worktree_list(repo: Path, tries: int = 10) -> str:
    """`git worktree list` fails while another thread's `worktree add` is half done: try again."""
    for attempt in range(tries):
        done = run(repo, "worktree", "list", "--porcelain")
        if done.returncode == 0 or attempt == tries - 1:
            break
        time.sleep(0.01 * (attempt + 1))
    if done.returncode != 0:
        raise GitError(["git", "worktree", "list"], done.returncode, done.stdout, done.stderr)
    return done.stdout


def checkouts(repo: Path) -> dict[Path, str | None]:
    """Like `worktrees()`, read from git's admin files instead of running git: no process to
    start, and a worktree another thread is still adding is simply not there yet."""
    common = _common_dir_cached(str(repo))
    found: dict[Path, str | None] = {}
    if common.name == ".git":
        found[common.parent] = _head_branch(common / "HEAD")
    admin = common / "worktrees"
    for entry in sorted(admin.iterdir()) if admin.is_dir() else ():
        try:
            gitdir = Path(files.read_text(entry / "gitdir").strip())
        except OSError:
            continue
        found[gitdir.parent] = _head_branch(entry / "HEAD")
    return found


@functools.lru_cache(maxsize=16)
def _common_dir_cached(repo: str) -> Path:
    return common_dir(Path(repo))


def _head_branch(head: Path) -> str | None:
    try:
        text = _text(str(head))
    except (OSError, ValueError):
        return None
    return text[len("ref: ") :] if text.startswith("ref: ") else None


def tickets_touching(repo: Path, base: str, head: str, paths: Sequence[str]) -> list[str]:
    """Sage-Ticket trailers of the commits in base..head that changed any of `paths`.

    Only a conflict asks this, so GitPython's readable history walk is worth its import."""
    import git as gitpython  # lazy: ~100 ms, paid on a conflict only

    history = gitpython.Repo(repo).iter_commits(f"{base}..{head}", paths=list(paths))
    found = (value for commit in history for value in commit.trailers_dict.get(TRAILER, []))
    return list(dict.fromkeys(value.strip() for value in found))


def supports_parallel_mode() -> tuple[bool, str]:
    """git >= 2.38 has `worktree` and `merge-tree --write-tree`."""
    have = version()
    text = ".".join(str(p) for p in have)
    if have >= (2, 38):
        return True, f"git {text} has worktree and merge-tree --write-tree"
    return False, f"git {text} is too old: parallel mode needs 2.38 (merge-tree --write-tree)"


def history(repo: Path, base: str, head: str) -> tuple[list[tuple[str, str]], bool]:
    """(sha, subject) of each commit in base..head, oldest first, and whether `head` descends
    from `base`: some commit of the range has `base` as a parent (or head is base)."""
    known = _linear_history(repo, base, head)
    if known is not None:
        return known, True
    out = git(repo, "log", "--reverse", "--format=%H %P%x00%s", f"{base}..{head}")
    rows, descends = [], head == base
    for line in out.splitlines():
        shas, _, subject = line.partition("\0")
        sha, *parents = shas.split()
        rows.append((sha, subject))
        descends = descends or base in parents
    return rows, descends


_LINE_MOST = 16  # commits read from files before asking git
_HEX = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def is_object_id(text: str) -> bool:
    """Whether `text` is a full object id (SHA-1 or SHA-256): a detached HEAD's, a ref's."""
    return _HEX.fullmatch(text) is not None


def linear_line(repo: Path, base: str, head: str) -> list[str] | None:
    """The commits base..head, read from files, if they are a short line of single-parent
    commits down to `base` (see `_linear_history`); else None."""
    rows = _linear_history(repo, base, head)
    return None if rows is None else [sha for sha, _ in rows]


def _linear_history(repo: Path, base: str, head: str) -> list[tuple[str, str]] | None:
    """base..head read from loose commit objects, without a git process, when it is a short
    line of single-parent commits down to `base`: what a worker's branch is after sage commits
    its work on the base. None for anything else (a merge, a longer line, packed objects, replace
    refs, grafts, a shallow clone, a message in another encoding): then git answers."""
    objects = objects_dir(repo)
    if objects is None or not _HEX.fullmatch(head) or not _HEX.fullmatch(base):
        return None
    rows: list[tuple[str, str]] = []
    sha = head
    while sha != base:
        commit = _loose_commit(objects, sha) if len(rows) < _LINE_MOST else None
        if commit is None or len(commit[0]) != 1:
            return None
        rows.append((sha, _subject(commit[1])))
        sha = commit[0][0]
    return rows[::-1]


def objects_dir(repo: Path) -> Path | None:
    """The object folder, if nothing makes git see commits other than as they are stored.
    (Asked for each in-process read or write, once per step: see `one_look`.)"""
    return per_step("objects", repo, lambda: _objects_dir_now(repo))


def _objects_dir_now(repo: Path) -> Path | None:
    common = _common_dir_cached(str(repo))
    at = os.fspath(common)
    if os.environ.get("GIT_REPLACE_REF_BASE") or any(
        os.path.exists(f"{at}/{name}") for name in ("shallow", "info/grafts")
    ):
        return None
    try:
        with os.scandir(f"{at}/refs/replace") as replaced:
            if next(replaced, None) is not None:
                return None
    except OSError:  # no such folder (or not one): nothing replaced there
        pass
    if _packs_replace_refs(at):
        return None
    return common / "objects"


def _packs_replace_refs(common: str) -> bool:
    path = f"{common}/packed-refs"
    try:
        found = os.stat(path)
    except OSError:
        return False
    return _mentions_replace(path, found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=16)
def _mentions_replace(path: str, mtime_ns: int, size: int) -> bool:
    return b" refs/replace/" in files.read_bytes(path)


def loose_commit(repo: Path, sha: str) -> tuple[tuple[str, ...], str] | None:
    """A commit's parents and raw message (as `git cat-file commit` shows it) read from its loose
    object file, without a git process; None when that cannot be told so (packed, replaced,
    grafted, in another encoding, not a commit). A commit sage just made (`git commit`,
    `commit-tree`) is loose until git packs it."""
    objects = objects_dir(repo)
    commit = _loose_commit(objects, sha) if objects and _HEX.fullmatch(sha) else None
    if commit is None:
        return None
    return tuple(commit[0]), commit[1].decode("utf-8", errors="replace")


def read_loose(objects: Path, sha: str) -> tuple[str, bytes] | None:
    """An object's type and content from its loose file in `objects`, or None."""
    return _read_loose(objects, sha) if _HEX.fullmatch(sha) else None


def _read_loose(objects: Path, sha: str) -> tuple[str, bytes] | None:
    try:
        data = zlib.decompress(files.read_bytes(f"{objects}/{sha[:2]}/{sha[2:]}"))
    except (OSError, zlib.error):
        return None
    header, _, body = data.partition(b"\0")
    return header.split(b" ", 1)[0].decode("ascii", errors="replace"), body


def _loose_commit(objects: Path, sha: str) -> tuple[list[str], bytes] | None:
    """A loose commit object's parents and message, or None if it is not one."""
    found = _read_loose(objects, sha)
    if found is None or found[0] != "commit":
        return None
    headers, _, message = found[1].partition(b"\n\n")
    parents = []
    for line in headers.split(b"\n"):
        if line.startswith(b"encoding "):
            return None
        if line.startswith(b"parent "):
            parents.append(line[7:].decode("ascii"))
    return parents, message


def _subject(message: bytes) -> str:
    """git's `%s`: the first paragraph after any blank lines, its lines joined by spaces, each
    without trailing whitespace (git's whitespace: space, tab, CR, LF)."""
    lines = [line.rstrip(b" \t\r") for line in message.split(b"\n")]
    first = next((i for i, line in enumerate(lines) if line), len(lines))
    end = next((i for i in range(first, len(lines)) if not lines[i]), len(lines))
    return b" ".join(lines[first:end]).decode("utf-8", errors="replace")
