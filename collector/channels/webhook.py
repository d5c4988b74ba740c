"""A generic JSON webhook signed with HMAC-SHA256 (issue 11).

Headers: ``X-Availmon-Timestamp`` (Unix seconds), ``X-Availmon-Signature``
(``sha256=`` + hex HMAC of ``"<timestamp>." + body`` under the shared secret) and
``Idempotency-Key`` (the outbox key: the same message retried has the same key). A
receiver checks with :func:`verify`: a bad signature, a timestamp outside the tolerance,
or a signature already seen (a replay) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from availmon.alertconfig import WebhookChannel
from availmon.text import one_line
from collector.channels.http import post_json

if TYPE_CHECKING:
    from collector.channels import Deps

TIMESTAMP = "X-Availmon-Timestamp"
SIGNATURE = "X-Availmon-Signature"
IDEMPOTENCY = "Idempotency-Key"
#: How far a receiver lets a timestamp stray from its clock (Stripe and Slack use 5 min).
TOLERANCE = 300.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    seen: MutableMapping[str, float],
    now: Callable[[], float] = time.time,
    tolerance: float = TOLERANCE,
) -> str | None:
    """Why a received webhook must be refused, or None when it is genuine and new. ``seen``
    remembers signatures within the tolerance (the receiver's replay cache)."""
    stamp, given = headers.get(TIMESTAMP, ""), headers.get(SIGNATURE, "")
    if not stamp.isdigit() or not given:
        return "missing timestamp or signature"
    if not hmac.compare_digest(sign(secret, int(stamp), body), given):
        return "bad signature"
    t = now()
    if abs(t - int(stamp)) > tolerance:
        return "timestamp outside the tolerance (a replay?)"
    for sig, at in list(seen.items()):
        if t - at > 2 * tolerance:
            del seen[sig]
    if given in seen:
        return "replayed signature"
    seen[given] = t
    return None


class Webhook:
    def __init__(self, cfg: WebhookChannel, deps: Deps) -> None:
        self.cfg = cfg
        self.deps = deps
        self.secret = cfg.secret()

    async def send(self, message: Mapping[str, Any]) -> None:
        # ``title`` is the message's one line (receivers make a subject of it); the other
        # fields are data, as the collector has them (JSON escapes their line breaks).
        if isinstance(message.get("title"), str):
            message = {**message, "title": one_line(message["title"])}
        body = json.dumps(message, sort_keys=True).encode()
        stamp = int(time.time())
        headers = {
            TIMESTAMP: str(stamp),
            SIGNATURE: sign(self.secret, stamp, body),
            IDEMPOTENCY: str(message.get("key", "")),
        }
        await post_json(
            self.deps.session,
            self.cfg.url,
            None,
            data=body,
            headers=headers,
            timeout=self.cfg.timeout,
        )
