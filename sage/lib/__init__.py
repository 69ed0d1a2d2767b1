"""The core of sage. Never imports typer, rich or sage.commands (a test checks it)."""
