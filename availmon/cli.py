"""The one ``availmon`` command. Each subcommand lives beside the code it drives and registers
itself through ``add_parser``; this module only lists them.

Only the module of the command being run is imported: ``availmon --help`` must not load the
collector, aiohttp or pysnmp to print a list of names (issue 9: start-up). So each command's
one-line help is also written in :data:`COMMANDS`; a test keeps it equal to the module's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import types
from collections.abc import Sequence
from typing import Any

from availmon.errors import EXIT_RUNTIME, EXIT_USAGE, AvailmonError, ConfigError
from availmon.logs import LOG_FORMATS
from availmon.logs import setup as setup_logging
from availmon.text import encodable, one_line, terminal

#: Every subcommand, in help order: the module whose ``add_parser(subparsers)`` defines it,
#: and its one-line help (shown by ``availmon --help`` without importing the module).
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("availmon.cli", "validate an estate config"),
    "probe": (
        "availmon.probecli",
        "run one probe and print the result as JSON (exit 1 when it failed)",
    ),
    "agent": ("agent.main", "run a site's agent"),
    "collector": ("collector.main", "run the collector (ingest, store, web, metrics)"),
    "demo": ("availmon.demo", "run broker, collector and agents in one process"),
    "outages": ("collector.cli", "import, list and annotate outage records"),
    "alerts": ("collector.cli", "list, acknowledge and test alerts"),
    "report": ("collector.cli", "the quarterly availability report (html, md, csv or json)"),
    "maintenance": (
        "collector.cli",
        "declare, list and cancel maintenance windows (planned work, declared before it)",
    ),
    "broker": ("availmon.broker", "write a locked-down Mosquitto config, password file and ACL"),
}

DESCRIPTION = (
    "availmon: availability monitoring for a shared ICT service. Agents probe each site's "
    "checks and publish outage events over MQTT; the collector stores them and computes "
    "outages, downtime minutes and the quarterly availability KPI. The commands below run "
    "those daemons, check a config or a probe before deploying it, and give the service "
    "manager reports, outage records, maintenance windows and alerts."
)

log = logging.getLogger("availmon")


def version() -> str:
    """The installed package's version (from its metadata, as pip and the wheel know it)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("availmon")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _Version(argparse.Action):
    """``--version``, reading the package metadata only when asked (start-up, issue 9)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"availmon {version()}")
        parser.exit()


def add_parser(sub: Any) -> None:
    config = sub.add_parser("config", help=COMMANDS["config"][1])
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="print every error with file, key and value")
    check.add_argument(
        "file",
        nargs="?",
        help="estate config (default: --config, $AVAILMON_CONFIG, /etc/availmon/availmon.toml)",
    )
    check.add_argument("--config", help="the same as FILE")
    check.add_argument("--site", help="also check that this site is in the config (installers)")
    check.set_defaults(func=cmd_config_check)


def cmd_config_check(args: argparse.Namespace) -> int:
    from availmon.imports import setting

    # No pydantic plugin is wanted here, and looking for them reads every installed
    # package's metadata when the first model is built: 2.6 % of the command's instructions
    # (issue 9, start-up). The variable is pydantic's own switch, set for this command only.
    with setting("PYDANTIC_DISABLE_PLUGINS", "__all__"):
        return _config_check(args)


def _config_check(args: argparse.Namespace) -> int:
    from availmon.config import load_config, summary
    from availmon.configpath import describe, find_config

    path, source = find_config(args.file or args.config)
    if source != "--config":  # from the environment or /etc: say which file it is
        print(f"availmon: {describe(path, source)}", file=sys.stderr)
    args.file = str(path)
    estate = load_config(path)  # a ConfigError is printed, issue by issue, by main
    if args.site is not None and args.site not in estate.sites:
        known = ", ".join(sorted(estate.sites)) or "none"
        print(f"{args.file}: sites: no site {args.site!r} (sites: {known})", file=sys.stderr)
        return EXIT_USAGE
    if not estate.sites:  # valid, as an empty Prometheus config is, but never what is meant
        print(
            f"{args.file}: sites: warning: no sites: an agent has nothing to probe and the"
            " collector refuses every event",
            file=sys.stderr,
        )
    print(summary(estate))
    return 0


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a global option)."""
    words = iter(argv)
    for word in words:
        if word in ("--log-level", "--log-format"):
            next(words, None)
        elif word == "--":
            return next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given ``argv``, only the module of the command it names is imported
    and the other commands are stubs that carry their help line."""
    parser = argparse.ArgumentParser(
        prog="availmon",
        description=DESCRIPTION,
        epilog="Run 'availmon COMMAND --help' for a command's options. Exit codes: 0 done, "
        "1 a check or an import found something wrong, 2 usage or config error, 3 runtime "
        "failure.",
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the installed version and exit"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="DEBUG, INFO, WARNING or ERROR (INFO)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text for a terminal, or json / logfmt with keys ts, level, logger, msg (text)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = None if argv is None else COMMANDS.get(command_in(argv) or "", (None,))[0]
    for name, (module, help_text) in COMMANDS.items():
        if name in sub.choices:
            continue  # defined along with an earlier command of the same module
        if argv is None or module == wanted:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _undecodable(value: object) -> bool:
    """Text from bytes that are not UTF-8 (see ``availmon.text.encodable``)."""
    return isinstance(value, str) and not encodable(value)


def _shown(value: str) -> str:
    """The bytes as typed, with the bad ones as ``\\xff`` escapes."""
    shown = (
        f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else repr(c)[1:-1] for c in value
    )
    return f"'{''.join(shown)}'"


#: Arguments that name files whatever their type (a file name may be any bytes).
_PATH_DESTS = frozenset({"config", "file", "state_dir", "out", "db"})


def refuse_undecodable(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: Sequence[str]
) -> None:
    """Every text argument must be UTF-8: a usage error (exit 2) naming the argument, before
    the command runs. Paths (``type=Path``) are left alone: a file name may be any bytes."""
    while True:
        chosen = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
                continue
            if action.dest in _PATH_DESTS:
                continue
            value = getattr(args, action.dest, None)
            for v in value if isinstance(value, list) else [value]:
                if _undecodable(v):
                    assert isinstance(v, str)
                    error = argparse.ArgumentError(action, f"not UTF-8: {_shown(v)}")
                    parser.error(str(error))
        if chosen is None:
            break
        parser = chosen
    for i, word in enumerate(extra):  # a probe's options
        if _undecodable(word):
            name = word.split("=", 1)[0] if word.startswith("--") else extra[i - 1] if i else ""
            named = f"argument {name}: " if name.startswith("--") else ""
            parser.error(f"{named}not UTF-8: {_shown(word)}")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "allow_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    refuse_undecodable(parser, args, extra)
    args.extra = extra
    setup_logging(args.log_level, args.log_format)
    # Warnings (a secret file others can read) go to the log, in its format.
    logging.captureWarnings(True)
    # The embedded broker narrates every packet at INFO; keep its warnings only.
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    # `_created` series double every counter for no use on a dashboard. Only the commands that
    # export metrics have loaded prometheus_client by now; the others never pay for it (issue 9).
    if "prometheus_client" in sys.modules:
        import prometheus_client

        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        result = args.func(args)
        if isinstance(result, types.CoroutineType):
            import asyncio

            result = asyncio.run(result)
        return int(result or 0)
    except KeyboardInterrupt:
        return 130
    except (Exception, BaseExceptionGroup) as exc:  # the one place a failure becomes a line
        return report_failure(exc)


def _leaf(exc: BaseException) -> BaseException:
    """The error that matters inside a task group's ExceptionGroup (ours first)."""
    while isinstance(exc, BaseExceptionGroup):
        ours = exc.subgroup(AvailmonError)
        exc = (ours or exc).exceptions[0]
    return exc


def report_failure(exc: BaseException) -> int:
    """Every failure that ends a command: one line on stderr (a config error: one per issue)
    and the documented exit code (README, "Exit codes"), never a traceback."""
    exc = _leaf(exc)
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, ConfigError):
        for issue in exc.issues:
            print(terminal(issue), file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, AvailmonError):
        print(f"availmon: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    # sqlite3 is imported by the commands that use it: an error of its kind needs it loaded
    # (not importing it here keeps it out of `config check` and `--help`).
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        message = f"database error: {exc}"
    elif isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        message = f"{where}{exc.strerror or exc}"
    else:
        # A bug: still one line, with the traceback one flag away.
        log.debug("unexpected failure", exc_info=exc)
        message = f"unexpected {type(exc).__name__}: {exc} (run with --log-level DEBUG for details)"
    print(f"availmon: {one_line(message)}", file=sys.stderr)
    return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
