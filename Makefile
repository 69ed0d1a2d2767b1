# Thin wrappers around dev.py, which needs only Python 3.11+ and git.
PYTHON ?= python3

.PHONY: demo test bench lint typecheck clean
demo test bench lint typecheck:
	$(PYTHON) dev.py $@

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
