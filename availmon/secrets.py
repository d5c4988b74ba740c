"""Secrets come from a file or an environment variable, never from the config itself.

Its own module, with no imports from the rest of availmon but errors and limits, so that
probes (which the config module imports through the registry) can use it too. Besides
reading secrets it knows what one looks like written inline (a password in a URL, an
``Authorization`` header, a token in a query string), so that config errors, the probe
command and logs can refuse or hide it (issue 15).
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from availmon.limits import SECRET_MAX_BYTES

#: Key names whose values are secrets (``password``, ``bearer_token``, ``community``,
#: ``auth_key``...) unless they name where the secret is (``*_file``, ``*_env``).
SECRET_KEY = re.compile(r"pass|secret|token|community|key|auth|cookie|credential", re.I)
#: Request headers that carry credentials.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "apikey",
        "x-auth-token",
        "x-access-token",
        "private-token",
    }
)
#: Text that is a credential whatever key it is under (``Bearer abc``, ``Basic abc=``).
_CREDENTIAL_TEXT = re.compile(r"^\s*(bearer|basic|digest|token)\s+\S", re.I)
HIDDEN = "<hidden: looks like a secret; use a *_file or *_env key>"
#: An ordinary header's value (``Host``, ``X-Trace``): any header may carry a credential, so
#: none is printed, but nothing says this one does.
HIDDEN_HEADER = "<hidden: a header's value is never shown>"


class SecretFileWarning(UserWarning):
    """A secret file others can read: shown once per file and place, not on every read."""


def resolve_secret(value_file: Path | None, value_env: str | None, key: str) -> str | None:
    """Read a secret; a missing, empty, unreadable or world-writable one is a start-up error
    naming the key (never the value)."""
    from availmon.errors import StartupError

    if value_file is not None:
        return read_secret_file(value_file, key)
    if value_env is not None:
        secret = os.environ.get(value_env)
        if secret is None:
            raise StartupError(f"{key}_env: environment variable {value_env} is not set")
        if not secret.strip():
            raise StartupError(f"{key}_env: environment variable {value_env} is empty")
        return secret
    return None


def read_secret_file(path: Path, key: str) -> str:
    """The secret in ``path``, stripped. Refused: not a regular file, writable by everyone
    (anyone could swap the password), larger than a secret, not UTF-8, or empty (an empty
    password logs in nowhere, or worse, everywhere). Readable by group or others: a
    ``SecretFileWarning``."""
    from availmon.errors import StartupError

    where = f"{key}_file: {path}"
    try:
        # O_NONBLOCK: a FIFO (or a device) must not hang the open; it is refused below.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StartupError(f"{where} is not a regular file")
            raw = f.read(SECRET_MAX_BYTES + 1)
    except OSError as exc:
        raise StartupError(f"{key}_file: cannot read {path}: {exc.strerror}") from exc
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH:
        raise StartupError(f"{where} is writable by everyone (mode {mode:04o}): chmod 0600 {path}")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "everyone" if mode & stat.S_IROTH else "its group"
        warnings.warn(
            f"{where} is readable by {who} (mode {mode:04o}): chmod 0600 {path}",
            SecretFileWarning,
            stacklevel=3,
        )
    if len(raw) > SECRET_MAX_BYTES:
        raise StartupError(f"{where} is larger than {SECRET_MAX_BYTES} bytes: not a secret")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StartupError(f"{where} is not valid UTF-8 (byte {exc.start})") from None
    secret = text.strip()
    if not secret:
        raise StartupError(f"{where} is empty")
    return secret


# -- secrets written inline ----------------------------------------------------------------


#: Query parameters that sign a URL (Azure's Power Automate workflow URLs, Teams' new
#: incoming webhooks): whoever has the URL may post.
_SECRET_PARAMS = frozenset({"sig"})
#: Hosts of incoming webhooks whose path is the credential (issue 11).
_SECRET_PATH_HOSTS = frozenset({"hooks.slack.com"})
_SECRET_PATH_DOMAINS = (".webhook.office.com",)


def redact_url(text: str) -> str | None:
    """The URL with its password and secret-looking query values replaced by ``***``, or
    None when it holds none (or is not a URL)."""
    if "://" not in text:
        return None
    try:
        parts = urlsplit(text.strip())
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return None
    secret_query = [
        k for k, v in query if v and (SECRET_KEY.search(k) or k.lower() in _SECRET_PARAMS)
    ]
    host = (parts.hostname or "").lower()
    if host in _SECRET_PATH_HOSTS or host.endswith(_SECRET_PATH_DOMAINS):
        # An incoming webhook (Slack, Teams): the path itself is the credential.
        parts = parts._replace(path="/***")
    elif password is None and not secret_query:
        return None
    netloc = parts.netloc
    if password is not None:
        user = parts.username or ""
        netloc = f"{user}:***@" + netloc.rsplit("@", 1)[1]
    shown_query = "&".join(f"{k}=***" if k in secret_query else f"{k}={v}" for k, v in query)
    return parts._replace(netloc=netloc, query=shown_query).geturl()


def inline_secrets(
    path: Sequence[int | str],
    value: Any,
    label: Callable[[tuple[int | str, ...]], str] | None = None,
) -> Iterator[tuple[str, str]]:
    """Every secret written inline in ``value`` (found at key ``path``): ``(key path, what
    to do instead)``. Walks tables and arrays, so it finds a header three levels down.
    ``label`` spells a key path (the config names checks by name)."""
    name = label or (lambda loc: _path(loc))
    key = next((p for p in reversed(path) if isinstance(p, str)), "")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if key.lower() == "headers" and str(k).lower() in SECRET_HEADERS:
                yield (
                    name((*path, str(k))),
                    "a credential header written inline (value hidden): put it in a file"
                    " named under header_files, or use bearer_token_file, or username and"
                    " password_file",
                )
            else:
                yield from inline_secrets([*path, str(k)], v, label)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from inline_secrets([*path, i], v, label)
    elif isinstance(value, str):
        shown = redact_url(value)
        if shown is not None:
            yield (
                # Spelled only here: naming a check scans its site's checks.
                name(tuple(path)),
                f"credentials in a URL ({shown}): give the user as username and the"
                " password in password_file (or a token in bearer_token_file)",
            )


def looks_secret(path: Sequence[int | str], value: Any) -> bool:
    """Whether ``value`` under ``path`` must never be printed: a secret-looking key (not a
    ``*_file``/``*_env`` one), anything under ``headers``, or a value that holds a secret."""
    keys = [p for p in path if isinstance(p, str)]
    key = keys[-1] if keys else ""
    if SECRET_KEY.search(key) and not key.endswith(("_file", "_env")):
        return True
    if any(k.lower() == "headers" for k in keys):
        return True
    if isinstance(value, Mapping):
        return any(
            looks_secret([*path, str(k)], v) or str(k).lower() in SECRET_HEADERS
            for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return any(looks_secret([*path, i], v) for i, v in enumerate(value))
    if isinstance(value, str):
        return redact_url(value) is not None or bool(_CREDENTIAL_TEXT.match(value))
    return False


#: Longest value an error message prints (a whole table of checks is no help).
SHOWN_MAX = 200


def shown(path: Sequence[int | str], value: Any) -> str:
    """A value as an error message may print it: ``repr``, cut at SHOWN_MAX characters, or
    hidden when it looks secret."""
    if looks_secret(path, value):
        keys = [str(p).lower() for p in path if isinstance(p, str)]
        header = keys[-1] if len(keys) >= 2 and keys[-2] == "headers" else None
        if header is not None and header not in SECRET_HEADERS and not looks_secret((), value):
            return HIDDEN_HEADER
        return HIDDEN
    text = repr(value)
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "…"


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
