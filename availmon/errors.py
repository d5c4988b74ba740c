"""The one exception family. Library errors are translated into these at the boundary."""

from __future__ import annotations

from dataclasses import dataclass


class AvailmonError(Exception):
    """Base of every error availmon raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one config file, precise enough to fix without reading code."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(AvailmonError):
    """A config file is invalid; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class StartupError(AvailmonError):
    """Something a daemon needs at start is missing (a secret file, raw-socket permission)."""


class StoreError(AvailmonError):
    """The collector's database refused an operation."""
