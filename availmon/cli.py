"""The one ``availmon`` command. Each subcommand lives beside the code it drives and registers
itself through ``add_parser``; this module only lists them."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

import prometheus_client

from availmon.config import load_config, summary
from availmon.errors import EXIT_RUNTIME, EXIT_USAGE, AvailmonError, ConfigError
from availmon.text import one_line, terminal

#: Modules that contribute subcommands (``add_parser(subparsers)``), in help order.
COMMAND_MODULES = (
    "availmon.cli",
    "availmon.probecli",
    "agent.main",
    "collector.main",
    "availmon.demo",
    "collector.cli",
    "availmon.broker",
)

log = logging.getLogger("availmon")


def add_parser(sub: Any) -> None:
    config = sub.add_parser("config", help="validate an estate config")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="print every error with file, key and value")
    check.add_argument("file")
    check.add_argument("--site", help="also check that this site is in the config (installers)")
    check.set_defaults(func=cmd_config_check)


def cmd_config_check(args: argparse.Namespace) -> int:
    estate = load_config(args.file)  # a ConfigError is printed, issue by issue, by main
    if args.site is not None and args.site not in estate.sites:
        known = ", ".join(sorted(estate.sites)) or "none"
        print(f"{args.file}: sites: no site {args.site!r} (sites: {known})", file=sys.stderr)
        return EXIT_USAGE
    print(summary(estate))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="availmon", description=__doc__)
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="DEBUG, INFO, WARNING or ERROR (INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "allow_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Warnings (a secret file others can read) go to the log, in its format.
    logging.captureWarnings(True)
    # The embedded broker narrates every packet at INFO; keep its warnings only.
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    # `_created` series double every counter for no use on a dashboard.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
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
    if isinstance(exc, sqlite3.Error):
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
