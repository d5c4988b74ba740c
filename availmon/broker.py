"""``availmon broker``: a locked-down Mosquitto configuration rendered from the estate config.

Issue 5 (part 4). One identity per agent (its agent id), one for the collector, an ACL that
lets each agent publish only under its own ``availmon/v1/<site>/<agent>/`` and the collector
only read, a TLS listener, and the queue settings the collector's persistent session needs
(docs/protocol.md; docs/operations.md, "The broker"). Passwords are hashed by Mosquitto's own
``mosquitto_passwd``, so the format is always the one the installed broker reads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from availmon.config import Estate, load_config
from availmon.errors import ConfigError, ConfigIssue, StartupError, UsageError
from availmon.limits import MQTT_PACKET_OVERHEAD
from availmon.schema import COLLECTORS_ROOT, TOPIC_ROOT

#: Usernames and topic levels we render: no ``:`` (password file), no ``+``/``#``/``/``
#: (topics), no whitespace (Mosquitto's config and ACL parsers split on it).
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEFAULT_CERT = Path("/etc/mosquitto/certs/server.crt")
_DEFAULT_KEY = Path("/etc/mosquitto/certs/server.key")
_DEFAULT_PERSISTENCE = Path("/var/lib/mosquitto")
_MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
_PASSWORD_MAX = 256


@dataclass(frozen=True)
class AgentIdentity:
    site: str
    username: str
    label: str | None

    @property
    def prefix(self) -> str:
        """The only topics this agent may publish to (docs/protocol.md, "Topics")."""
        return f"{TOPIC_ROOT}/{self.site}/{self.username}/"


@dataclass(frozen=True)
class CollectorIdentity:
    username: str  # its broker login
    client_id: str  # the name in its ack topics and presence (collector.members)


@dataclass(frozen=True)
class Identities:
    agents: tuple[AgentIdentity, ...]
    collectors: tuple[CollectorIdentity, ...]

    @property
    def collector(self) -> str:
        """The first collector's login (the only one unless the estate runs a pair)."""
        return self.collectors[0].username

    @property
    def usernames(self) -> list[str]:
        return [a.username for a in self.agents] + [c.username for c in self.collectors]


@dataclass(frozen=True)
class Listeners:
    """Where Mosquitto listens and with which server certificate."""

    cert: Path = _DEFAULT_CERT
    key: Path = _DEFAULT_KEY
    ca: Path | None = None
    port: int = 8883
    bind: str | None = None
    plain_port: int | None = None


@dataclass(frozen=True)
class Layout:
    """Where the rendered files are written, and where they will be on the broker host."""

    out: Path
    install_dir: Path | None = None
    persistence_location: Path = _DEFAULT_PERSISTENCE

    @property
    def secrets(self) -> Path:
        return self.out / "secrets"

    def secret(self, username: str) -> Path:
        return self.secrets / f"{username}.password"


@dataclass
class Rendered:
    """What a run wrote, for the summary."""

    layout: Layout
    identities: Identities
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unused: list[Path] = field(default_factory=list)


def identities(estate: Estate, file: str) -> Identities:
    """Every broker login, checked so that none can break the password file, ACL or topics.

    The config model already constrains site and agent ids; this is the broker's own guard,
    and the only check on ``broker.username``, which the model leaves free.
    """
    issues: list[ConfigIssue] = []
    agents: list[AgentIdentity] = []
    owner: dict[str, str] = {}
    for site_id, site in estate.sites.items():
        agent = estate.agent_id(site_id)
        key = f"sites.{site_id}.agent" if site.agent else f"sites.{site_id}"
        if not _IDENT.fullmatch(site_id):
            issues.append(ConfigIssue(file, f"sites.{site_id}", _not_ident("site id", site_id)))
        elif not _IDENT.fullmatch(agent):
            issues.append(ConfigIssue(file, key, _not_ident("agent id", agent)))
        else:
            agents.append(AgentIdentity(site_id, agent, site.name))
            owner[agent] = key
    collectors: list[CollectorIdentity] = []
    for i, client_id in enumerate(estate.collectors()):
        # This config's collector logs in as broker.username when set; a pair's other
        # member logs in as its client id.
        if client_id == estate.collector.client_id and estate.broker.username is not None:
            login, key = estate.broker.username, "broker.username"
        elif estate.collector.members:
            login, key = client_id, f"collector.members[{i}]"
        else:
            login, key = client_id, "collector.client_id"
        if not _IDENT.fullmatch(login):
            issues.append(ConfigIssue(file, key, _not_ident("collector username", login)))
        elif login in owner:
            issues.append(
                ConfigIssue(
                    file,
                    key,
                    f"collector username {login!r} is also the agent id of {owner[login]}:"
                    " the two need separate logins (the collector may only read, an agent only"
                    " write its own topics)",
                )
            )
        else:
            collectors.append(CollectorIdentity(login, client_id))
    if not estate.sites:
        issues.append(ConfigIssue(file, "sites", "no sites: no agent would have a login"))
    if issues:
        raise ConfigError(issues)
    return Identities(tuple(agents), tuple(collectors))


