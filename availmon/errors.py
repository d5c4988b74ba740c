"""The one exception family. Library errors are translated into these at the boundary.

Each class carries the exit code ``availmon`` ends with when it escapes a command (README,
"Exit codes"): 2 for a usage or config error the user fixes by changing what they typed or
wrote, 3 for a runtime failure of this host (a bad path, a corrupt or locked database, an
unreadable file). 1 is not an error: a probe or an import that found something wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3


class AvailmonError(Exception):
    """Base of every error availmon raises on purpose."""

    exit_code = EXIT_RUNTIME


class UsageError(AvailmonError):
    """What was typed on the command line cannot work (a bad period, a missing option)."""

    exit_code = EXIT_USAGE


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

    exit_code = EXIT_USAGE

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class StartupError(AvailmonError):
    """Something a daemon needs at start is missing (a secret file, raw-socket permission)."""


class FileFailure(AvailmonError):
    """A file named on the command line cannot be read or written."""


class StoreError(AvailmonError):
    """The collector's database refused an operation (corrupt, locked, not a database)."""


class NoSuchRecord(StoreError):
    """An id given on the command line names nothing in the database."""

    exit_code = EXIT_USAGE
