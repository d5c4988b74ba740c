"""The ``[alerts]`` config: routes and channels parsed into frozen models (issue 11). Bad
files and their exact messages are in tests/config/invalid-alerts.*."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from availmon.alertconfig import EmailChannel, WebhookChannel
from availmon.config import parse_config, summary
from availmon.errors import ConfigError
from availmon.secrets import HIDDEN


def estate_with(alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "partners": {"CCC": {"name": "Cambridge City Council"}},
        "sites": {
            "hq": {
                "partner": "CCC",
                "checks": [
                    {
                        "name": "web",
                        "type": "http",
                        "target": "http://127.0.0.1:8080/",
                        "area": "internet_web",
                    }
                ],
            }
        },
        "alerts": alerts,
    }


def test_routes_and_channels_parse() -> None:
    estate = parse_config(
        estate_with(
            {
                "board_url": "https://availmon.internal/",
                "channels": {
                    "team": {
                        "type": "webhook",
                        "url": "https://hooks.internal/availmon",
                        "secret_file": "/etc/availmon/webhook-secret",
                    },
                    "oncall": {
                        "type": "email",
                        "host": "smtp.internal",
                        "from": "availmon@council.example",
                        "to": ["oncall@council.example"],
                        "username": "availmon",
                        "password_env": "SMTP_PASSWORD",
                    },
                },
                "routes": [
                    {
                        "name": "night",
                        "hours": "out_of_hours",
                        "states": ["down"],
                        "channels": ["oncall"],
                        "repeat": "30m",
                        "escalate_after": "1h",
                        "escalate_to": "day",
                        "continue": True,
                    },
                    {"name": "day", "channels": ["team"], "wait": "2m"},
                ],
            }
        )
    )
    alerts = estate.alerts
    night, day = alerts.routes
    assert (night.hours, night.repeat, night.escalate_after, night.continue_) == (
        "out_of_hours",
        1800.0,
        3600.0,
        True,
    )
    assert (day.wait, day.repeat, day.escalate_to) == (120.0, 0.0, None)
    assert isinstance(alerts.channels["team"], WebhookChannel)
    mail = alerts.channels["oncall"]
    assert isinstance(mail, EmailChannel)
    assert (mail.sender, mail.port, mail.security) == ("availmon@council.example", 587, "starttls")
    assert estate.check("hq", "web").severity == "page"  # type: ignore[union-attr]
    assert summary(estate).endswith("; 2 alert routes, 2 channels")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXXsEcReT-canary",
        "https://acme.webhook.office.com/webhookb2/sEcReT-canary",
        "https://prod.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=sEcReT-canary",
    ],
)
def test_a_webhook_url_written_inline_is_refused_and_hidden(url: str) -> None:
    data = estate_with(
        {
            "channels": {"team": {"type": "webhook", "url": url, "secret_env": "S"}},
            "routes": [{"name": "all", "channels": ["team"]}],
        }
    )
    with pytest.raises(ConfigError) as err:
        parse_config(data, "estate.toml")
    text = str(err.value)
    assert "alerts.channels.team.url: credentials in a URL" in text
    assert "canary" not in text.lower()


def test_no_alerts_section_is_no_alerts() -> None:
    estate = parse_config(estate_with({}))
    assert estate.alerts.routes == ()
    assert "alert" not in summary(estate)


def test_the_readmes_alert_example_is_a_valid_config() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Alerts", 1)[1]
    example = section.split("```toml", 1)[1].split("```", 1)[0]
    data = estate_with({})
    data["sites"]["dc"] = {"partner": "CCC"}
    data.update(tomllib.loads(example))
    estate = parse_config(data, "README.md")
    assert [r.name for r in estate.alerts.routes] == [
        "out-of-hours",
        "daytime",
        "alertmanager",
        "managers",
    ]
    assert estate.alerts.routes[0].escalate_to == "managers"


def issues_of(data: dict[str, Any]) -> list[str]:
    """The config check's lines for ``data`` (none: it is valid)."""
    try:
        parse_config(data, "estate.toml")
    except ConfigError as err:
        return [str(issue) for issue in err.issues]
    return []