def _not_ident(what: str, value: str) -> str:
    return (
        f"{what} {value!r} cannot be a Mosquitto username and topic level: use letters, digits,"
        " '_', '.', '-' (first a letter or digit, at most 64)"
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("availmon", "templates"),
        autoescape=False,  # Mosquitto config, not HTML; every value is validated instead
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # Free text (site names, paths) goes into comments only; a newline would end the comment.
    env.filters["oneline"] = lambda text: " ".join(str(text).split())
    return env


def render_conf(estate: Estate, source: str, layout: Layout, listeners: Listeners) -> str:
    install = layout.install_dir or layout.out.absolute()
    return (
        _environment()
        .get_template("mosquitto.conf.j2")
        .render(
            source=source,
            install_dir=str(install).rstrip("/") or "/",
            persistence_location=str(layout.persistence_location).rstrip("/"),
            # Two batches: one committing, the next arriving and being validated meanwhile.
            max_inflight=2 * estate.collector.batch_size,
            max_packet_size=packet_limit(estate),
            tls=listeners,
            plain_port=listeners.plain_port,
        )
    )


def packet_limit(estate: Estate) -> int:
    """The largest MQTT packet the broker takes: the collector's payload limit and framing."""
    return estate.collector.max_payload_bytes + MQTT_PACKET_OVERHEAD


def render_acl(ids: Identities, source: str) -> str:
    return (
        _environment()
        .get_template("acl.j2")
        .render(
            source=source,
            agents=ids.agents,
            collectors=ids.collectors,
            topic_root=TOPIC_ROOT,
            collectors_root=COLLECTORS_ROOT,
        )
    )


def _keep_group(tmp: Path, dest: Path) -> None:
    """Give the replacement the group of the file it replaces: once the operator has made
    passwd and acl readable to group mosquitto, a re-render must not undo it."""
    # A new file, or a group not ours to give: the summary says what to run instead.
    with contextlib.suppress(FileNotFoundError, PermissionError):
        os.chown(tmp, -1, dest.stat().st_gid)


def _write(path: Path, text: str, mode: int) -> None:
    """Replace a file atomically with the given mode, never briefly more readable than that."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        _keep_group(tmp, path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _password(layout: Layout, username: str) -> tuple[str, bool]:
    """The login's password and whether it is new: an existing secret is always kept, so a
    re-render never locks out an agent that already has its password."""
    path = layout.secret(username)
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(32)
        _write(path, password + "\n", 0o600)
        return password, True
    except OSError as exc:
        raise StartupError(f"cannot read {path}: {exc.strerror}") from exc
    if not existing or len(existing) > _PASSWORD_MAX or not existing.isprintable():
        raise StartupError(
            f"{path}: not a usable password (one line of 1 to {_PASSWORD_MAX} printable"
            " characters); fix it, or delete the file to have a new one generated"
        )
    os.chmod(path, 0o600)
    return existing, False


def hash_passwords(passwords: dict[str, str], dest: Path, tool: str) -> None:
    """Write Mosquitto's password file with Mosquitto's own tool (``-U`` hashes a plaintext
    file in place), so passwords never appear on a command line."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(f"{user}:{password}\n" for user, password in passwords.items())
        done = subprocess.run(
            [tool, "-U", str(tmp)], capture_output=True, text=True, check=False, timeout=60
        )
        lines = tmp.read_text(encoding="utf-8").splitlines()
        hashed = [line.split(":", 1) for line in lines]
        if done.returncode != 0 or [u for u, *_ in hashed] != list(passwords):
            raise StartupError(f"{tool} -U failed: {(done.stderr or done.stdout).strip()}")
        if not all(len(h) == 2 and h[1].startswith("$") for h in hashed):
            raise StartupError(f"{tool} -U left a password unhashed; not writing {dest}")
        os.chmod(tmp, 0o640)  # group mosquitto reads it once Mosquitto drops root
        _keep_group(tmp, dest)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # it held plaintext until hashed


def mosquitto_passwd() -> str:
    tool = shutil.which("mosquitto_passwd") or _MOSQUITTO_PASSWD
    if not os.access(tool, os.X_OK):
        raise StartupError(
            "mosquitto_passwd not found: it hashes the password file in the format the broker"
            " reads (Debian: apt install mosquitto)"
        )
    return tool


def render(
    estate: Estate, source: str, layout: Layout, listeners: Listeners, *, tool: str
) -> Rendered:
    """Write mosquitto.conf, passwd, acl and one secret per login into ``layout.out``."""
    ids = identities(estate, source)
    layout.out.mkdir(parents=True, exist_ok=True)
    layout.secrets.mkdir(mode=0o700, exist_ok=True)
    os.chmod(layout.secrets, 0o700)
    done = Rendered(layout, ids)
    passwords: dict[str, str] = {}
    for username in ids.usernames:
        passwords[username], new = _password(layout, username)
        (done.created if new else done.kept).append(username)
    hash_passwords(passwords, layout.out / "passwd", tool)
    _write(layout.out / "acl", render_acl(ids, source), 0o640)
    _write(layout.out / "mosquitto.conf", render_conf(estate, source, layout, listeners), 0o644)
    wanted = {layout.secret(u) for u in ids.usernames}
    done.unused = sorted(p for p in layout.secrets.glob("*.password") if p not in wanted)
    return done


def summary(estate: Estate, done: Rendered, listeners: Listeners) -> str:
    layout, ids = done.layout, done.identities
    install = layout.install_dir or layout.out.absolute()
    where = f"{listeners.bind or '*'}:{listeners.port}"
    plain = f", plain 127.0.0.1:{listeners.plain_port}" if listeners.plain_port else ""
    lines = [
        f"availmon broker: wrote {layout.out}/",
        f"  mosquitto.conf  TLS listener {where} (TLS 1.2+){plain};"
        f" persistence in {layout.persistence_location}/",
        f"  passwd          {len(ids.usernames)} logins: {len(ids.agents)} agents,"
        f" collector {', '.join(repr(c.username) for c in ids.collectors)}"
        " (hashed by mosquitto_passwd)",
        f"  acl             each agent writes only its own {TOPIC_ROOT}/<site>/<agent>/ topics"
        " and reads only its confirmations; each collector reads"
        f" {TOPIC_ROOT}/# and writes only its confirmations, presence and alert receipts",
        f"  secrets/        {len(done.created)} new, {len(done.kept)} kept (mode 0600)",
    ]
    lines += [f"  unused secret   {p} (no such login now)" for p in done.unused]
    agent_file = estate.agent.password_file or "the file named by agent.password_file"
    lines += ["Next:", f"  1. Copy each agent's secret to its host as {agent_file}:"]
    lines += [f"       {a.site}: secrets/{a.username}.password" for a in ids.agents]
    collector_file = estate.broker.password_file or "the file named by broker.password_file"
    for c in ids.collectors:
        lines.append(
            f"  2. Copy secrets/{c.username}.password to collector {c.client_id}'s host as"
            f" {collector_file}."
        )
    if estate.broker.username is None:
        lines.append(f'     Set broker.username = "{ids.collector}": it is unset in the config.')
    lines += [
        f"  3. Install {listeners.cert} and {listeners.key}"
        + (f" (and {listeners.ca})" if listeners.ca else "")
        + " on the broker host; agents and the collector trust its CA (broker.tls.ca_file).",
        f"  4. Put passwd and acl in {install}/. Mosquitto reads them, and the key, after it"
        " drops to user mosquitto:",
        f"       chgrp mosquitto {install}/passwd {install}/acl {listeners.key}"
        f"; chmod 0640 {listeners.key}",
        f"     then start it: mosquitto -c {install}/mosquitto.conf",
    ]
    if estate.broker.embedded:
        lines.append("Note: broker.embedded is true: set it false to use this Mosquitto.")
    if estate.broker.tls is None:
        lines.append("Note: the config has no [broker.tls]: clients would not use TLS.")
    return "\n".join(lines)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def _conf_path(text: str) -> Path:
    """A path Mosquitto's config parser can take: it splits lines on whitespace."""
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"path must be non-empty, without spaces: {text!r}")
    return Path(text).absolute()


