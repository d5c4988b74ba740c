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
