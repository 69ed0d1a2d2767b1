"""sage.lib never imports typer, rich or sage.commands."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "sage" / "lib"
FORBIDDEN = ("typer", "rich", "click", "sage.commands", "sage.cli")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_lib_never_imports_the_cli() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in LIB.glob("*.py")
        for name in imported(path)
        if name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN)
    }
    assert not offenders
