"""`--verify`: test candidate merges in a scratch worktree before the target moves.

Several waiting entries are tested together as one stack; on failure the stack is bisected to
find the first entry that breaks it ("the not-rocket-science rule", batched).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from sage.lib import git, proc, worktrees
from sage.lib.queue.entries import step
from sage.lib.tickets import now

VERIFY_DIR = "_verify"  # ticket IDs cannot start with "_", so this never clashes with one


class Verifier:
    def __init__(
        self,
        root: Path,
        worktrees_dir: Path,
        log_dir: Callable[[], Path],
        *,
        batch: bool = True,
        timeout: float = 0.0,
    ) -> None:
        self.root, self.worktrees_dir, self._log_dir = root, worktrees_dir, log_dir
        self.batch, self.timeout = batch, timeout  # a hung verify must not hold the lock forever
        self.runs = 0  # how often the command ran (the bench reports it)
        self.exit_codes: dict[str, int] = {}

    def check(
        self, command: Sequence[str], stack: Sequence[tuple[str, str]]
    ) -> tuple[int, int | None]:
        """How many of `stack` ((ticket, commit) from the bottom) pass, and the index of the
        first failing one."""
        if not command or not stack:
            return len(stack), None
        if not self.batch:
            failing = next(
                (i for i in range(len(stack)) if not self._passes(command, stack[: i + 1])), None
            )
            return (len(stack), None) if failing is None else (failing, failing)
        if self._passes(command, stack):
            return len(stack), None
        good, bad = 0, len(stack)  # the first `good` pass (0: the target itself); `bad` fail
        while bad - good > 1:
            middle = (good + bad) // 2
            if self._passes(command, stack[:middle]):
                good = middle
            else:
                bad = middle
        return good, bad - 1

    def _passes(self, command: Sequence[str], prefix: Sequence[tuple[str, str]]) -> bool:
        """Run the command on the top of `prefix`, checked out in the scratch worktree."""
        top = prefix[-1][1]
        where = self._scratch(top)
        ids = " ".join(tid for tid, _ in prefix)
        log = self.log()
        with log.open("a", encoding="utf-8") as sink:
            sink.write(f"\n== {now()} verify {top[:12]} ({ids}): {shlex.join(command)}\n")
        self.runs += 1
        env = proc.clean_env({"SAGE_VERIFY_COMMIT": top, "SAGE_VERIFY_TICKETS": ids})
        done = proc.run_logged(command, cwd=where, env=env, log=log, timeout=self.timeout or None)
        self.exit_codes[top] = done.returncode
        step("verified")
        return done.returncode == 0

    def log(self) -> Path:
        folder = self._log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "_verify.log"

    def _scratch(self, commit: str) -> Path:
        """The reusable scratch worktree, checked out (detached) at `commit` and nothing else."""
        path = self.worktrees_dir / VERIFY_DIR
        # Without its own .git, `git -C path` would act on the enclosing repository.
        if (path / ".git").exists():
            moved = git.run(path, "checkout", "--quiet", "--force", "--detach", commit)
            if moved.returncode == 0:
                git.run(path, "clean", "-fdq")
                return path
        worktrees.remove(self.root, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        git.git(self.root, "worktree", "add", "--quiet", "--force", "--detach", str(path), commit)
        return path
