"""sage: turn a backlog of dependent tickets into landed commits."""

__version__ = "0.1.0"


def run() -> None:
    """The `sage` command. The cyclic garbage collector waits while the CLI and the command's
    modules load: they make many objects and few cycles (about 7% of a start). A command that
    runs long turns it back on once loaded (`sage stream`); the others end first."""
    import gc

    gc.disable()
    from sage.cli import run as cli

    cli()