def _address(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"not an address: {text!r}")
    return text


_DESCRIPTION = """\
Write a locked-down Mosquitto configuration for the estate into DIR:
  mosquitto.conf  a TLS listener, no anonymous logins, persistence and queue limits that let
                  the collector's persistent session hold a large backlog
  passwd          one login per agent (its agent id) and one for the collector
                  (broker.username, else collector.client_id), hashed by mosquitto_passwd
  acl             each agent may publish only its own availmon/v1/<site>/<agent>/ topics
                  and read only its confirmations (ack); each collector may read
                  availmon/v1/# and write only its confirmations, its presence and its
                  alert receipts (which alert messages went, for the other of a pair)
  secrets/        each login's password (0600), to copy to its host; existing ones are kept,
                  so re-running never locks an agent out
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "broker",
        help="write a locked-down Mosquitto config, password file and ACL",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="estate config (TOML)")
    p.add_argument("--out", required=True, type=_conf_path, metavar="DIR", help="write here")
    p.add_argument(
        "--tls-cert",
        type=_conf_path,
        default=_DEFAULT_CERT,
        metavar="FILE",
        help=f"server certificate on the broker host ({_DEFAULT_CERT})",
    )
    p.add_argument(
        "--tls-key",
        type=_conf_path,
        default=_DEFAULT_KEY,
        metavar="FILE",
        help=f"its private key ({_DEFAULT_KEY})",
    )
    p.add_argument(
        "--tls-ca", type=_conf_path, metavar="FILE", help="CA for client certificates (none)"
    )
    p.add_argument("--port", type=_port, default=8883, metavar="N", help="TLS port (8883)")
    p.add_argument("--bind", type=_address, metavar="ADDRESS", help="TLS listener address (all)")
    p.add_argument(
        "--plain-port", type=_port, metavar="N", help="also plain MQTT on 127.0.0.1:N only"
    )
    p.add_argument(
        "--persistence-location",
        type=_conf_path,
        default=_DEFAULT_PERSISTENCE,
        metavar="DIR",
        help=f"Mosquitto's database directory ({_DEFAULT_PERSISTENCE})",
    )
    p.add_argument(
        "--install-dir",
        type=_conf_path,
        metavar="DIR",
        help="where passwd and acl will be on the broker host (--out)",
    )
    p.set_defaults(func=cmd_broker)


def cmd_broker(args: argparse.Namespace) -> int:
    if args.plain_port is not None and args.plain_port == args.port:
        raise UsageError(f"--plain-port {args.plain_port} is also the TLS --port")
    estate = load_config(args.config)
    listeners = Listeners(
        cert=args.tls_cert,
        key=args.tls_key,
        ca=args.tls_ca,
        port=args.port,
        bind=args.bind,
        plain_port=args.plain_port,
    )
    layout = Layout(args.out, args.install_dir, args.persistence_location)
    done = render(estate, str(args.config), layout, listeners, tool=mosquitto_passwd())
    print(summary(estate, done, listeners))
    return 0
