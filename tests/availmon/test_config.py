"""Bad config files paired with their exact messages (tests/config/invalid-*.toml + .err)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from availmon.config import load_config, parse_config, summary
from availmon.errors import ConfigError
from availmon.limits import CONFIG_MAX_BYTES
from probes.registry import REGISTRY

HERE = Path(__file__).resolve().parent.parent / "config"
CASES = sorted(HERE.glob("invalid-*.toml"))


def expected(case: Path) -> list[str]:
    text = case.with_suffix(".err").read_text()
    text = text.replace("{file}", str(case)).replace("{types}", ", ".join(sorted(REGISTRY)))
    return text.splitlines()


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_config_reports_file_key_and_value(case: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(case)
    assert [str(i) for i in err.value.issues] == expected(case)


def test_shipped_configs_are_valid() -> None:
    root = HERE.parent.parent / "config"
    for path in [HERE / "base.toml", *root.glob("*.toml")]:
        assert summary(load_config(path)).startswith("ok: ")


def test_demo_config_summary() -> None:
    estate = load_config(HERE.parent.parent / "config" / "demo.toml")
    assert summary(estate) == (
        "ok: 4 sites, 8 checks (email 1, internet_web 2, network_telephony 4, servers 1);"
        " 1 alert route, 1 channel"
    )
    assert estate.areas["email"].name == "Email"
    assert estate.check("dc", "webmail") is not None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "availmon.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_cli_exit_codes() -> None:
    case = HERE / "invalid-duplicate-check.toml"
    bad = cli("config", "check", str(case))
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == expected(case)
    good = cli("config", "check", str(HERE / "base.toml"))
    assert good.returncode == 0
    assert good.stdout.strip() == "ok: 1 sites, 1 checks (internet_web 1)"


def test_config_check_warns_of_a_config_with_no_sites(tmp_path: Path) -> None:
    """Valid (the daemons start on it), but never what is meant: it passed as 'ok: 0
    sites' with nothing to say that an agent would probe nothing."""
    empty = tmp_path / "empty.toml"
    empty.write_text('name = "nothing yet"\n')
    done = cli("config", "check", str(empty))
    assert (done.returncode, done.stdout.strip()) == (0, "ok: 0 sites, 0 checks (none)")
    assert done.stderr.splitlines() == [
        f"{empty}: sites: warning: no sites: an agent has nothing to probe and the collector"
        " refuses every event"
    ]
    assert cli("config", "check", str(HERE / "base.toml")).stderr == ""


def test_missing_file_is_named() -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file"):
        load_config(HERE / "nope.toml")


