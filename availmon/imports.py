"""Import a library without an optional module it loads eagerly and availmon does not use.

Two libraries every agent loads import, at their own import, a heavy optional module for a
feature most agents never use (issue 9: an agent with 1,000 checks in at most 60 MB):

- paho-mqtt (under aiomqtt) imports dnspython's resolver, about 2.4 MB resident, for
  ``connect_srv``; availmon connects to the configured broker host, never through SRV.
- pysnmp imports pyca/cryptography, about 8.5 MB resident (its Rust extension), for SNMPv3
  privacy, also when every check is v2c.

Both libraries import these modules in ``try: ... except ImportError`` and work without
them: that fallback is what :func:`without` selects while the library loads. A module
already imported is left alone (nothing to save). The module stays importable afterwards;
:func:`probes.snmp_io.require_privacy` gives pysnmp its privacy back when a v3 check or trap
user needs it.

A third one is not a module: aiohttp makes two default TLS contexts at its import, each
loading the system's CA file (about 1 MB resident apiece), for requests that pass no TLS
context of their own. An agent's probes always pass theirs; :func:`no_ca_file` lets the
agent import aiohttp without that load.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def without(*names: str) -> Iterator[None]:
    """Within the block, ``import NAME`` raises ImportError for every NAME not yet loaded."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "absent"
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


@contextmanager
def setting(name: str, value: str) -> Iterator[None]:
    """Within the block, the environment variable ``name`` is ``value``; restored after
    (unset again if it was unset)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@contextmanager
def no_ca_file() -> Iterator[None]:
    """Within the block, OpenSSL's default CA file is empty (``SSL_CERT_FILE``, read when a
    context loads its default paths): a context made then holds no CA certificates in memory
    and finds the system's, if at all, through the hashed CA directory (``SSL_CERT_DIR``),
    one at a time when a handshake needs them. The variable is restored afterwards."""
    with setting("SSL_CERT_FILE", os.devnull):
        yield
