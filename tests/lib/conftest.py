"""Fixtures for the core's tests."""

from tests.support.git_wrapper import git_wrapper

__all__ = ["git_wrapper"]  # a fixture: `git` on PATH failing or killing at a chosen step
