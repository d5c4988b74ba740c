"""Nothing lost, nothing twice (issue 11, part 5), with real processes: an agent's check
fails, the collector opens the outage and queues its alert while the receiver is down;
the collector is killed with SIGKILL before it could deliver; the receiver comes back and
the collector restarts: the receiver gets the alert exactly once, then its resolution."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.alert_peers import hook_receiver
from tests.conftest import CANARY, assert_no_canary
from tests.e2e import procs
from tests.e2e.procs import poll_until, query, running, wait_collector_ready
from tests.peers import estate_data, free_port, http_target, mosquitto, web_check, write_secret

SECRET = f"hook-{CANARY}"


async def test_kill_9_between_outage_and_delivery_then_delivered_exactly_once(
    tmp_path: Path,
) -> None:
    async with (
        mosquitto(tmp_path / "mosquitto") as broker,
        http_target() as target,
        hook_receiver(SECRET) as rx,
    ):
        rx.down = True
        web_port = free_port()
        secret = write_secret(tmp_path / "hook-secret", SECRET)
        data = estate_data(
            tmp_path,
            broker.port,
            [web_check(target.url)],
            extra={
                "web": {"port": web_port},
                "alerts": {
                    "board_url": f"http://127.0.0.1:{web_port}/",
                    "retry_initial": 0.2,
                    "retry_max": 0.5,
                    "channels": {
                        "team": {"type": "webhook", "url": rx.url, "secret_file": str(secret)}
                    },
                    "routes": [{"name": "all", "channels": ["team"]}],
                },
            },
        )
        config = tmp_path / "estate.toml"
        procs.write_config(config, data)
        db = tmp_path / "collector.db"
        collector = procs.collector(config, tmp_path / "collector.log")
        agent = procs.agent(config, "hq", tmp_path / "agent.log")
        async with running(collector, agent):
            await wait_collector_ready(collector, web_port)
            await poll_until(
                lambda: query(db, "SELECT state FROM check_status WHERE check_name='web'"),
                lambda rows: bool(rows) and rows[0][0] == "up",
                what="web up",
                alive=collector,
            )
            target.healthy = False
            # Queued, tried, refused by the receiver: the alert waits in the outbox.
            failed = await poll_until(
                lambda: query(db, "SELECT key, status, attempts FROM outbox"),
                lambda rows: bool(rows) and rows[0]["attempts"] >= 1,
                what="a failed delivery",
                alive=collector,
            )
            key = failed[0]["key"]
            assert failed[0]["status"] == "failed"
            assert await collector.kill9() == -9
            assert rx.received == []
            rx.down = False
            collector.start()
            await rx.wait_for(lambda: key in rx.delivered_keys())
            target.healthy = True
            await rx.wait_for(lambda: any(m["kind"] == "resolved" for m in rx.received))
            sent = await poll_until(
                lambda: query(db, "SELECT status FROM outbox"),
                lambda rows: len(rows) == 2 and {r[0] for r in rows} == {"sent"},
                what="both messages marked sent",
                alive=collector,
            )
            assert len(sent) == 2
        assert [m["kind"] for m in rx.received] == ["firing", "resolved"]
        assert set(Counter(rx.delivered_keys()).values()) == {1}
        firing = rx.received[0]
        assert (firing["site"], firing["check"], firing["state"]) == ("hq", "web", "down")
        assert firing["reason"] == "HTTP 503"
        assert_no_canary(collector.text(), agent.text())
