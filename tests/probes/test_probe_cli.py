"""Every probe type this module set owns runs through ``availmon probe`` and through a whole
estate config with its options written flat in the check's table, as the docs show them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from probe_peers import LOOPBACK, free_port

from availmon.cli import main
from availmon.config import parse_config
from probes import icmp


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["probe", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["http", "http://{hp}/", "--expect-status", "200", "--body-contains", "ok"],
         "connection refused"),
        (["tcp", "{hp}", "--send", "PING", "--expect", "PONG"], "connection refused"),
        (["dns", "{hp}", "--query-name", "example.test", "--expect", "198.18.0.10",
          "--protocol", "tcp"], "connection refused"),
        (["smtp", "{hp}", "--starttls"], "connection refused"),
        (["sip", "{hp}", "--transport", "tcp", "--accept-codes", "404"], "connection refused"),
    ],
)  # fmt: skip
def test_cli_runs_every_type(
    capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    hp = f"{LOOPBACK}:{free_port()}"  # nothing listens there
    code, out = run_cli(capsys, *(a.format(hp=hp) for a in argv), "--timeout", "2")
    assert (code, out["type"], out["ok"], out["error"]) == (1, argv[0], False, error)


@pytest.mark.skipif(icmp.icmp_mode() is icmp.Mode.NONE, reason="ICMP not permitted here")
def test_cli_icmp_up(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(capsys, "icmp", "127.0.0.1", "--count", "2", "--echo-interval", "0.01")
    assert (code, out["ok"], out["loss"], out["details"]["received"]) == (0, True, 0.0, 2)


def test_cli_bad_option_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["probe", "dns", "127.0.0.1", "--query-name", "x.test", "--record-type", "NOPE"])
    assert code == 2
    assert "--record_type: Value error, unknown record type 'NOPE'" in capsys.readouterr().err


def test_cli_missing_ca_file_names_the_key_and_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "private-ca.pem"
    code = main(["probe", "http", f"http://{LOOPBACK}:{free_port()}/", "--ca-file", str(missing)])
    assert (code, capsys.readouterr().err) == (
        3,
        f"availmon: ca_file: cannot read {missing}: No such file or directory\n",
    )


CHECKS: list[dict[str, Any]] = [
    {"type": "http", "target": "https://127.0.0.1/", "expect_status": [200, 301],
     "body_regex": "ok", "headers": {"Host": "intranet.test"}, "cert_expiry_warn_days": 30,
     "username": "probe", "password_env": "AVM_PW", "follow_redirects": False},
    {"type": "tcp", "target": "127.0.0.1:22", "expect": "^SSH-2\\.0-", "send": "\r\n"},
    {"type": "dns", "target": "127.0.0.1", "query_name": "example.test", "record_type": "MX",
     "expect": ["mail.example.test"], "protocol": "tcp"},
    {"type": "smtp", "target": "127.0.0.1:587", "starttls": True, "ca_file": "/etc/ca.pem"},
    {"type": "sip", "target": "127.0.0.1", "transport": "tcp", "accept_codes": [200, 404]},
    {"type": "icmp", "target": "127.0.0.1", "count": 5, "echo_interval": 0.1},
]  # fmt: skip


@pytest.mark.parametrize("raw", CHECKS, ids=[c["type"] for c in CHECKS])
def test_flat_options_in_an_estate_config(raw: dict[str, Any]) -> None:
    # No probe option may share a name with a check key (name, interval, timeout...): it would
    # be taken by the check and never reach the probe.
    check = {"name": "c", "area": "servers", "interval": 30, "timeout": 5, **raw}
    estate = parse_config({"sites": {"s": {"partner": "p", "checks": [check]}}})
    parsed = estate.sites["s"].checks[0].parsed_options()
    for key, value in raw.items():
        if key in ("type", "target"):
            continue
        got = getattr(parsed, key)
        got = got.pattern if hasattr(got, "pattern") else got
        got = list(got) if isinstance(got, tuple) else got
        assert (str(got) if key == "ca_file" else got) == value, key
