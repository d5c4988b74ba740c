"""Probe options and targets that could never work are config errors naming the key and the
bad value: nothing `config check` accepts may crash a probe later or make it always fail."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from availmon.config import ConfigError, parse_config
from availmon.errors import StartupError
from availmon.secrets import HIDDEN_HEADER
from probes import http
from probes.registry import REGISTRY
from tests.peers import write_secret

SNMP = {"type": "snmp", "target": "127.0.0.1", "community_env": "AVM_C", "oid": "1.3.6.1.2"}


def estate(**check: object) -> dict[str, object]:
    """One check named ``web`` at site ``hq``; ``check`` sets its type, target and options."""
    base = {"name": "web", "type": "http", "target": "http://127.0.0.1:8080/", "area": "email"}
    return {
        "partners": {"CCC": {"name": "Cambridge City Council"}},
        "sites": {"hq": {"partner": "CCC", "checks": [{**base, **check}]}},
    }


def issues(**check: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(estate(**check), "estate.toml")
    return [str(i) for i in err.value.issues]


KEY = "estate.toml: sites.hq.checks.web"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "http://[::1/",
            "expected an http:// or https:// URL, got 'http://[::1/': a bracketed host must be"
            " an IPv6 address, as in http://[::1]/",
        ),
        (
            "http://[zz]/",
            "expected an http:// or https:// URL, got 'http://[zz]/': a bracketed host must be"
            " an IPv6 address, as in http://[::1]/",
        ),
        (
            "http://127.0.0.1:70000/",
            "expected a port 1-65535, got '70000' in 'http://127.0.0.1:70000/'",
        ),
        ("http://127.0.0.1:abc/", "expected a port 1-65535, got 'abc' in 'http://127.0.0.1:abc/'"),
        ("http://127.0.0.1:0/", "expected a port 1-65535, got '0' in 'http://127.0.0.1:0/'"),
        ("http://[::1]:-1/", "expected a port 1-65535, got '-1' in 'http://[::1]:-1/'"),
        ("http://a b/", "expected an http:// or https:// URL, got 'http://a b/'"),
    ],
)
def test_http_target_that_cannot_be_fetched(target: str, message: str) -> None:
    assert issues(target=target) == [f"{KEY}.target: {message}"]


ICMP_EXPECTED = "expected a host name or address (no scheme, port or path; IPv6 without brackets)"


@pytest.mark.parametrize("target", ["http://x", "127.0.0.1:80", "[::1]", "127.0.0.1/32"])
def test_icmp_target_is_a_host_only(target: str) -> None:
    assert issues(type="icmp", target=target) == [f"{KEY}.target: {ICMP_EXPECTED}, got {target!r}"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("[]:80", "expected host:port, got '[]:80'"),
        ("a b:80", "expected host:port, got 'a b:80'"),
    ],
)
def test_tcp_target_needs_a_host(target: str, message: str) -> None:
    assert issues(type="tcp", target=target) == [f"{KEY}.target: {message}"]


IN_BRACKETS = "an IPv6 address with a port goes in brackets, as in"


@pytest.mark.parametrize(
    ("check", "message"),
    [
        # Was host "::" port 1, and "::1" port 80: a port after an IPv6 address needs brackets.
        (
            {"type": "tcp", "target": "::1"},
            f"expected host:port, got '::1': {IN_BRACKETS} [::1]:80",
        ),
        (
            {"type": "tcp", "target": "::1:80"},
            f"expected host:port, got '::1:80': {IN_BRACKETS} [::1]:80",
        ),
        (
            {"type": "dns", "target": "ns1:ns2:53", "query_name": "example.test"},
            f"expected host or host:port, got 'ns1:ns2:53': {IN_BRACKETS} [::1]:53",
        ),
        (
            {"type": "tcp", "target": "[::1:80"},
            "expected host:port, got '[::1:80': unbalanced brackets",
        ),
        (
            {"type": "tcp", "target": "::1]:80"},
            "expected host:port, got '::1]:80': unbalanced brackets",
        ),
        (
            {"type": "sip", "target": "[::1"},
            "expected host or host:port, got '[::1': unbalanced brackets",
        ),
        (
            {"type": "tcp", "target": "[mx.example.test]:25"},
            "expected host:port, got '[mx.example.test]:25': a bracketed host must be an IPv6"
            " address, as in [::1]:80",
        ),
        # int() reads these as 8081 and 80; a port is ASCII digits.
        ({"type": "tcp", "target": "127.0.0.1:1_8081"}, "port '1_8081' is not a number"),
        ({"type": "tcp", "target": "127.0.0.1:+80"}, "port '+80' is not a number"),
        (  # Arabic-Indic digits 8 and 0
            {"type": "smtp", "target": "127.0.0.1:\u0668\u0660"},
            "port '\u0668\u0660' is not a number",
        ),
    ],
)
def test_host_port_target_has_one_reading(check: dict[str, object], message: str) -> None:
    assert issues(**check) == [f"{KEY}.target: {message}"]


def test_sip_target_needs_a_host() -> None:
    assert issues(type="sip", target="[]:5060") == [
        f"{KEY}.target: expected host or host:port, got '[]:5060'"
    ]


def test_header_value_with_a_line_break_names_the_header_never_the_value() -> None:
    found = issues(headers={"X-Site": "ccc\r\nX-Injected: yes"})
    assert found == [
        f"{KEY}.headers.X-Site: a header value is one line without control characters"
        f" (found '\\r') (got {HIDDEN_HEADER})"
    ]
    assert "Injected" not in found[0]


@pytest.mark.parametrize("name", ["X Site", "X-Site:", "Ünicode", ""])
def test_header_names_are_tokens(name: str) -> None:
    message = f"{name!r} is not a header name: use letters, digits and !#$%&'*+-.^_`|~"
    # Anything under headers is hidden; the message itself shows the name.
    assert issues(headers={name: "ccc"}) == [
        f"{KEY}.headers.{name}: {message} (got {HIDDEN_HEADER})"
    ]
    assert issues(header_files={name: "/etc/availmon/site"}) == [
        f"{KEY}.header_files.{name}: {message} (got {name!r})"
    ]


async def test_header_secret_of_two_lines_is_a_startup_error(tmp_path: Path) -> None:
    """A secret is read at each probe, not by `config check`: one that aiohttp would refuse to
    send stops the probe with its key, as a missing one does, not a crash every interval."""
    secret = write_secret(tmp_path / "api-key", "k3y-one\nX-Injected: k3y-two\n")
    options = REGISTRY["http"].parse_options({"header_files": {"X-Api-Key": str(secret)}})
    with pytest.raises(StartupError) as err:
        await http.probe("http://127.0.0.1:9/", 1.0, options)
    assert str(err.value) == (
        "header_files.X-Api-Key: a header value is one line without control characters"
        " (found '\\n')"
    )


async def test_bearer_token_of_two_lines_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AVM_TEST_TOKEN", "t0ken\r\nX-Injected: t0ken")
    options = REGISTRY["http"].parse_options({"bearer_token_env": "AVM_TEST_TOKEN"})
    with pytest.raises(StartupError) as err:
        await http.probe("http://127.0.0.1:9/", 1.0, options)
    assert str(err.value) == (
        "bearer_token_env: a header value is one line without control characters (found '\\r')"
    )


HELO_EXPECTED = (
    "expected a host name (letters, digits and hyphens, in labels joined by dots)"
    " or an address literal such as [192.0.2.1] or [IPv6:2001:db8::1]"
)


@pytest.mark.parametrize(
    ("helo_name", "found"),
    [
        # A CR LF ended EHLO and sent MAIL FROM as a command of its own.
        ("x\r\nMAIL FROM:<evil@x>", " (found '\\r')"),
        ("probe.example.test\nRSET", " (found '\\n')"),
        ("probe host", " (found ' ')"),
        ("probe_1.example.test", " (found '_')"),
        ("prøbe.example.test", " (found 'ø')"),  # EHLO is ASCII: a crash at every probe
        ("-probe.example.test", ""),
        ("probe..example.test", ""),
        ("[::1]", ""),  # an IPv6 literal is tagged: [IPv6:::1]
        ("[192.0.2.300]", ""),
        ("", ""),
    ],
)
def test_smtp_helo_name_is_a_host_name_or_address_literal(helo_name: str, found: str) -> None:
    assert issues(type="smtp", target="127.0.0.1", helo_name=helo_name) == [
        f"{KEY}.helo_name: {HELO_EXPECTED}{found} (got {helo_name!r})"
    ]


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        (
            {"down_below": 10, "down_above": 5},
            "down_below 10 is above down_above 5: every value would be down",
        ),
        (
            {"warn_below": 7.5, "warn_above": 2},
            "warn_below 7.5 is above warn_above 2: every value would be degraded",
        ),
        (
            {"warn_below": 10, "down_above": 5},
            "warn_below 10 is above down_above 5: every value would be degraded or down",
        ),
        (
            {"down_below": 10, "warn_above": 5},
            "down_below 10 is above warn_above 5: every value would be degraded or down",
        ),
    ],
)
def test_snmp_thresholds_that_every_value_crosses(
    thresholds: dict[str, float], message: str
) -> None:
    check = {**SNMP, **thresholds}
    options = {k: v for k, v in check.items() if k not in ("type", "target")}
    assert issues(**check) == [f"{KEY}: {message} (got {options!r})"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan"])
@pytest.mark.parametrize("key", ["warn_below", "warn_above", "down_below", "down_above"])
def test_snmp_thresholds_are_finite(key: str, value: Any) -> None:
    assert issues(**SNMP, **{key: value}) == [
        f"{KEY}.{key}: Input should be a finite number (got {value!r})"
    ]


def test_sip_accepts_at_least_one_code() -> None:
    assert issues(type="sip", target="127.0.0.1", accept_codes=[]) == [
        f"{KEY}.accept_codes: expected at least one final response code, e.g. [200] (got [])"
    ]


@pytest.mark.parametrize(
    "check",
    [
        {"type": "icmp", "target": "::1"},
        {"type": "icmp", "target": "fe80::1%lo"},
        {"type": "icmp", "target": "127.0.0.1"},
        {"type": "http", "target": "http://[::1]:8080/"},
        {"type": "http", "target": "https://127.0.0.1/"},
        {"type": "http", "target": "http://127.0.0.1:/"},  # an empty port is the default
        {"type": "http", "headers": {"Host": "intranet.test", "X-Note": "a\tb; c=d, é"}},
        {"type": "http", "header_files": {"X-Api-Key": "/etc/availmon/api-key"}},
        {"type": "tcp", "target": "[::1]:22"},
        {"type": "tcp", "target": "[fe80::1%lo]:22"},
        {"type": "smtp", "target": "::1"},  # unbracketed IPv6 where a default port applies
        {"type": "dns", "target": "[::1]", "query_name": "example.test"},
        {"type": "smtp", "target": "127.0.0.1", "helo_name": "probe-1.example.test"},
        {"type": "smtp", "target": "127.0.0.1", "helo_name": "[192.0.2.1]"},
        {"type": "smtp", "target": "127.0.0.1", "helo_name": "[IPv6:2001:db8::1]"},
        {"type": "sip", "target": "[::1]"},
        {"type": "sip", "target": "127.0.0.1", "accept_codes": [200, 404]},
        # equal bounds: the value must be exactly 2 (two power supplies)
        {**SNMP, "warn_below": 2, "warn_above": 2, "down_below": 1, "down_above": 3},
        {**SNMP, "down_below": -5.5, "warn_below": 0, "warn_above": 80, "down_above": 95},
    ],
)
def test_edge_values_that_work_still_pass(check: dict[str, object]) -> None:
    parse_config(estate(**check), "estate.toml")
