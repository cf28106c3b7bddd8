"""Exceptions shared by every stage.

`IceburgError` is a *user* error: bad input, a missing file, an impossible configuration. The CLI
prints `error: <message>` and exits with status 2. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class IceburgError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(IceburgError):
    """One or more configuration problems, all reported at once (torchtune style)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class DataError(IceburgError):
    """Input data is unusable (e.g. `--strict` and an invalid line, or nothing left to train on)."""


class ExportError(IceburgError):
    """An export failed; the message names the format and the reason."""


class MissingDependencyError(IceburgError):
    """An optional dependency is not installed; the message carries the exact install command."""

    def __init__(self, what: str, install: str):
        super().__init__(f"{what} is not installed; install it with: {install}")
        self.install = install
