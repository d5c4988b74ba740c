"""The board in a real headless Chromium (Debian's, driven by Playwright), fed by a real
agent probing a loopback HTTP target through a broker: the target fails and the tile turns
down without a reload, a write without the token is refused and with it succeeds (planned
work then shows as maintenance, live), the target recovers, and after a collector restart
the page reconnects by itself. At 1920x1080 (wall view) and 390x844 (phone); screenshots go
to build/screenshots/ for a person to look at."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.main import Agent
from availmon.config import Estate, parse_config
from availmon.schema import State
from collector.main import Collector
from tests.browser import chromium, needs_chromium
from tests.peers import (
    HttpTarget,
    amqtt_broker,
    estate_data,
    free_port,
    http_target,
    wait_until,
    web_check,
)

pytestmark = needs_chromium
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
TOKEN = "browser-test-token"
#: The brief's bound: a committed change reaches the page within this (a deadline, not a
#: speed assertion: Playwright awaits the condition and fails only if it never comes).
LIVE_MS = 5000


def board_config(tmp: Path, broker_port: int, target: HttpTarget) -> Estate:
    token = tmp / "web-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    data = estate_data(tmp, broker_port, [web_check(target.url, provider="Council web host")])
    data["name"] = "Shared ICT service"
    data["web"] = {"listen": "127.0.0.1", "port": free_port(), "token_file": str(token)}
    data["sites"]["hq"]["name"] = "Guildhall, Cambridge"
    return parse_config(data, "test")


@dataclass
class System:
    cfg: Estate
    target: HttpTarget
    collector: Collector
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.web.port}"

    def state(self) -> State | None:
        live = self.collector.live.get(("hq", "web"))
        return live.state if live else None

    async def restart_collector(self) -> None:
        self.stop.set()
        await self.task
        self.collector = Collector(self.cfg)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.collector.run(self.stop))
        await asyncio.wait_for(self.collector.web_ready.wait(), 30)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async with amqtt_broker() as broker, http_target() as target:
        cfg = board_config(tmp_path, broker.port, target)
        collector = Collector(cfg)
        stop, agent_stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        await asyncio.wait_for(collector.connected.wait(), 30)
        agent = asyncio.create_task(Agent(cfg, "hq").run(agent_stop))
        s = System(cfg, target, collector, stop, task)
        await wait_until(collector.changed, lambda: s.state() is State.UP, 30)
        try:
            yield s
        finally:
            agent_stop.set()
            s.stop.set()
            await asyncio.wait_for(asyncio.gather(agent, s.task), 60)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def states_have_text(page: Any) -> None:
    """Every state on the page is a word (and an icon's shape), not colour alone; icons are
    hidden from screen readers because the word is there."""
    problems = await page.evaluate(
        """() => {
          const bad = [];
          for (const el of document.querySelectorAll('.st, .tile, .banner')) {
            if (!el.textContent.trim()) bad.push(el.outerHTML.slice(0, 120));
          }
          for (const svg of document.querySelectorAll('svg.ico')) {
            if (svg.getAttribute('aria-hidden') !== 'true') bad.push('icon not aria-hidden');
          }
          for (const img of document.querySelectorAll('svg[role=img]')) {
            if (!img.getAttribute('aria-label')) bad.push('chart without a label');
          }
          return bad;
        }"""
    )
    assert problems == []


async def nothing_cut_off(page: Any) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size["width"]
    assert width <= viewport, f"page is {width}px wide in a {viewport}px viewport"


async def test_board_live_in_chromium(system: System, browser: Any) -> None:
    from playwright.async_api import expect

    wall = await browser.new_page(viewport={"width": 1920, "height": 1080})
    phone = await browser.new_page(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    await wall.goto(f"{system.url}/?wall")
    await phone.goto(f"{system.url}/")
    pages = {"wall": wall, "phone": phone}
    for name, page in pages.items():
        await expect(page.locator(".tile[data-check='hq/web']")).to_have_attribute(
            "data-state", "up"
        )
        await expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
        await page.evaluate("window.notReloaded = true")
        await states_have_text(page)
        await nothing_cut_off(page)
        await shot(page, f"{name}-1-up")

    # The target fails: the agent sees three failed probes, the collector commits the
    # outage, and both pages turn the tile down without a reload.
    system.target.healthy = False
    await wait_until(system.collector.changed, lambda: system.state() is State.DOWN, 30)
    for name, page in pages.items():
        tile = page.locator(".tile[data-check='hq/web']")
        await expect(tile).to_have_attribute("data-state", "down", timeout=LIVE_MS)
        await expect(tile).to_contain_text("Down")
        await expect(page.locator(".banner")).to_contain_text("1 service down at 1 site")
        await expect(page.locator(".outage .o-reason")).to_contain_text("HTTP 503")
        assert await page.evaluate("window.notReloaded") is True
        await states_have_text(page)
        await nothing_cut_off(page)
        await shot(page, f"{name}-2-down")

    # Writes: refused without the token, recorded with it (who and when).
    oid = await phone.locator(".outage").get_attribute("data-outage")
    assert oid is not None
    api = f"{system.url}/api/v1/outages/{oid}/annotations"
    refused = await phone.request.post(
        api, data={"planned": True}, headers={"X-Availmon-User": "mallory"}
    )
    assert refused.status == 401
    editor = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    await editor.goto(f"{system.url}/board/outages/{oid}")
    await editor.fill("input[name=cause]", "web host maintenance overran")
    await editor.check("input[name=planned][value=yes]")
    await editor.fill("input[name=by]", "Dana Jones")
    await editor.fill("input[name=token]", "not-the-token")
    await editor.click("button[type=submit]")
    await expect(editor.locator(".msg-error")).to_contain_text("writing needs the token")
    await editor.fill("input[name=cause]", "web host maintenance overran")
    await editor.check("input[name=planned][value=yes]")
    await editor.fill("input[name=by]", "Dana Jones")
    await editor.fill("input[name=token]", TOKEN)
    await editor.click("button[type=submit]")
    await expect(editor.locator(".msg-ok")).to_contain_text("Saved")
    await expect(editor.locator("table").last).to_contain_text("Dana Jones")
    await nothing_cut_off(editor)
    await shot(editor, "phone-3-outage-page")
    # Planned work is maintenance, never red, on the live board too.
    for name, page in pages.items():
        tile = page.locator(".tile[data-check='hq/web']")
        await expect(tile).to_have_attribute("data-state", "maintenance", timeout=LIVE_MS)
        await expect(page.locator(".banner")).to_contain_text("1 in planned maintenance")
        await expect(page.locator(".outage-down")).to_have_count(0)
        await shot(page, f"{name}-3-maintenance")

    # It recovers.
    system.target.healthy = True
    await wait_until(system.collector.changed, lambda: system.state() is State.UP, 30)
    for name, page in pages.items():
        tile = page.locator(".tile[data-check='hq/web']")
        await expect(tile).to_have_attribute("data-state", "up", timeout=LIVE_MS)
        await expect(page.locator(".banner")).to_contain_text("All services up")
        assert await page.evaluate("window.notReloaded") is True
        await shot(page, f"{name}-4-recovered")

    # Paper: the print stylesheet keeps states as words, drops the live controls.
    await phone.emulate_media(media="print")
    await expect(phone.locator("#conn")).to_be_hidden()
    await shot(phone, "print")
    await phone.emulate_media(media="screen")

    # The check's history page: bars and uptime, readable on a phone.
    await phone.goto(f"{system.url}/board/checks/hq/web")
    # The outage was marked planned: its hour is a maintenance bar, never a red one.
    bars = phone.locator(".bars-w[data-window='24h']")
    await expect(bars.locator(".bar-maintenance")).not_to_have_count(0)
    await expect(bars.locator(".bar-down")).to_have_count(0)
    await nothing_cut_off(phone)
    await states_have_text(phone)
    await shot(phone, "phone-5-check-history")


async def test_board_reconnects_after_a_collector_restart(system: System, browser: Any) -> None:
    from playwright.async_api import expect

    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(system.url + "/")
    board = page.locator("#board")
    await expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
    first = await board.get_attribute("data-event-id")
    assert first is not None
    boot = first.split("-")[0]
    await page.evaluate("window.notReloaded = true")
    system.stop.set()
    await system.task
    await expect(page.locator("#conn")).to_have_attribute("data-conn", "reconnecting")
    await system.restart_collector()
    # EventSource reconnects by itself; the new collector (another boot id) sends the board.
    await expect(page.locator("#conn")).to_have_attribute("data-conn", "live", timeout=15_000)
    await expect(board).not_to_have_attribute("data-event-id", first)
    now = await board.get_attribute("data-event-id")
    assert now is not None
    assert not now.startswith(boot)
    assert await page.evaluate("window.notReloaded") is True
