"""``availmon alerts list|ack|test`` (real subprocesses on a real database) and the
acknowledgement through the API and the board's form, behind the write token (issue 11)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from availmon.cli import main
from availmon.schema import State
from collector.main import Collector
from collector.web import make_app
from tests.alert_peers import hook_receiver
from tests.collector.alert_helpers import MONDAY_22, alert_data, alert_estate, outbox
from tests.collector.board_helpers import Feed
from tests.conftest import CANARY
from tests.e2e.procs import write_config
from tests.peers import write_secret

SECRET = f"hook-{CANARY}"
TOKEN = f"write-{CANARY}"


async def availmon(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "availmon.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def routes() -> dict[str, Any]:
    return {"routes": [{"name": "night", "channels": ["team"], "repeat": "30m"}]}


async def test_alerts_list_and_ack_from_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "estate.toml"
    write_config(config, alert_data(tmp_path, routes()))
    c = Collector(alert_estate(tmp_path, routes()))
    oid = await Feed(c).event("dc", "webmail", "email", State.UP, State.DOWN, MONDAY_22, "HTTP 503")
    await c.alerting.step(MONDAY_22)
    c.close()
    code, out, _ = await availmon("alerts", "list", "--config", str(config))
    assert code == 0
    header, row, total = out.splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "DELIVERY", "SEVERITY"]
    assert row.split()[:6] == [oid, "open", "pending", "page", "dc", "webmail"]
    assert total == "1 alert(s)"
    code, out, _ = await availmon("alerts", "ack", oid, "--by", "Dana", "--config", str(config))
    assert (code, out.strip()) == (0, f"{oid}: acknowledged by Dana; status open")
    code, out, _ = await availmon("alerts", "list", "--open", "--config", str(config))
    assert "acknowledged by Dana" in out
    code, _, err = await availmon("alerts", "ack", "o:nope", "--config", str(config))
    assert (code, err.strip()) == (
        2,
        "availmon: no alert with id 'o:nope' (see 'availmon alerts list')",
    )
    # The engine honours an acknowledgement made by another process: no repeat.
    again = Collector(alert_estate(tmp_path, routes()))
    try:
        assert await again.alerting.step(MONDAY_22.replace(hour=23)) == 0
    finally:
        again.close()


async def test_alerts_test_sends_through_a_routes_channels(tmp_path: Path) -> None:
    async with hook_receiver(SECRET) as rx:
        data = alert_data(
            tmp_path,
            routes(),
            channels={"team": {"type": "webhook", "url": rx.url, "secret_env": "HOOK_SECRET"}},
        )
        config = tmp_path / "estate.toml"
        write_config(config, data)
        env = {"HOOK_SECRET": SECRET}
        code, out, err = await availmon("alerts", "test", "night", "--config", str(config), env=env)
        assert (code, out.strip(), err) == (0, "team: sent", "")
        (got,) = rx.received
        assert got["kind"] == "test"
        assert got["title"].startswith("TEST: test alert at Data centre")
        rx.down = True
        code, out, _ = await availmon("alerts", "test", "night", "--config", str(config), env=env)
        assert code == 1
        assert out.startswith("team: failed: HTTP 503")
        code, _, err = await availmon("alerts", "test", "nope", "--config", str(config), env=env)
        assert (code, err.strip()) == (2, "availmon: no route 'nope' (alerts.routes: night)")


async def test_acknowledge_through_the_api_and_the_board(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    token = write_secret(tmp_path / "token", TOKEN)
    c = Collector(alert_estate(tmp_path, routes(), web={"token_file": str(token)}))
    try:
        feed = Feed(c)
        oid = await feed.event("dc", "webmail", "email", State.UP, State.DOWN, MONDAY_22)
        other = await feed.event(
            "dc", "council-website", "internet_web", State.UP, State.DOWN, MONDAY_22
        )
        await c.alerting.step(MONDAY_22)
        client = await aiohttp_client(make_app(c))
        listed = await (await client.get("/api/v1/alerts?open=true")).json()
        assert {a["id"]: a["delivery"] for a in listed["alerts"]} == {
            oid: "pending",
            other: "pending",
        }
        url = f"/api/v1/alerts/{oid}/ack"
        r = await client.post(url, json={}, headers={"X-Availmon-User": "Eve"})
        assert r.status == 401
        who = {"Authorization": f"Bearer {TOKEN}", "X-Availmon-User": "Eve"}
        r = await client.post(url, json={}, headers=who)
        assert r.status == 200, await r.text()
        body = await r.json()
        assert (body["delivery"], body["acknowledged_by"]) == ("acknowledged", "Eve")
        assert [m["kind"] for m in body["outbox"]] == ["firing"]
        r = await client.post("/api/v1/alerts/o:nope/ack", json={}, headers=who)
        assert r.status == 404
        # The board: the outage page says so, and offers the form for the other one.
        page = await (await client.get(f"/board/outages/{oid}")).text()
        assert "Acknowledged</dt><dd>by Eve" in page
        assert f'action="/board/outages/{oid}/ack"' not in page
        page = await (await client.get(f"/board/outages/{other}")).text()
        assert f'action="/board/outages/{other}/ack"' in page
        r = await client.post(
            f"/board/outages/{other}/ack",
            data={"by": "Frank", "token": TOKEN},
            allow_redirects=False,
        )
        assert r.status == 303
        assert r.headers["Location"].endswith("?saved=acknowledge")
        acked = await (await client.get("/api/v1/alerts")).json()
        assert {a["id"]: a["acknowledged_by"] for a in acked["alerts"]} == {
            oid: "Eve",
            other: "Frank",
        }
        assert [m["status"] for m in outbox(c)] == ["pending", "pending"]
    finally:
        c.close()


@pytest.mark.parametrize("limit", ["99999999999999999999", "-1", "0", "10001", "5.0", ""])
def test_alerts_list_limit_out_of_range_is_a_usage_error(
    limit: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A huge one was 'unexpected OverflowError' (SQLite's INTEGER), -1 listed everything."""
    with pytest.raises(SystemExit) as exited:
        main(["alerts", "list", "--limit", limit, "--config", str(config_file)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"availmon alerts list: error: argument --limit: expected a number 1-10000, got {limit!r}"
    )


async def test_alerts_test_names_a_channels_bug_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A channel raising something that is no DeliveryError crashed the command with a
    traceback quoting the exception's text (which may hold the channel's secret URL)."""
    from collector import channels
    from collector.cli import cmd_alerts_test

    data = alert_data(
        tmp_path,
        routes(),
        channels={"team": {"type": "webhook", "url": "http://127.0.0.1:9/", "secret_env": "H"}},
    )
    config = tmp_path / "estate.toml"
    write_config(config, data)
    monkeypatch.setenv("H", SECRET)
    real = channels.build

    class Broken:
        async def send(self, message: Any) -> None:
            raise RuntimeError(f"bug quoting {CANARY}")

    monkeypatch.setattr(channels, "build", lambda *a: {n: Broken() for n in real(*a)})
    args = argparse.Namespace(route="night", config=config)
    assert await cmd_alerts_test(args) == 1
    out = capsys.readouterr().out
    assert out == "team: failed: unexpected error: RuntimeError (a bug)\n"
    assert CANARY not in out
