"""The one ``availmon`` command. Each subcommand lives beside the code it drives and registers
itself through ``add_parser``; this module only lists them."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import prometheus_client

from availmon.config import load_config, summary
from availmon.errors import AvailmonError, ConfigError

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

EXIT_FAIL = 1
EXIT_CONFIG = 2


def add_parser(sub: Any) -> None:
    config = sub.add_parser("config", help="validate an estate config")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="print every error with file, key and value")
    check.add_argument("file")
    check.add_argument("--site", help="also check that this site is in the config (installers)")
    check.set_defaults(func=cmd_config_check)


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        estate = load_config(args.file)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_CONFIG
    if args.site is not None and args.site not in estate.sites:
        known = ", ".join(sorted(estate.sites)) or "none"
        print(f"{args.file}: sites: no site {args.site!r} (sites: {known})", file=sys.stderr)
        return EXIT_CONFIG
    print(summary(estate))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="availmon", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (INFO)")
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
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_CONFIG
    except AvailmonError as exc:
        print(f"availmon: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