def hook(url: str = "http://127.0.0.1:9/hook") -> dict[str, Any]:
    return {"type": "webhook", "url": url, "secret_env": "HOOK_SECRET"}


@pytest.mark.parametrize("name", [{"a": 1}, ["web"]])
def test_a_check_name_not_text_is_reported_beside_alerts(name: Any) -> None:
    # The alert check collected check names into a set: a table or a list crashed it.
    data = estate_with(
        {"channels": {"team": hook()}, "routes": [{"name": "all", "channels": ["team"]}]}
    )
    data["sites"]["hq"]["checks"].append(dict(data["sites"]["hq"]["checks"][0], name=name))
    assert issues_of(data) == [
        f"estate.toml: sites.hq.checks[1].name: Input should be a valid string (got {name!r})"
    ]


@pytest.mark.parametrize(("channels", "shown"), [(5, "5"), ("team", "'team'")])
def test_route_channels_not_a_list_is_one_type_error(channels: Any, shown: str) -> None:
    # 5 crashed the check; "team" was also reported as four channels 't', 'e', 'a', 'm'.
    data = estate_with(
        {"channels": {"team": hook()}, "routes": [{"name": "all", "channels": channels}]}
    )
    assert issues_of(data) == [
        f"estate.toml: alerts.routes[0].channels: Input should be a valid tuple (got {shown})"
    ]


def test_a_channel_type_not_text_is_reported() -> None:
    data = estate_with(
        {
            "channels": {"team": {**hook(), "type": ["webhook"]}},
            "routes": [{"name": "all", "channels": ["team"]}],
        }
    )
    assert issues_of(data) == [
        "estate.toml: alerts.channels.team: Input tag '['webhook']' found using 'type' does not"
        " match any of the expected tags: 'alertmanager', 'webhook', 'email', 'slack', 'teams'"
        " (got {'type': ['webhook'], 'url': 'http://127.0.0.1:9/hook',"
        " 'secret_env': 'HOOK_SECRET'})"
    ]


_PORT = "expected a port from 1 to 65535 after the host"
_HOST = "expected a host name, an IPv4 address or an IPv6 address in brackets"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:70000/hook", _PORT),
        ("http://127.0.0.1:abc/hook", _PORT),
        ("http://127.0.0.1:0/hook", _PORT),
        ("http://127.0.0.1:80:81/hook", _PORT),
        ("http://[::1/hook", _HOST),
        ("http://[::1]x/hook", _HOST),
        ("http://hooks\\internal/hook", _HOST),
        ("http://:80/hook", "expected a host after '//', such as 'http://alertmanager.internal'"),
    ],
)
@pytest.mark.parametrize("kind", ["webhook", "alertmanager"])
def test_a_url_aiohttp_cannot_post_to_is_refused(url: str, message: str, kind: str) -> None:
    # These passed the pattern; every delivery then failed (InvalidUrlClientError) for ever.
    channel = hook(url) if kind == "webhook" else {"type": kind, "url": url}
    data = estate_with(
        {"channels": {"ops": channel}, "routes": [{"name": "all", "channels": ["ops"]}]}
    )
    assert issues_of(data) == [f"estate.toml: alerts.channels.ops.url: {message} (got {url!r})"]


def test_a_bad_board_url_is_refused() -> None:
    assert issues_of(estate_with({"board_url": "http://:8080/"})) == [
        "estate.toml: alerts.board_url: expected a host after '//', such as"
        " 'http://alertmanager.internal' (got 'http://:8080/')"
    ]


def test_a_bad_url_holding_a_password_is_refused_and_hidden() -> None:
    data = estate_with(
        {
            "channels": {"ops": hook("http://availmon:sEcReT-canary@127.0.0.1:abc/hook")},
            "routes": [{"name": "all", "channels": ["ops"]}],
        }
    )
    found = issues_of(data)
    assert f"estate.toml: alerts.channels.ops.url: {_PORT} (got {HIDDEN})" in found
    assert "canary" not in "\n".join(found).lower()


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:9093/",
        "http://[::1]/",
        "https://alertmanager.internal",
        "https://alertmanager.internal/api/",
        "http://127.0.0.1:65535/hook",
    ],
)
def test_good_urls_still_pass(url: str) -> None:
    # IPv6 literals, no port, no path: what the URL checks must not refuse.
    data = estate_with(
        {
            "board_url": url,
            "channels": {"am": {"type": "alertmanager", "url": url}, "ops": hook(url)},
            "routes": [{"name": "all", "channels": ["am", "ops"]}],
        }
    )
    assert issues_of(data) == []


