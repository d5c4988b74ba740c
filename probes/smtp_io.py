"""The SMTP probe's dialogue, apart from :mod:`probes.smtp` so that reading a config
loads none of it (issue 9: start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any

from probes.base import (
    ProbeResult,
    fail,
    peer_text,
    split_host_port,
    timeout_text,
)
from probes.smtp import (
    DEFAULT_PORT,
    MAX_REPLY_LINES,
    SMTPS_PORT,
    Options,
)
from probes.tls import (
    cert_verdict,
    tls_context,
    tls_error_text,
)

#: How much of a peer's text (a banner, a reply) an error or a detail quotes.
QUOTE_CHARS = 120
#: The most EHLO keywords listed in the details, and the length of each as shown.
MAX_EXTENSIONS = 32
KEYWORD_CHARS = 32


class _Failed(Exception):
    """A step of the dialogue went wrong; the message is the probe's error text."""


def _is_code(text: str) -> bool:
    """Exactly three ASCII digits: ``isdigit`` alone takes "²²²" (int() then raises) and
    "٢٢٠" (int() reads 220)."""
    return len(text) == 3 and text.isascii() and text.isdigit()


def _keywords(extensions: list[str]) -> list[str]:
    """The EHLO keyword of each line after the greeting; blank lines ("250- ") have none."""
    return [words[0].upper() for words in map(str.split, extensions[1:]) if words]


async def _reply(reader: asyncio.StreamReader, step: str) -> tuple[int, list[str]]:
    """One (possibly multi-line) reply: its code and the text of each line."""
    texts: list[str] = []
    for _ in range(MAX_REPLY_LINES):
        try:
            raw = await reader.readline()
        except ValueError:  # a line over the stream's limit
            raise _Failed(f"reply line too long at {step}") from None
        if not raw:
            raise _Failed(f"connection closed at {step}")
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not _is_code(line[:3]) or line[3:4] not in ("", " ", "-"):
            raise _Failed(f'malformed reply at {step}: "{peer_text(line, QUOTE_CHARS)}"')
        texts.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), texts
    raise _Failed(f"reply of more than {MAX_REPLY_LINES} lines at {step}")


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str, expect: int
) -> list[str]:
    writer.write(command.encode("ascii") + b"\r\n")
    await writer.drain()
    step = command.split()[0]
    code, texts = await _reply(reader, step)
    if code != expect:
        text = peer_text(texts[0], QUOTE_CHARS) if texts else ""
        raise _Failed(f"SMTP {code} to {step}: {text}".rstrip(": "))
    return texts


def _ehlo_name(writer: asyncio.StreamWriter, options: Options) -> str:
    if options.helo_name:
        return options.helo_name
    sockname = writer.get_extra_info("sockname")
    address = str(sockname[0]) if sockname else "127.0.0.1"
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


async def _close(writer: asyncio.StreamWriter, deadline: float) -> None:
    """Close, but never wait long for a peer's TLS close_notify (asyncio would wait 30 s),
    nor past the probe's deadline (loop time): a stalled STARTTLS handshake leaves a close
    that never completes, and the probe must still return at its timeout."""
    writer.close()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(min(deadline, loop.time() + 1.0)):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    host, port = split_host_port(target, SMTPS_PORT if options.implicit_tls else DEFAULT_PORT)
    ctx = None
    if options.starttls or options.implicit_tls:
        # Dates are judged by cert_verdict after the handshake: the probe sends nothing
        # secret over TLS (EHLO and QUIT), so one dialogue can say "expired 3 days ago".
        ctx = await asyncio.to_thread(
            tls_context, options.ca_file, options.insecure_skip_verify, check_time=False
        )
    details: dict[str, Any] = {}
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + timeout
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx if options.implicit_tls else None
            )
            code, texts = await _reply(reader, "banner")
            details["banner"] = peer_text(texts[0], QUOTE_CHARS) if texts else ""
            if code != 220:
                raise _Failed(f"SMTP {code} at banner: {details['banner']}".rstrip(": "))
            name = _ehlo_name(writer, options)
            extensions = await _command(reader, writer, f"EHLO {name}", 250)
            if options.starttls:
                if "STARTTLS" not in _keywords(extensions):
                    raise _Failed("server does not offer STARTTLS")
                await _command(reader, writer, "STARTTLS", 220)
                assert ctx is not None
                await writer.start_tls(ctx, server_hostname=host)
                extensions = await _command(reader, writer, f"EHLO {name}", 250)
            latency = time.perf_counter() - started
            cert = None
            if ctx is not None:
                cert = cert_verdict(
                    writer.get_extra_info("ssl_object"), options.cert_expiry_warn_days
                )
                details.update(cert.details())
            details["extensions"] = [
                peer_text(keyword, KEYWORD_CHARS)
                for keyword in _keywords(extensions)[:MAX_EXTENSIONS]
            ]
            # Polite goodbye; the verdict does not depend on it.
            with contextlib.suppress(_Failed, OSError):
                await _command(reader, writer, "QUIT", 221)
    except TimeoutError:
        return fail(timeout_text(timeout), **details)
    except _Failed as exc:
        return fail(str(exc), **details)
    except ssl.SSLError as exc:
        return fail(tls_error_text(exc), **details)
    except ConnectionRefusedError:
        return fail("connection refused")
    except OSError as exc:
        return fail(exc.strerror or str(exc), **details)
    finally:
        if writer is not None:
            await _close(writer, deadline)
    if cert is not None and cert.error is not None:
        return ProbeResult(ok=False, latency=latency, error=cert.error, details=details)
    if cert is not None and cert.warning is not None:
        return ProbeResult(
            ok=True, latency=latency, degraded=True, error=cert.warning, details=details
        )
    return ProbeResult(ok=True, latency=latency, details=details)