def test_a_config_that_is_not_a_file_is_refused_not_read_for_ever(tmp_path: Path) -> None:
    """/dev/zero was read until memory ran out, a FIFO waited for a writer for ever."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    large = tmp_path / "large.toml"
    with large.open("wb") as f:
        f.truncate(CONFIG_MAX_BYTES + 1)  # sparse: nothing written
    for path, message in [
        (Path("/dev/zero"), "cannot read: not a regular file"),
        (fifo, "cannot read: a pipe nothing was written to"),  # no writer: not waited for
        (large, f"cannot read: larger than {CONFIG_MAX_BYTES} bytes"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert [str(i) for i in err.value.issues] == [f"{path}: {message}"]


def test_a_config_may_come_through_a_pipe() -> None:
    """'render | availmon config check /dev/stdin' and '<(render)' are pipes: refused with
    the devices at first, they are read (to the same limit); a pipe that gives nothing is
    not taken for an empty config."""
    base = (HERE / "base.toml").read_text()
    argv = [sys.executable, "-m", "availmon.cli", "config", "check", "/dev/stdin"]
    good = subprocess.run(argv, input=base, capture_output=True, text=True, timeout=60)
    assert (good.returncode, good.stdout.strip()) == (0, "ok: 1 sites, 1 checks (internet_web 1)")
    empty = subprocess.run(argv, input="", capture_output=True, text=True, timeout=60)
    assert (empty.returncode, empty.stderr.strip()) == (
        2,
        "/dev/stdin: cannot read: a pipe nothing was written to",
    )


def test_a_config_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    """tomllib parses nesting recursively: 'unexpected RecursionError' before."""
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(i) for i in err.value.issues] == [f"{path}: not valid TOML: nested too deeply"]


def check_with(**keys: object) -> dict[str, object]:
    check = {"name": "web", "type": "http", "target": "http://127.0.0.1:8080/"}
    return {
        "partners": {"CCC": {"name": "Cambridge City Council"}},
        "sites": {"hq": {"partner": "CCC", "checks": [{**check, "area": "email", **keys}]}},
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (2.5, 2.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        (" 45 s ", 45.0),
    ],
)
def test_durations_are_seconds_or_text(text: object, seconds: float) -> None:
    """README: durations are seconds or text such as "30s", "5m", "250ms"."""
    estate = parse_config(check_with(interval=text, timeout=0.1, degraded_latency=text), "t")
    [check] = estate.sites["hq"].checks
    assert (check.interval, check.degraded_latency) == (seconds, seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 minutes", "expected seconds or a duration such as '30s', '5m', '250ms'"),
        ("-5s", "expected seconds or a duration such as '30s', '5m', '250ms'"),
        ("0s", "Input should be greater than 0"),
        (0, "Input should be greater than 0"),
    ],
)
def test_bad_durations_name_key_and_value(text: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(check_with(interval=text), "estate.toml")
    [issue] = err.value.issues
    assert str(issue) == f"estate.toml: sites.hq.checks.web.interval: {message} (got {text!r})"


@pytest.mark.parametrize(
    ("accounting", "region"),
    [
        ({}, ("GB", "ENG")),
        ({"holidays_subdiv": "SCT"}, ("GB", "SCT")),
        ({"holidays_subdiv": ""}, ("GB", "")),
        # England is the default country's default region, not every country's.
        ({"holidays_country": "IE"}, ("IE", None)),
        ({"holidays_country": "US", "holidays_subdiv": "CA"}, ("US", "CA")),
    ],
)
def test_bank_holidays_of_a_country_or_region(
    accounting: dict[str, object], region: tuple[str, str | None]
) -> None:
    acc = parse_config({**check_with(), "accounting": accounting}, "t").accounting
    assert (acc.holidays_country, acc.holidays_subdiv) == region


@pytest.mark.parametrize(
    ("accounting", "message"),
    [
        (
            {"holidays_subdiv": "Kernow"},
            "accounting.holidays_subdiv: GB has no region 'Kernow'"
            ' (known: ENG, NIR, SCT, WLS; "" for the whole country)',
        ),
        (
            {"holidays_country": "IE", "holidays_subdiv": "ENG"},
            "accounting.holidays_subdiv: IE has no region 'ENG'"
            ' (known: none; "" for the whole country)',
        ),
    ],
)
def test_bank_holidays_of_a_region_the_library_does_not_know(
    accounting: dict[str, object], message: str
) -> None:
    """Refused by the config, not by the first report that counts business hours."""
    with pytest.raises(ConfigError) as err:
        parse_config({**check_with(), "accounting": accounting}, "estate.toml")
    assert [str(i) for i in err.value.issues] == [f"estate.toml: {message}"]


def test_default_bank_holidays_need_no_library() -> None:
    """Checking them would load every country's rules into each command (0.15 CPU-s); the
    default is known good, so only another country or region loads the library."""
    probe = (
        "import sys; from availmon.config import parse_config;"
        " parse_config({'accounting': {'holidays_country': 'GB'}}, 't');"
        " print('holidays' in sys.modules);"
        " parse_config({'accounting': {'holidays_country': 'IE'}}, 't');"
        " print('holidays' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "True"]


def test_a_site_has_at_most_1000_checks_and_long_values_are_cut() -> None:
    """As many as a heartbeat may carry (issue 15); the error does not print all 1001."""
    checks = [
        {"name": f"c{i}", "type": "tcp", "target": "127.0.0.1:9", "area": "email"}
        for i in range(1001)
    ]
    with pytest.raises(ConfigError) as err:
        parse_config({"sites": {"hq": {"partner": "P", "checks": checks}}}, "x.toml")
    [issue] = err.value.issues
    assert issue.path == "sites.hq.checks"
    assert issue.message.startswith("List should have at most 1000 items")
    assert len(str(issue)) < 400
    assert str(issue).endswith("…)")


def test_checks_setting_the_same_keys_share_their_fields_set() -> None:
    """Issue 9 (an agent's RSS): pydantic's record of the keys a check set is shared by the
    checks that set the same keys. The record stays right, and pydantic must copy it before
    changing it: a ``model_copy`` with an update changes one check's record only."""
    checks = [
        {"name": "a", "type": "tcp", "target": "127.0.0.1:1", "area": "servers"},
        {"name": "b", "type": "tcp", "target": "127.0.0.1:2", "area": "servers"},
        {"name": "c", "type": "tcp", "target": "127.0.0.1:3", "area": "servers", "interval": 60},
    ]
    estate = parse_config({"sites": {"s": {"partner": "p", "checks": checks}}}, "test")
    a, b, c = estate.sites["s"].checks
    assert a.model_fields_set is b.model_fields_set
    assert a.model_fields_set == {"name", "type", "target", "area"}
    assert c.model_fields_set == {"name", "type", "target", "area", "interval"}
    changed = a.model_copy(update={"timeout": 2.0})
    assert "timeout" in changed.model_fields_set
    assert b.model_fields_set == {"name", "type", "target", "area"}
    assert a.model_dump(exclude_unset=True) == checks[0]


def test_checks_share_equal_text(tmp_path: Path) -> None:
    """Issue 9 (an agent's RSS): TOML makes a new string for each occurrence; the config
    keeps one object per distinct text in the checks' fields and options, same values."""
    secret = tmp_path / "community"
    secret.write_text("public\n")
    secret.chmod(0o600)
    toml = tmp_path / "estate.toml"
    toml.write_text(
        '[partners.p]\nname = "P"\n'
        + "".join(
            f'[[sites.s.checks]]\nname = "snmp{i}"\ntype = "snmp"\ntarget = "127.0.0.1:161"\n'
            f'area = "network_telephony"\ncommunity_file = "{secret}"\ninterface = "eth0"\n'
            for i in range(3)
        )
        + '[sites.s]\npartner = "p"\n'
    )
    a, b, c = load_config(toml).sites["s"].checks
    for field in ("type", "target", "area"):
        assert getattr(a, field) is getattr(b, field) is getattr(c, field)
    assert (a.type, a.target, a.area) == ("snmp", "127.0.0.1:161", "network_telephony")
    assert list(a.options) == ["community_file", "interface"]
    for (ka, va), (kc, vc) in zip(a.options.items(), c.options.items(), strict=True):
        assert ka is kc
        assert va is vc
    assert c.options == {"community_file": str(secret), "interface": "eth0"}
    assert [x.name for x in (a, b, c)] == ["snmp0", "snmp1", "snmp2"]


_WINDOW = {"name": "patching", "every": "sunday", "start": "02:00", "end": "04:00", "sites": []}


@pytest.mark.parametrize(
    ("data", "issues"),
    [
        # config check itself stopped on these ("unexpected AttributeError" / "ValueError").
        ({"areas": ["x"]}, ["areas: Input should be a valid dictionary (got ['x'])"]),
        (
            check_with(options="x"),
            ["sites.hq.checks.web.options: Input should be a valid dictionary (got 'x')"],
        ),
        (
            {"accounting": {"business_start": "09:00+01:00"}},
            [
                "accounting.business_start: expected a local time of day such as '08:30',"
                " without an offset (got '09:00+01:00')"
            ],
        ),
        # Each of these stopped the collector, or its alerts, when first used.
        (
            {"collector": {"offline_grace": float("inf")}},
            ["collector.offline_grace: expected at most a year ('366d') (got inf)"],
        ),
        (
            {"collector": {"removed_check_grace": "400d"}},
            ["collector.removed_check_grace: expected at most a year ('366d') (got '400d')"],
        ),
        (
            {"agent": {"heartbeat_interval": float("nan")}},
            [
                "agent.heartbeat_interval: expected seconds or a duration such as '30s', '5m',"
                " '250ms' (got nan)"
            ],
        ),
        (
            {"services": {"mail": {"checks": [], "quorum": "50%"}}},
            ["services.mail.checks: a service needs at least one member"],
        ),
        (
            {"maintenance": [{**_WINDOW, "start": "02:00+05:00"}]},
            [
                "maintenance.patching.start: expected a local time of day such as '08:30', without"
                " an offset (got '02:00+05:00')"
            ],
        ),
        (
            {"web": {"listen": "999.1.1.1"}},
            [
                "web.listen: expected an IP address or a host name, such as '127.0.0.1' or"
                " '::' (got '999.1.1.1')"
            ],
        ),
        # And these gave wrong figures, or a silent no-op, with no error anywhere.
        (
            {"collector": {"heartbeat_timeout": 1}},
            [
                "collector.heartbeat_timeout: 1 s is not longer than agent.heartbeat_interval"
                " (30 s): every agent would be offline between heartbeats"
            ],
        ),
        (
            {"collector": {"gap_grace": "10s"}, "agent": {"ack_timeout": 60}},
            [
                "collector.gap_grace: 10 s is not longer than agent.ack_timeout (60 s): events"
                " an agent is about to publish again would be counted missing"
            ],
        ),
        (
            check_with(added="2025-05-01", retired="2025-04-01"),
            [
                "sites.hq.checks.web.retired: 2025-04-01 is not after added 2025-05-01: the"
                " check would count over no time"
            ],
        ),
        (
            {"maintenance": [{**_WINDOW, "first_day": "2025-05-01", "last_day": "2025-04-01"}]},
            [
                "maintenance.patching.last_day: 2025-04-01 is before first_day 2025-05-01:"
                " the window would cover nothing"
            ],
        ),
        (
            {"maintenance": [{**_WINDOW, "every": "fortnightly"}]},
            [
                "maintenance.patching.every: 'fortnightly' is not a day of the week"
                " (got 'fortnightly')"
            ],
        ),
        (
            {"services": {"mail": {"checks": ["hq/web"], "quorum": True}}},
            [
                "services.mail.quorum: expected a number of members or a percentage such as"
                " '50%' (got True)"
            ],
        ),
        (
            {"web": {"token_file": "/etc/availmon/token", "token_env": "TOKEN"}},
            ["web: give token_file or token_env, not both"],
        ),
        # A Host allow-list entry that no Host header's name could ever match.
        *(
            (
                {"web": {"allowed_hosts": ["board.example", bad]}},
                [
                    f"web.allowed_hosts[1]: expected a host name such as 'availmon.internal' or"
                    " '.council.example', without a scheme, port or path (IP addresses need no"
                    f" entry: they are always answered) (got {bad!r})"
                ],
            )
            for bad in (
                "https://board.example/",
                "board.example:9810",
                "board.example/board",
                "10.0.0.5",
                "[::1]",
                "",
                "*",
                "bad_name.example",
            )
        ),
        (
            {"web": {"allowed_hosts": "board.example"}},
            ["web.allowed_hosts: Input should be a valid tuple (got 'board.example')"],
        ),
        (
            {"broker": {"password_env": ""}},
            ["broker.password_env: expected the name of an environment variable (got '')"],
        ),
    ],
)
def test_settings_that_failed_later_are_refused(data: dict[str, object], issues: list[str]) -> None:
    """Each was accepted by ``config check`` and stopped a command or a daemon later, or
    quietly made the figures wrong; now it names its key and value."""
    with pytest.raises(ConfigError) as err:
        parse_config({**check_with(), **data}, "estate.toml")
    assert [str(i) for i in err.value.issues] == [f"estate.toml: {i}" for i in issues]


@pytest.mark.parametrize(
    "data",
    [
        {"collector": {"heartbeat_timeout": "31s"}},
        {"collector": {"removed_check_grace": "366d"}},
        check_with(added="2025-05-01", retired="2025-05-01T12:00:00"),
        {"maintenance": [{**_WINDOW, "first_day": "2025-05-01", "last_day": "2025-05-01"}]},
        {"web": {"listen": "::"}},
        {"web": {"listen": "localhost"}},
        {"web": {"allowed_hosts": []}},
    ],
)
def test_the_edges_of_those_settings_are_kept(data: dict[str, object]) -> None:
    parse_config({**check_with(), **data}, "estate.toml")


def test_allowed_hosts_are_kept_in_lower_case_with_any_name_under_one_as_a_dot() -> None:
    hosts = ["Board.Example", "*.Intranet.example", ".hq.example", "availmon.internal."]
    estate = parse_config({**check_with(), "web": {"allowed_hosts": hosts}}, "estate.toml")
    assert estate.web.allowed_hosts == (
        "board.example",
        ".intranet.example",
        ".hq.example",
        "availmon.internal",
    )
    assert parse_config(check_with(), "estate.toml").web.allowed_hosts is None


def test_a_config_whose_name_is_not_utf8_is_still_read(tmp_path: Path) -> None:
    """Arguments that are not UTF-8 are refused, but a file name may be any bytes: the
    check refused '--config d\\xe9mo.toml', a file that is there."""
    name = tmp_path / os.fsdecode(b"d\xe9mo.toml")
    name.write_text((HERE / "base.toml").read_text())
    argv = [sys.executable, "-m", "availmon.cli", "config", "check", os.fsencode(name)]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, b"ok: 1 sites, 1 checks (internet_web 1)")
