"""The one JSON POST the HTTP channels share: a short reason on failure, never a secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> None:
    """POST ``body`` as JSON (or ``data`` as given); a non-2xx answer or a transport error
    is a DeliveryError naming the status or the failure, not the URL (it may be a secret)."""
    from collector.channels import DeliveryError

    payload = data if data is not None else json.dumps(body).encode()
    try:
        async with session.post(
            url,
            data=payload,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            if not 200 <= resp.status < 300:
                text = (await resp.text(errors="replace"))[:120].strip()
                raise DeliveryError(f"HTTP {resp.status}{f': {text}' if text else ''}")
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    except asyncio.CancelledError:
        raise
    except aiohttp.ClientConnectorError as exc:
        raise DeliveryError(f"cannot connect: {exc.os_error.strerror or exc.os_error}") from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(f"{type(exc).__name__}") from None
