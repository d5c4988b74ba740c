"""Secrets (issue 15): read from files that are checked (permissions, emptiness, encoding),
never written inline (URLs, headers), and never shown in an error, a log or a probe's output.
Every secret here contains the canary that tests/conftest.py looks for in all captured
output."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from availmon.broker import hash_passwords, mosquitto_passwd
from availmon.cli import main
from availmon.errors import EXIT_USAGE, StartupError
from availmon.secrets import SecretFileWarning, looks_secret, read_secret_file, resolve_secret
from collector.main import Collector
from probes import http
from probes.registry import REGISTRY
from tests.conftest import CANARY, assert_no_canary
from tests.peers import estate, mosquitto, write_secret

SECRET = f"{CANARY}-pa55word"


def secret_file(tmp_path: Path, mode: int = 0o600, text: str = SECRET + "\n") -> Path:
    path = tmp_path / "secret"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_a_private_secret_file_is_read_stripped(tmp_path: Path) -> None:
    assert read_secret_file(secret_file(tmp_path), "broker.password") == SECRET


@pytest.mark.parametrize(("mode", "who"), [(0o640, "its group"), (0o644, "everyone")])
def test_others_reading_a_secret_is_a_warning(tmp_path: Path, mode: int, who: str) -> None:
    path = secret_file(tmp_path, mode)
    with pytest.warns(SecretFileWarning) as warned:
        assert read_secret_file(path, "broker.password") == SECRET
    message = str(warned[0].message)
    assert message == (
        f"broker.password_file: {path} is readable by {who} (mode {mode:04o}): chmod 0600 {path}"
    )


@pytest.mark.parametrize(
    ("mode", "text", "message"),
    [
        (0o666, SECRET, "is writable by everyone (mode 0666): chmod 0600"),
        (0o602, SECRET, "is writable by everyone (mode 0602): chmod 0600"),
        (0o600, "", "is empty"),
        (0o600, " \n\t\n", "is empty"),
        (0o600, "x" * 70_000, "is larger than 65536 bytes: not a secret"),
    ],
)
def test_unusable_secret_files_are_refused(
    tmp_path: Path, mode: int, text: str, message: str
) -> None:
    path = secret_file(tmp_path, mode, text)
    with pytest.raises(StartupError) as err:
        read_secret_file(path, "broker.password")
    assert str(err.value).startswith(f"broker.password_file: {path} ")
    assert message in str(err.value)
    assert_no_canary(str(err.value))


def test_invalid_utf8_is_refused_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\xffsecret")
    path.chmod(0o600)
    with pytest.raises(StartupError, match=r"is not valid UTF-8 \(byte 0\)$"):
        read_secret_file(path, "web.token")


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # once: opening it waited for a writer for ever
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(StartupError, match=r"is not a regular file$"):
            read_secret_file(path, "web.token")


def test_an_empty_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAILMON_TEST_EMPTY", "  ")
    with pytest.raises(StartupError, match="environment variable AVAILMON_TEST_EMPTY is empty"):
        resolve_secret(None, "AVAILMON_TEST_EMPTY", "web.token")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("headers", "Host"), "intranet"),  # anything under headers
        (("password",), "x"),
        (("target",), f"https://u:{SECRET}@h/"),
        (("note",), f"Bearer {SECRET}"),
        (("sites", "hq"), {"checks": [{"target": f"https://h/?token={SECRET}"}]}),
        (("options",), {"Authorization": 1}),
    ],
)
def test_what_is_never_printed(path: tuple[str, ...], value: Any) -> None:
    assert looks_secret(path, value)


@pytest.mark.parametrize(
    ("path", "value"), [(("target",), "https://u@h/?verbose=1"), (("password_file",), "/x")]
)
def test_what_may_be_printed(path: tuple[str, ...], value: Any) -> None:
    assert not looks_secret(path, value)


# -- the probe command --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["http", f"http://monitor:{SECRET}@127.0.0.1:9/"],
            "command line: target: credentials in a URL (http://monitor:***@127.0.0.1:9/)",
        ),
        (
            ["http", "http://127.0.0.1:9/", "--headers", f'{{Authorization = "Bearer {SECRET}"}}'],
            "command line: headers.Authorization: a credential header written inline",
        ),
    ],
)
def test_probe_refuses_inline_secrets_and_never_prints_them(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``availmon probe http`` once printed the URL's password in its JSON."""
    assert main(["probe", *argv]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(expected)
    assert_no_canary(out, err)


async def test_probe_output_and_logs_never_hold_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, aiohttp_server: Any
) -> None:
    """Basic auth and a header from header_files reach the server; the result, its JSON
    and the debug log hold neither (the canary hook checks the log)."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        raise web.HTTPFound(f"http://user:{SECRET}@127.0.0.1:9/next?token={SECRET}")

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    password = write_secret(tmp_path / "password", SECRET + "\n")
    api_key = write_secret(tmp_path / "api-key", f"{CANARY}-api-key\n")
    options = REGISTRY["http"].parse_options(
        {
            "username": "probe",
            "password_file": str(password),
            "header_files": {"X-Api-Key": str(api_key)},
            "follow_redirects": False,
            "expect_status": [302],
        }
    )
    caplog.set_level(logging.DEBUG)
    result = await http.probe(f"http://127.0.0.1:{server.port}/", 5.0, options)
    assert result.ok, result
    assert seen[0]["X-Api-Key"] == f"{CANARY}-api-key"
    assert seen[0]["Authorization"].startswith("Basic ")
    shown = str(result.as_dict())
    assert "***" in shown
    assert_no_canary(shown, repr(result))


def test_header_files_conflict_with_headers() -> None:
    with pytest.raises(ValueError, match="'x-api-key' is in both headers and header_files"):
        REGISTRY["http"].parse_options(
            {"headers": {"X-Api-Key": "a"}, "header_files": {"x-api-key": "/k"}}
        )


# -- a wrong password on the wire --------------------------------------------------------


async def test_a_refused_login_logs_no_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    passwd = tmp_path / "passwd"
    hash_passwords({"collector": "the-right-one"}, passwd, mosquitto_passwd())
    conf = f"allow_anonymous false\npassword_file {passwd}\n"
    async with mosquitto(tmp_path / "mq", conf) as broker:
        wrong = write_secret(tmp_path / "wrong", SECRET + "\n")
        cfg = estate(
            tmp_path,
            broker.port,
            [],
            extra={"broker": {"username": "collector", "password_file": str(wrong)}},
        )
        collector = Collector(cfg)
        refused = asyncio.Event()

        class Watch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.name == "collector.main" and "retrying" in record.getMessage():
                    refused.set()

        watch = Watch()
        logging.getLogger("collector.main").addHandler(watch)
        stop = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(collector.run(stop))
                await asyncio.wait_for(refused.wait(), 60)
                stop.set()
        finally:
            logging.getLogger("collector.main").removeHandler(watch)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_no_canary(caplog.text)


def test_config_check_never_prints_an_inline_secret() -> None:
    """The installed command, on every bad config shipped with the tests."""
    cases = sorted((Path(__file__).resolve().parent.parent / "config").glob("invalid-*.toml"))
    for case in cases:
        done = subprocess.run(
            [sys.executable, "-m", "availmon.cli", "config", "check", str(case)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONWARNINGS": "default"},
        )
        assert done.returncode == EXIT_USAGE, done.stderr
        assert_no_canary(done.stdout, done.stderr)
        assert "S3cret-do-not-print" not in done.stderr
