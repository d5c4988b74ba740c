"""Real receivers for the alert tests (issue 11): Debian's prometheus-alertmanager on a
loopback port, a webhook receiver that checks signatures and refuses replays, and an
aiosmtpd server that speaks STARTTLS. Readiness is the peer's own answer, never a sleep."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from collector.channels import webhook
from tests.peers import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


@dataclass
class HookReceiver:
    """An aiohttp webhook receiver: verifies the HMAC signature and the timestamp, refuses
    replays, and counts each message by its Idempotency-Key. ``down`` answers 503."""

    secret: str
    down: bool = False
    port: int = 0
    #: Accepted bodies in arrival order (duplicates by key included, for counting).
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    #: Bodies posted by anything unsigned (Alertmanager's own notifications).
    plain: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)
    #: The last signed request as it came (headers, body): for replaying it.
    last: tuple[dict[str, str], bytes] | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            self.last = (dict(request.headers), body)
            if self.down:
                return web.Response(status=503, text="receiver down for the test")
            why = webhook.verify(self.secret, request.headers, body, seen=self.seen)
            async with self.changed:
                if why is not None:
                    self.refused.append(why)
                    self.changed.notify_all()
                    return web.json_response({"error": why}, status=401)
                self.received.append(json.loads(body))
                self.changed.notify_all()
            return web.json_response({"ok": True})

        async def plain(request: web.Request) -> web.Response:
            async with self.changed:
                self.plain.append(await request.json())
                self.changed.notify_all()
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_post("/plain", plain)
        return app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered_keys(self) -> list[str]:
        return [m["key"] for m in self.received]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)


@contextlib.asynccontextmanager
async def hook_receiver(secret: str, port: int = 0) -> AsyncIterator[HookReceiver]:
    receiver = HookReceiver(secret)
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()


@dataclass
class Alertmanager:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """Alertmanager's own view: ``GET /api/v2/alerts`` (resolved alerts are not shown)."""
        params = [("filter", f'{k}="{v}"') for k, v in filters.items()]
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{self.url}/api/v2/alerts", params=params) as r,
        ):
            r.raise_for_status()
            data: list[dict[str, Any]] = await r.json()
            return data


def _launch(workdir: Path, notify_url: str) -> tuple[int, subprocess.Popen[bytes], Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "alertmanager.yml"
    conf.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: [outage_id]\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 4h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: {notify_url}\n"
        "        send_resolved: true\n"
    )
    port = free_port()
    log = (workdir / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={conf}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return port, proc, log


@contextlib.asynccontextmanager
async def alertmanager(workdir: Path, notify_url: str) -> AsyncIterator[Alertmanager]:
    """prometheus-alertmanager on a loopback port, its storage in ``workdir``, clustering
    off, routing every alert at once to ``notify_url`` (a webhook, resolutions included)."""
    port, proc, log = await asyncio.to_thread(_launch, workdir, notify_url)
    am = Alertmanager(port, proc)
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as s:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"alertmanager exited: {(workdir / 'alertmanager.log').read_text()}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(f"{am.url}/-/ready") as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError("alertmanager did not become ready in 30 s")
                await asyncio.sleep(0.1)  # polling the peer's readiness, with a deadline
        yield am
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
