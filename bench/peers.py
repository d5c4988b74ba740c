"""The peers of the benchmark, each on loopback with its own config, stopped by its PID.

nginx-light is the HTTP (and TCP) target, blackbox_exporter the HTTP/TCP/ICMP peer, Mosquitto
the agent's broker, net-snmp's snmpd the SNMP device (in a namespace of its own when it needs
interfaces). Nothing here touches the system's own services or their configs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BLACKBOX = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SNMPD = shutil.which("snmpd") or "/usr/sbin/snmpd"
FPING = shutil.which("fping") or "/usr/bin/fping"
COMMUNITY = "bench-community"


def missing_tools() -> list[str]:
    return [p for p in (NGINX, BLACKBOX, MOSQUITTO, SNMPD, FPING) if not Path(p).exists()]


def wait_port(port: int, host: str = "127.0.0.1", deadline: float = 15.0) -> None:
    """Until something accepts on ``host:port`` (a bound listener), or raise."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {deadline} s")


@dataclass
class Process:
    argv: Sequence[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            list(self.argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def nginx(workdir: Path) -> Iterator[tuple[Process, int]]:
    """nginx-light answering ``200 ok`` on a loopback port."""
    port = free_port()
    d = workdir / "nginx"
    (d / "logs").mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n"
        f"  server {{ listen 127.0.0.1:{port}; keepalive_timeout 0;\n"
        '    location / { return 200 "ok\\n"; } }\n}\n'
    )
    p = Process([NGINX, "-p", str(d), "-c", str(conf)], d / "stdout.log")
    p.start()
    try:
        wait_port(port)
        yield p, port
    finally:
        p.stop()


@contextlib.contextmanager
def blackbox(workdir: Path) -> Iterator[tuple[Process, int]]:
    """blackbox_exporter with http_2xx, tcp_connect and icmp modules, on a loopback port."""
    port = free_port()
    d = workdir / "blackbox"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "blackbox.yml"
    conf.write_text(
        "modules:\n"
        "  http_2xx:\n    prober: http\n    timeout: 5s\n"
        "    http:\n      preferred_ip_protocol: ip4\n"
        "  tcp_connect:\n    prober: tcp\n    timeout: 5s\n"
        "    tcp:\n      preferred_ip_protocol: ip4\n"
        "  icmp:\n    prober: icmp\n    timeout: 5s\n"
        "    icmp:\n      preferred_ip_protocol: ip4\n"
    )
    p = Process(
        [BLACKBOX, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"],
        d / "blackbox.log",
    )
    p.start()
    try:
        wait_port(port)
        yield p, port
    finally:
        p.stop()


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[tuple[Process, int]]:
    port = free_port()
    d = workdir / "mosquitto"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    p = Process([MOSQUITTO, "-c", str(conf)], d / "mosquitto.log")
    p.start()
    try:
        wait_port(port)
        yield p, port
    finally:
        p.stop()


def _net_snmp_env(d: Path) -> dict[str, str]:
    (d / "persist").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "SNMP_PERSISTENT_DIR": str(d / "persist"),
        "SNMPCONFPATH": str(d / "conf"),
        "MIBS": "",
        "MIBDIRS": str(d / "no-mibs"),
    }


@contextlib.contextmanager
def snmpd(
    workdir: Path, addresses: Sequence[str], ns: str | None = None
) -> Iterator[tuple[Process, int]]:
    """One snmpd answering v2c on every ``address`` (same port), in ``ns`` when given."""
    port = free_port(socket.SOCK_DGRAM) if ns is None else 1161
    d = workdir / f"snmpd-{secrets.token_hex(3)}"
    d.mkdir(parents=True)
    conf = d / "snmpd.conf"
    conf.write_text(f"rocommunity {COMMUNITY} 127.0.0.0/8\n")
    listen = ",".join(f"udp:{a}:{port}" for a in addresses)
    argv = [SNMPD, "-f", "-Lo", "-C", "-c", str(conf), "-r", "-p", str(d / "pid"), listen]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    p = Process(argv, d / "snmpd.log")
    out = p.log.open("ab")
    p.proc = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, env=_net_snmp_env(d), start_new_session=True
    )
    out.close()
    try:
        _wait_snmpd(p.log)
        yield p, port
    finally:
        p.stop()


def _wait_snmpd(log: Path, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if "NET-SNMP version" in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"snmpd did not start: {log.read_text(errors='replace')[-500:]}")


@contextlib.contextmanager
def netns_with_interfaces(count: int) -> Iterator[str]:
    """A namespace with loopback up and ``count`` interfaces bench0.. up: veth pairs whose
    both ends stay inside it (the dummy driver is not always there)."""
    name = f"avm-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        for i in range(0, count, 2):
            a, b = f"bench{i}", f"bench{i + 1}"
            subprocess.run(
                ["ip", "-n", name, "link", "add", a, "type", "veth", "peer", "name", b],
                check=True,
            )
        for i in range(count):
            subprocess.run(["ip", "-n", name, "link", "set", f"bench{i}", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
