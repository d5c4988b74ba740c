"""Real net-snmp peers for the SNMP tests: snmpd with its own config, and network namespaces.

Nothing here reads /etc/snmp or writes /var/lib/snmp: every net-snmp process gets a private
config path, persistent directory and an empty MIB list (we use numeric OIDs throughout).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SNMPD = shutil.which("snmpd") or "/usr/sbin/snmpd"
SNMPGET = shutil.which("snmpget") or "/usr/bin/snmpget"
SNMPTRAP = shutil.which("snmptrap") or "/usr/bin/snmptrap"

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
#: NET-SNMP-MIB's netSnmpPlaypen: reserved for experiments, served by our pass script.
PLAYPEN = "1.3.6.1.4.1.8072.9999.9999"
GAUGE_OID = f"{PLAYPEN}.1.0"
COUNTER_OID = f"{PLAYPEN}.2.0"
TEXT_OID = f"{PLAYPEN}.3.0"

COMMUNITY = "avm-c0mmunity"
#: (user, net-snmp auth protocol, auth key, priv key); authPriv with AES-128 each.
V3_USERS = (
    ("avmsha", "SHA", "auth-key-sha1", "priv-key-sha1"),
    ("avmsha256", "SHA-256", "auth-key-sha256", "priv-key-sha256"),
)

_PASS_SCRIPT = """#!/bin/sh
# net-snmp "pass" protocol: -g OID -> print OID, type, value; anything else -> nothing.
d="$(dirname "$0")"
[ "$1" = "-g" ] || exit 0
case "$2" in
  .{playpen}.1.0) echo "$2"; echo gauge; cat "$d/gauge";;
  .{playpen}.2.0) echo "$2"; echo counter; cat "$d/counter";;
  .{playpen}.3.0) echo "$2"; echo string; echo "not a number";;
  .1.3.6.1.2.1.1.3.0) echo "$2"; echo timeticks; cat "$d/uptime";;
esac
"""


def net_snmp_env(directory: Path) -> dict[str, str]:
    """Environment that keeps a net-snmp tool inside ``directory``."""
    persist = directory / "persist"
    persist.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "SNMP_PERSISTENT_DIR": str(persist),
        "SNMPCONFPATH": str(directory / "conf"),
        "MIBS": "",
        "MIBDIRS": str(directory / "no-mibs"),
    }


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def netns() -> Iterator[str]:
    """A fresh namespace with only loopback up (no default route); deleted on exit."""
    name = f"avm-snmp-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


@dataclass
class Snmpd:
    """One net-snmp snmpd on ``host:port`` (inside ``ns`` when given), v2c and v3 authPriv."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    ns: str | None = None
    #: Serve sysUpTime from the file "uptime" (set_value) so a test can make it go back.
    fake_uptime: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return net_snmp_env(self.directory)

    def set_value(self, name: str, value: int) -> None:
        """Set what the pass script serves: "gauge", "counter" or (fake_uptime) "uptime"."""
        (self.directory / name).write_text(f"{value}\n")
        if self.process is not None:
            # net-snmp's pass answers a repeat of the OID it served last from a cache; one
            # request for another OID in between makes the next read run the script again.
            self.get(TEXT_OID)

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        script = self.directory / "pass.sh"
        script.write_text(_PASS_SCRIPT.replace("{playpen}", PLAYPEN))
        self.set_value("gauge", 42)
        self.set_value("counter", 1000)
        lines = [
            f"rocommunity {COMMUNITY} {self.host}",
            *(f'createUser {u} {a} "{ak}" AES "{pk}"' for u, a, ak, pk in V3_USERS),
            *(f"rouser {u} priv" for u, *_ in V3_USERS),
            f"pass .{PLAYPEN} /bin/sh {script}",
        ]
        if self.fake_uptime:
            self.set_value("uptime", 500_000)
            # Priority 1 outranks the agent's own system group (default 127).
            lines.append(f"pass -p 1 .{SYS_UPTIME.removesuffix('.0')} /bin/sh {script}")
        conf = self.directory / "snmpd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        conf = self.directory / "snmpd.conf"
        if not conf.exists():
            self.write_config()
        argv = [SNMPD, "-f", "-Lo", "-C", "-c", str(conf), "-r"]
        argv += ["-p", str(self.directory / "snmpd.pid"), f"udp:{self.host}:{self.port}"]
        log = (self.directory / "snmpd.log").open("ab")
        self.process = subprocess.Popen(
            in_netns(self.ns, argv), stdout=log, stderr=subprocess.STDOUT, env=self.env()
        )
        log.close()
        self.wait_ready()

    def get(self, oid: str, community: str = COMMUNITY) -> subprocess.CompletedProcess[str]:
        """One real SNMP GET with net-snmp's own client (independent of the code under test)."""
        argv = [SNMPGET, "-On", "-v2c", "-c", community, "-r0", "-t0.2", self.target, oid]
        return subprocess.run(
            in_netns(self.ns, argv), capture_output=True, text=True, env=self.env(), check=False
        )

    def wait_ready(self, attempts: int = 50) -> None:
        """Poll with a real GET (each waits up to 0.2 s for an answer) until snmpd answers."""
        for _ in range(attempts):
            if self.process is not None and self.process.poll() is not None:
                break
            if self.get(SYS_UPTIME).returncode == 0:
                return
        log = (self.directory / "snmpd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"snmpd on {self.target} did not answer; log tail:\n{log}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_snmpd(
    directory: Path, ns: str | None = None, port: int | None = None, fake_uptime: bool = False
) -> Iterator[Snmpd]:
    peer = Snmpd(directory, port or free_udp_port(), ns=ns, fake_uptime=fake_uptime)
    peer.write_config()
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
