"""How sage words things it says in several places: a number of things ("1 worker", "3 workers",
"2 batches"), how a run ended."""

from __future__ import annotations


def counted(n: int, one: str, many: str | None = None) -> str:
    """`n` and the word for that many (`many`: a plural that is not `one` + "s")."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def ending(*, interrupted: bool, stopped_early: bool) -> str:
    """How a run ended, in the words the summary and `sage status` use."""
    if interrupted:
        return "interrupted"
    return "stopped early" if stopped_early else "finished"
