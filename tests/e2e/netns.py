"""A site in network namespaces, for end-to-end tests (issue 5 part 5).

```
root ns: broker, collector      site ns: agent          dc ns: HTTP target
  <broker end> 198.18.1.x/30 --- 198.18.1.x+1/30  198.18.2.1/30 --- 198.18.2.2/30
```

Only 198.18.0.0/15 (RFC 2544 benchmarking) addresses, only connected routes: no namespace
gets a default route, so a packet the site sends while its broker link is cut has nowhere to
go. Names carry a random suffix so runs never collide, and everything is deleted on exit.

Run as ``python -m tests.e2e.netns target --bind ADDR --flag FILE`` this module is also the
HTTP target inside the ``dc`` namespace: it answers 503 while FILE exists. The file system is
shared across namespaces, so the test flips the target without any network control channel.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import random
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: The broker link's root end is one /30 of this block, the first one unused in the root ns.
BROKER_BLOCK = ipaddress.IPv4Network("198.18.1.0/24")
SITE_ADDR = "198.18.2.1"
DC_ADDR = "198.18.2.2"
IP_TIMEOUT = 30.0


def unavailable() -> str | None:
    """Why these tests cannot run here, or None when they can (a namespace is added and
    deleted to find out: see ``tests.peers.netns_unavailable``)."""
    from tests.peers import netns_unavailable

    return netns_unavailable()


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip`` (inside ``netns`` when given) and return its stdout."""
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _free_broker_subnet() -> ipaddress.IPv4Network:
    """A /30 of BROKER_BLOCK with no address in the root namespace (another run may hold one)."""
    used = {
        ipaddress.IPv4Interface(word).network
        for line in ip("-4", "-o", "addr", "show").splitlines()
        for word in line.split()
        if "/" in word and word[0].isdigit()
    }
    subnets: list[ipaddress.IPv4Network] = list(BROKER_BLOCK.subnets(new_prefix=30))
    start = random.randrange(len(subnets))
    for subnet in subnets[start:] + subnets[:start]:
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise RuntimeError(f"every /30 of {BROKER_BLOCK} is in use in the root namespace")


