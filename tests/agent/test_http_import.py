"""The agent imports aiohttp without its default contexts' CA file (issue 9: the agent's
RSS): aiohttp makes two default TLS contexts at import, each loading the system's CA file,
and an agent's probes never use them. Run in a fresh interpreter: aiohttp is imported once
per process, and the test process has imported it long ago."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from availmon.imports import no_ca_file

PROBE = """
import json, os, ssl, sys
before = os.environ.get("SSL_CERT_FILE")
from agent.main import import_http_client
import_http_client()
import aiohttp.connector as connector
from probes.tls import tls_context
print(json.dumps({
    "verified": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "unverified": connector._SSL_CONTEXT_UNVERIFIED.cert_store_stats()["x509_ca"],
    "env_kept": os.environ.get("SSL_CERT_FILE") == before,
    "ours": tls_context().cert_store_stats()["x509_ca"],
}))
"""


def system_ca_count() -> int:
    import ssl

    return int(ssl.create_default_context().cert_store_stats()["x509_ca"])


@pytest.mark.skipif(system_ca_count() == 0, reason="no system CA file to leave out")
def test_the_agent_imports_aiohttp_without_the_ca_file_and_its_probes_keep_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(out.stdout)
    # aiohttp's two defaults hold no CA certificates (this fails if aiohttp stops making
    # them at import, or renames them: then the agent's workaround has no object).
    assert seen["verified"] == 0, seen
    assert seen["unverified"] == 0, seen
    assert seen["env_kept"], seen
    # A probe's own system-trust context, made afterwards, loads the system CAs as before.
    assert seen["ours"] == system_ca_count(), seen


def test_no_ca_file_restores_the_variable_whether_it_was_set_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with no_ca_file():
        assert os.environ["SSL_CERT_FILE"] == os.devnull
    assert "SSL_CERT_FILE" not in os.environ
    monkeypatch.setenv("SSL_CERT_FILE", "/somewhere/ca.pem")
    with pytest.raises(RuntimeError), no_ca_file():
        raise RuntimeError("an import failed")
    assert os.environ["SSL_CERT_FILE"] == "/somewhere/ca.pem"