def mail(**auth: str) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "from": "availmon@council.example",
        "to": ["oncall@council.example"],
        **auth,
    }


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"password_env": "SMTP_PASSWORD"}, "password_env needs a username"),
        ({"password_file": "/etc/availmon/smtp"}, "password_file needs a username"),
        (
            {"username": "availmon"},
            "a username needs password_file or password_env (got 'availmon')",
        ),
    ],
)
def test_an_smtp_login_needs_both_a_username_and_a_password(
    auth: dict[str, str], message: str
) -> None:
    # password_env without a username was silently unused; a username alone failed every send.
    data = estate_with(
        {"channels": {"mail": mail(**auth)}, "routes": [{"name": "all", "channels": ["mail"]}]}
    )
    assert issues_of(data) == [f"estate.toml: alerts.channels.mail.username: {message}"]


@pytest.mark.parametrize("auth", [{}, {"username": "availmon", "password_env": "SMTP_PASSWORD"}])
def test_an_smtp_login_with_both_or_neither_passes(auth: dict[str, str]) -> None:
    data = estate_with(
        {"channels": {"mail": mail(**auth)}, "routes": [{"name": "all", "channels": ["mail"]}]}
    )
    assert issues_of(data) == []


def routed(**route: Any) -> dict[str, Any]:
    return estate_with(
        {
            "channels": {"team": hook()},
            "routes": [
                {"name": "first", "channels": ["team"], **route},
                {"name": "managers", "channels": ["team"]},
            ],
        }
    )


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"repeat": 0.001}, "repeat: expected 0 (never) or at least a minute ('1m') (got 0.001)"),
        ({"repeat": "59s"}, "repeat: expected 0 (never) or at least a minute ('1m') (got '59s')"),
        (
            {"escalate_after": "40d", "escalate_to": "managers"},
            "escalate_after: Input should be less than or equal to 2592000 (got '40d')",
        ),
    ],
)
def test_repeat_and_escalation_are_bounded(route: dict[str, Any], message: str) -> None:
    # repeat = 0.001 sent a message every engine step; escalate_after had no upper bound.
    assert issues_of(routed(**route)) == [f"estate.toml: alerts.routes[0].{message}"]


@pytest.mark.parametrize(
    "route",
    [{"repeat": 0}, {"repeat": "1m"}, {"repeat": "30d"}, {"escalate_after": "30d"}],
)
def test_repeat_and_escalation_within_bounds_pass(route: dict[str, Any]) -> None:
    if "escalate_after" in route:
        route["escalate_to"] = "managers"
    assert issues_of(routed(**route)) == []


@pytest.mark.parametrize(
    ("retry", "issue"),
    [
        (
            {"retry_initial": "20m", "retry_max": "10m"},
            "alerts.retry_initial: retry_initial '20m' is longer than retry_max '10m'",
        ),
        (
            {"retry_initial": "20m"},
            "alerts.retry_initial: retry_initial '20m' is longer than retry_max (600 s by default)",
        ),
        (
            {"retry_max": 2},
            "alerts.retry_max: retry_max 2 is shorter than retry_initial (5 s by default)",
        ),
    ],
)
def test_retry_initial_longer_than_retry_max_is_refused(retry: dict[str, Any], issue: str) -> None:
    # It was accepted, and retry_initial then had no effect.
    assert issues_of(estate_with(retry)) == [f"estate.toml: {issue}"]


def test_retry_initial_equal_to_retry_max_passes() -> None:
    assert issues_of(estate_with({"retry_initial": "1m", "retry_max": 60})) == []