@dataclass(frozen=True)
class SiteNetwork:
    """Names and addresses of one run's namespaces and links."""

    tag: str  # what every name of the run ends with
    site: str  # namespace running the agent
    dc: str  # namespace holding the target
    broker_root: str  # root end of the site <-> broker veth
    broker_site: str  # site end of it
    dc_site: str  # site end of the site <-> dc veth
    dc_dc: str  # dc end of it
    broker_addr: str  # root end's address: where the site reaches the broker
    site_broker_addr: str

    def exec_argv(self, netns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``netns``: ``ip netns exec`` execs it, so the PID is its own."""
        return ["ip", "netns", "exec", netns, *argv]

    def cut(self) -> None:
        """The site loses its broker link: its end goes down and takes the only route along."""
        ip("link", "set", self.broker_site, "down", netns=self.site)

    def restore(self) -> None:
        ip("link", "set", self.broker_site, "up", netns=self.site)

    def routes(self, netns: str) -> str:
        return ip("-4", "route", "show", netns=netns)

    def defaults(self) -> dict[str, str]:
        """Default routes in the test namespaces (must stay empty), by namespace."""
        return {ns: ip("route", "show", "default", netns=ns).strip() for ns in (self.site, self.dc)}


#: The names a run gives its namespaces and root-namespace link: ``<kind>-<pid>-<nn>``, the
#: pid (hex) of the test process that made them, so a later run can tell they are orphans.
OWNED = re.compile(r"^avm(?:-site|-dc|b|s)-(?P<pid>[0-9a-f]+)-[0-9a-f]{2}$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _names() -> tuple[list[str], list[str]]:
    """The namespaces, and the links of the root namespace."""
    names = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in ip("-o", "link", "show").splitlines()
        if ":" in line
    ]
    return names, links


def reap_orphans() -> list[str]:
    """Delete the namespaces and links of runs whose process is gone (a run killed by
    SIGKILL or a timeout never reached its ``finally``); those of live runs stay."""
    names, links = _names()
    reaped = []
    for name in names + links:
        m = OWNED.match(name)
        if m is None or _alive(int(m["pid"], 16)):
            continue
        if name in names:
            ip("netns", "delete", name, check=False)
        else:
            ip("link", "delete", name, check=False)
        reaped.append(name)
    return reaped


def leftovers(tag: str) -> list[str]:
    """Namespaces and root-namespace links of the run ``tag`` that still exist."""
    names, links = _names()
    return [name for name in names + links if tag in name]


def _free_tag() -> str:
    """A tag of this process whose names no namespace or link holds yet: two networks of one
    process (or a namespace a test made by hand) must not meet on the random byte."""
    names, links = _names()
    taken = "\n".join(names + links)
    free = [f"{os.getpid():x}-{n:02x}" for n in range(256)]
    free = [tag for tag in free if f"-{tag}" not in taken]
    if not free:
        raise RuntimeError(f"no free namespace tag left for pid {os.getpid()}")
    return secrets.choice(free)


@contextlib.contextmanager
def site_network() -> Iterator[SiteNetwork]:
    """Create the site and dc namespaces and both veth pairs; delete them all on exit.

    Processes started inside the namespaces must be gone before this exits: a namespace
    outlives its ``ip netns delete`` while a process still runs in it.
    """
    reap_orphans()
    tag = _free_tag()
    subnet = _free_broker_subnet()
    root_addr, site_addr = (str(h) for h in subnet.hosts())
    net = SiteNetwork(
        tag=tag,
        site=f"avm-site-{tag}",
        dc=f"avm-dc-{tag}",
        broker_root=f"avmb-{tag}",
        broker_site=f"avms-{tag}",
        dc_site=f"avmt-{tag}",
        dc_dc=f"avmd-{tag}",
        broker_addr=root_addr,
        site_broker_addr=site_addr,
    )
    try:
        ip("netns", "add", net.site)
        ip("netns", "add", net.dc)
        for ns in (net.site, net.dc):
            ip("link", "set", "lo", "up", netns=ns)
        # Site <-> broker: the root end gets the one address (and connected /30) we add there.
        ip("link", "add", net.broker_root, "type", "veth", "peer", "name", net.broker_site)
        ip("link", "set", net.broker_site, "netns", net.site)
        ip("addr", "add", f"{root_addr}/30", "dev", net.broker_root)
        ip("link", "set", net.broker_root, "up")
        ip("addr", "add", f"{site_addr}/30", "dev", net.broker_site, netns=net.site)
        ip("link", "set", net.broker_site, "up", netns=net.site)
        # Site <-> dc.
        ip("link", "add", net.dc_site, "type", "veth", "peer", "name", net.dc_dc, netns=net.site)
        ip("link", "set", net.dc_dc, "netns", net.dc, netns=net.site)
        ip("addr", "add", f"{SITE_ADDR}/30", "dev", net.dc_site, netns=net.site)
        ip("link", "set", net.dc_site, "up", netns=net.site)
        ip("addr", "add", f"{DC_ADDR}/30", "dev", net.dc_dc, netns=net.dc)
        ip("link", "set", net.dc_dc, "up", netns=net.dc)
        bad = {ns: route for ns, route in net.defaults().items() if route}
        if bad:
            raise RuntimeError(f"test namespaces must have no default route: {bad}")
        yield net
    finally:
        # Deleting a namespace destroys the veth ends inside it and so their peers; the root
        # end is deleted explicitly too in case the site namespace was never created.
        for ns in (net.site, net.dc):
            ip("netns", "delete", ns, check=False)
        ip("link", "delete", net.broker_root, check=False)


# -- the HTTP target run inside the dc namespace ---------------------------------------------


def serve_target(bind: str, flag: Path) -> None:
    """Answer 200 "ok", or 503 while ``flag`` exists; print the bound port, then serve."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            failing = flag.exists()
            body = b"failing for the test\n" if failing else b"ok\n"
            self.send_response(503 if failing else 200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the probe's own result is the record; keep stderr quiet

    server = ThreadingHTTPServer((bind, 0), Handler)
    print(server.server_address[1], flush=True)  # readiness: the socket is bound
    server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="test HTTP target whose health a file sets")
    sub = parser.add_subparsers(dest="command", required=True)
    target = sub.add_parser("target")
    target.add_argument("--bind", required=True)
    target.add_argument("--flag", required=True, type=Path)
    args = parser.parse_args(argv)
    serve_target(args.bind, args.flag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
