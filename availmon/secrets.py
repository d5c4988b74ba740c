"""Secrets come from a file or an environment variable, never from the config itself.

Its own module, with no imports from the rest of availmon, so that probes (which the config
module imports through the registry) can use it too.
"""

from __future__ import annotations

import os
from pathlib import Path


def resolve_secret(value_file: Path | None, value_env: str | None, key: str) -> str | None:
    """Read a secret; a missing file or variable is a start-up error naming the key."""
    from availmon.errors import StartupError

    if value_file is not None:
        try:
            return value_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StartupError(f"{key}_file: cannot read {value_file}: {exc.strerror}") from exc
    if value_env is not None:
        secret = os.environ.get(value_env)
        if secret is None:
            raise StartupError(f"{key}_env: environment variable {value_env} is not set")
        return secret
    return None
