"""Email over SMTP with STARTTLS (issue 11), through aiosmtplib: a plain-text part and an
HTML part, a Message-ID made from the outbox key (a message sent twice is recognisably the
same one) and the resolution threaded under its alert."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import aiosmtplib
from jinja2 import Environment

from availmon.alertconfig import EmailChannel
from availmon.text import one_line
from collector.alerts import text_body

if TYPE_CHECKING:
    from collector.channels import Deps

_HTML = Environment(autoescape=True).from_string(
    """<!doctype html><html><body style="font-family:sans-serif">
<h2 style="color:{{ '#1a7f37' if m.kind == 'resolved' else '#b42318' }}">{{ m.title }}</h2>
<table cellpadding="4">
{% for k, v in rows %}<tr><th align="left" valign="top">{{ k }}</th><td>{{ v }}</td></tr>
{% endfor %}</table>
<p><a href="{{ m.url }}">Open this outage on the board</a></p>
<p style="color:#555">Alert {{ m.outage_id }} (route {{ m.route }}).</p>
</body></html>"""
)


def message_id(key: str, domain: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def compose(cfg: EmailChannel, m: Mapping[str, Any], tz: Any) -> EmailMessage:
    text = text_body(m, tz)
    rows = []
    for line in text.splitlines()[2:]:
        key, sep, value = line.partition(": ")
        if sep and not key.startswith("Alert "):
            rows.append((key, value))
    msg = EmailMessage()
    # One line whatever the payload holds (one queued before titles were one line, too): a
    # line break in a header is a ValueError here, not a header injection.
    msg["Subject"] = one_line(m["title"])
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=False)
    domain = cfg.sender.rsplit("@", 1)[1]
    msg["Message-ID"] = message_id(str(m.get("key", m["title"])), domain)
    if m["kind"] != "firing" and m.get("channel"):
        first = message_id(f"{m['outage_id']}/firing/{m['channel']}", domain)
        msg["In-Reply-To"] = first
        msg["References"] = first
    msg.set_content(text)
    msg.add_alternative(_HTML.render(m=m, rows=rows), subtype="html")
    return msg


class Email:
    def __init__(self, cfg: EmailChannel, deps: Deps) -> None:
        self.cfg = cfg
        self.deps = deps
        self.password = cfg.password()
        self.tls: ssl.SSLContext | None = None
        if cfg.security != "none":
            # Built once and shared (DESIGN: hot paths); a CA bundle of our own when given.
            self.tls = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)

    async def send(self, message: Mapping[str, Any]) -> None:
        from collector.channels import DeliveryError

        cfg = self.cfg
        try:
            await aiosmtplib.send(
                compose(cfg, message, self.deps.tz),
                hostname=cfg.host,
                port=cfg.port,
                username=cfg.username,
                password=self.password,
                start_tls=cfg.security == "starttls",
                use_tls=cfg.security == "tls",
                tls_context=self.tls,
                timeout=cfg.timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.code}: {exc.message[:120]}") from None
        except aiosmtplib.SMTPException as exc:
            raise DeliveryError(f"SMTP: {str(exc)[:160]}") from None
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"SMTP: {exc.strerror or exc}"[:160]) from None
