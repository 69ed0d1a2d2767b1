from sage.cli import run

run()
