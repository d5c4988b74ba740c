"""TLS for the probes that speak it (http, smtp): the shared client contexts, the peer
certificate each probe's own connections presented, and what the certificate's dates mean.

Apart from :mod:`probes.base` so that reading a config or running a probe without TLS does
not load ``ssl`` (OpenSSL's libraries: issue 9, start-up cost); only the ``*_io`` modules
import it.
"""

from __future__ import annotations

import contextvars
import os
import re
import ssl
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from availmon.errors import StartupError

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: verify the chain and the host name but leave the dates
#: to ``cert_verdict``, so that the message can say "expired 3 days ago" rather than OpenSSL's
#: bare "certificate has expired".
_X509_V_FLAG_NO_CHECK_TIME = 0x200000
#: OpenSSL verify codes for a certificate outside its dates.
CERT_DATE_ERRORS = (9, 10)  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


#: The TLS objects made by the current probe's connections (see :func:`recording_tls`).
_MADE: contextvars.ContextVar[list[ssl.SSLObject] | None] = contextvars.ContextVar(
    "availmon_tls_made", default=None
)


class RecordingContext(ssl.SSLContext):
    """A client context that lets each probe see the TLS objects its own connections made.

    aiohttp releases a connection as soon as a short body has arrived, before the caller can
    ask it for the peer certificate; recording ``wrap_bio`` (which asyncio calls for every TLS
    connection, in the connecting task's context) lets the probe read the certificate of the
    connection that answered. One context is shared by every probe with the same trust
    settings, so the record is kept per probe (a context variable set by
    :func:`recording_tls`), never on the context.
    """

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        super().__init__()

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        made = _MADE.get()
        if made is not None:
            made.append(obj)
        return obj


@contextmanager
def recording_tls() -> Iterator[list[ssl.SSLObject]]:
    """Collect the TLS objects that connections opened inside the block make."""
    made: list[ssl.SSLObject] = []
    token = _MADE.set(made)
    try:
        yield made
    finally:
        _MADE.reset(token)


def last_peer(made: list[ssl.SSLObject], host: str | None = None) -> ssl.SSLObject | None:
    """The last TLS connection made (to ``host`` when given)."""
    for obj in reversed(made):
        if host is None or obj.server_hostname == host:
            return obj
    return None


def tls_context(
    ca_file: Path | None = None, insecure: bool = False, *, check_time: bool = True
) -> RecordingContext:
    """A client context: the system CAs, or only ``ca_file`` (a private CA) when given.

    With ``check_time=False`` an expired certificate still completes the handshake so that
    ``cert_verdict`` can say how long ago it expired; use that only where nothing secret is
    sent over the connection, or only to read the certificate.
    Blocking (it reads CA files, ~46 ms of CPU for the system's): build it once per agent,
    through ``asyncio.to_thread`` from a coroutine.
    """
    ctx = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_file is not None:
        load_ca_file(ctx, ca_file)
    else:
        ctx.load_default_certs()
    if not check_time:
        ctx.verify_flags |= _X509_V_FLAG_NO_CHECK_TIME
    return ctx


def load_ca_file(ctx: ssl.SSLContext, ca_file: Path) -> None:
    """Trust the CAs in ``ca_file``. A missing, unreadable or non-PEM file is a StartupError
    naming the key, the path and why (OpenSSL's own text says neither key nor path), as a
    missing secret file is: never a bare "No such file or directory"."""
    where = f"ca_file: {ca_file}"
    try:
        # Not a FIFO or a device: OpenSSL would block reading it, holding every TLS check.
        if not stat.S_ISREG(os.stat(ca_file).st_mode):
            raise StartupError(f"{where} is not a regular file")
        ctx.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as exc:  # before OSError, its base
        raise StartupError(f"{where} is not a PEM CA bundle ({_openssl_text(exc)})") from exc
    except OSError as exc:
        raise StartupError(f"ca_file: cannot read {ca_file}: {exc.strerror or exc}") from exc


def _openssl_text(exc: ssl.SSLError) -> str:
    """``no certificate or crl found`` from ``[X509: NO_...] no certificate or crl found
    (_ssl.c:4154)``."""
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", re.sub(r"^\[[^\]]*\]\s*", "", text))
    return text or exc.reason or "unreadable"


def _span(seconds: float) -> str:
    """``3 days``, ``1 day``, ``5 hours``, ``12 minutes``: rounded to the nearest unit."""

    def plural(n: int, unit: str) -> str:
        return f"{n} {unit}" if n == 1 else f"{n} {unit}s"

    if seconds >= 86400 - 1800:
        return plural(round(seconds / 86400), "day")
    if seconds >= 3600 - 30:
        return plural(round(seconds / 3600), "hour")
    return plural(max(1, round(seconds / 60)), "minute")


@dataclass(frozen=True)
class CertVerdict:
    """What a peer certificate's dates mean for the check."""

    days_left: float | None  # None when not measured (verification off)
    not_after: str | None
    error: str | None = None  # expired or not yet valid: the target is down
    warning: str | None = None  # expires within the warning window: degraded

    def details(self) -> dict[str, Any]:
        days = None if self.days_left is None else round(self.days_left, 2)
        return {"cert_days_left": days, "cert_not_after": self.not_after}


def cert_verdict(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, warn_days: float) -> CertVerdict:
    """Judge the peer certificate of a verified connection by its dates."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert or "notAfter" not in cert:
        return CertVerdict(days_left=None, not_after=None)  # CERT_NONE: nothing was checked
    now = time.time()
    not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    not_before = ssl.cert_time_to_seconds(str(cert["notBefore"]))
    days_left = (not_after - now) / 86400
    stamp = datetime.fromtimestamp(not_after, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if now > not_after:
        return CertVerdict(
            days_left, stamp, error=f"certificate expired {_span(now - not_after)} ago"
        )
    if now < not_before:
        start = datetime.fromtimestamp(not_before, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return CertVerdict(days_left, stamp, error=f"certificate not valid before {start}")
    if days_left < warn_days:
        return CertVerdict(
            days_left, stamp, warning=f"certificate expires in {_span(not_after - now)}"
        )
    return CertVerdict(days_left, stamp)


def tls_error_text(exc: BaseException) -> str:
    """A short reason for a failed TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
