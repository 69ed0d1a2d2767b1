from sage import run

run()
