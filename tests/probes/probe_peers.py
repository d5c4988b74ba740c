"""Helpers for the probe tests: free loopback ports, test certificates, peer processes.

Every peer listens on 127.0.0.1 only; every process started here is ended by its PID.
The fixtures that hand these out are in conftest.py.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


def free_port(*, udp_too: bool = False) -> int:
    """A loopback port nothing listens on now (TCP, and UDP as well when asked)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port: int = tcp.getsockname()[1]
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port found in 50 tries")


# --- peer processes ------------------------------------------------------------------------


class Peers:
    """Starts peer processes for one test and ends each by its PID afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        ready: Callable[[], bool],
        *,
        deadline: float = 10.0,
        poll: float = 0.05,
    ) -> subprocess.Popen[bytes]:
        """Start a peer and return once ``ready()`` says it answers.

        Between checks we wait on the process itself (``wait(poll)``), so a peer that dies at
        start fails the test at once with its own error output instead of a late timeout.
        """
        if shutil.which(argv[0]) is None:
            pytest.skip(f"{argv[0]} is not installed")
        log = self.workdir / f"{Path(argv[0]).name}-{len(self._procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._procs.append(proc)
        for _ in range(int(deadline / poll)):
            if ready():
                return proc
            try:
                code = proc.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                continue
            output = log.read_text(errors="replace")
            raise RuntimeError(f"{argv[0]} exited with {code} at start:\n{output}")
        raise RuntimeError(f"{argv[0]} did not answer within {deadline} s")

    def stop_all(self) -> None:
        """Terminate by PID, and kill what does not go within 5 s."""
        while self._procs:
            proc = self._procs.pop()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


# --- certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True)
class Certs:
    """A test CA and leaf certificates for 127.0.0.1 / localhost."""

    ca: Path
    good: Pair  # signed by the CA, valid for a year
    soon: Pair  # signed by the CA, expires in 5 days
    expired: Pair  # signed by the CA, expired a day ago
    self_signed: Pair  # valid for a year but signed by nobody we trust
    wrong_name: Pair  # signed by the CA for other.test only


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=30
    )


def make_certs(d: Path) -> Certs:
    """Made with the openssl CLI (the ``cryptography`` package is not a dependency)."""
    key_args = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    (d / "leaf.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
    )
    (d / "other.cnf").write_text("subjectAltName=DNS:other.test\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-x509", *key_args, "-keyout", "ca.key", "-out", "ca.pem",
             "-subj", "/CN=availmon test CA", "-days", "30", cwd=d)  # fmt: skip

    def leaf(name: str, days: int, ext: str = "leaf.cnf") -> Pair:
        _openssl("req", *key_args, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", "/CN=localhost", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", str(days), "-extfile", ext,
                 "-out", f"{name}.pem", cwd=d)  # fmt: skip
        return Pair(d / f"{name}.pem", d / f"{name}.key")

    _openssl("req", "-x509", *key_args, "-keyout", "self.key", "-out", "self.pem",
             "-subj", "/CN=localhost", "-days", "365",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", cwd=d)  # fmt: skip
    return Certs(
        ca=d / "ca.pem",
        good=leaf("good", 365),
        soon=leaf("soon", 5),
        # -1 is the furthest into the past OpenSSL 3.0's `x509 -days` goes.
        expired=leaf("expired", -1),
        self_signed=Pair(d / "self.pem", d / "self.key"),
        wrong_name=leaf("other", 365, "other.cnf"),
    )


def listening(port: int, protocol: str) -> bool:
    """Is a loopback socket bound to ``port`` (UDP) or listening on it (TCP)?

    Read from /proc/net, so that checking readiness sends nothing to the peer.
    """
    wanted = f"0100007F:{port:04X}"
    with open(f"/proc/net/{protocol}") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and (protocol == "udp" or fields[3] == "0A"):
                return True
    return False


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_peer(handler: Handler) -> AsyncIterator[str]:
    """An asyncio server on loopback that runs ``handler`` for each connection (a scripted
    hostile peer); yields its ``host:port``."""
    server = await asyncio.start_server(handler, LOOPBACK, 0)
    try:
        yield f"{LOOPBACK}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def shown(escaped_prefix: str, fill: str, limit: int) -> str:
    """What ``peer_text`` makes of a prefix (given here already escaped) and a long run of
    ``fill``: cut to ``limit`` characters, the last one an ellipsis."""
    return escaped_prefix + fill * (limit - 1 - len(escaped_prefix)) + "…"


class LoopTurns:
    """Counts the turns of the event loop (a task that only yields) while it is entered:
    how often anything else could run while the code under test worked."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _turn(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    async def __aenter__(self) -> LoopTurns:
        self._task = asyncio.create_task(self._turn())
        await asyncio.sleep(0)  # running before the code under test starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
