"""How sage writes a number of things: "1 worker", "3 workers", "2 batches"."""

from __future__ import annotations


def counted(n: int, one: str, many: str | None = None) -> str:
    """`n` and the word for that many (`many`: a plural that is not `one` + "s")."""
    return f"{n} {one if n == 1 else many or one + 's'}"