def mail_at(**changes: Any) -> dict[str, Any]:
    return estate_with(
        {
            "channels": {"mail": {**mail(), **changes}},
            "routes": [{"name": "all", "channels": ["mail"]}],
        }
    )


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("smtp://mail:25", "expected a host name or an address, not a URL"),
        ("mail.council.example:587", "expected a host name or an address; the port goes in 'port'"),
        ("[::1]:25", "expected a host name or an address; the port goes in 'port'"),
        ("mail relay", "expected a host name (letters, digits, '-' and '.') or an IP address"),
        ("-mail.example", "expected a host name (letters, digits, '-' and '.') or an IP address"),
        ("[mail]", "expected a host name (letters, digits, '-' and '.') or an IP address"),
        ("127.0.0.256", "expected an IPv4 address of four numbers from 0 to 255"),
    ],
)
def test_an_smtp_host_no_client_can_reach_is_refused(host: str, message: str) -> None:
    # Any text was taken, and every send then failed and was retried for ever.
    assert issues_of(mail_at(host=host)) == [
        f"estate.toml: alerts.channels.mail.host: {message} (got {host!r})"
    ]


@pytest.mark.parametrize(
    ("host", "kept"),
    [
        ("mail.council.example", "mail.council.example"),
        ("smtp_relay.internal.", "smtp_relay.internal."),
        ("bücher.example", "bücher.example"),
        ("192.0.2.25", "192.0.2.25"),
        ("::1", "::1"),
        ("[::1]", "::1"),
    ],
)
def test_smtp_hosts_names_and_addresses_pass(host: str, kept: str) -> None:
    assert issues_of(mail_at(host=host)) == []
    assert EmailChannel.model_validate({**mail(), "host": host}).host == kept


@pytest.mark.parametrize("timeout", [0.001, 0.05, "10ms"])
def test_a_channel_timeout_under_a_tenth_of_a_second_is_refused(timeout: Any) -> None:
    # timeout = 0.001 failed every delivery, and each was retried for ever.
    assert issues_of(mail_at(timeout=timeout)) == [
        "estate.toml: alerts.channels.mail.timeout: expected at least 100ms:"
        f" a shorter one fails every delivery (got {timeout!r})"
    ]
    hook_data = estate_with(
        {
            "channels": {"team": {**hook(), "timeout": timeout}},
            "routes": [{"name": "r", "channels": ["team"]}],
        }
    )
    assert [i.split(":")[1] for i in issues_of(hook_data)] == [" alerts.channels.team.timeout"]


@pytest.mark.parametrize("timeout", [0.1, "500ms", 1, "1s", 30])
def test_a_channel_timeout_of_a_tenth_of_a_second_or_more_passes(timeout: Any) -> None:
    assert issues_of(mail_at(timeout=timeout)) == []


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://hooks.slack.test/T0/B0/secretpart", "expected an http:// or https:// URL"),
        ("https://[::1/secretpart", "expected a host name, an IPv4 address or an IPv6"),
        ("https://hooks.slack.test:70000/secretpart", "expected a port from 1 to 65535"),
    ],
)
def test_a_chat_webhook_url_read_from_its_secret_is_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, error: str
) -> None:
    """The URL is the credential, so it comes from a secret the config check never reads:
    one that aiohttp refuses failed every delivery, retried for ever. The error names where
    it came from, never the URL."""
    from availmon.alertconfig import SlackChannel, TeamsChannel
    from availmon.errors import StartupError

    monkeypatch.setenv("CHAT_URL", url)
    with pytest.raises(StartupError) as slack:
        SlackChannel(type="slack", url_env="CHAT_URL").url()
    assert str(slack.value).startswith(f"url_env: CHAT_URL: {error}")
    secret = tmp_path / "teams-url"
    secret.write_text(url + "\n")
    secret.chmod(0o600)
    with pytest.raises(StartupError) as teams:
        TeamsChannel(type="teams", url_file=secret).url()
    assert str(teams.value).startswith(f"url_file: {secret}: {error}")
    assert "secretpart" not in str(slack.value) + str(teams.value)
    monkeypatch.setenv("CHAT_URL", "https://hooks.slack.test/T0/B0/secretpart")
    assert SlackChannel(type="slack", url_env="CHAT_URL").url().endswith("/secretpart")
