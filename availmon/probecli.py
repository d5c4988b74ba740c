"""``availmon probe TYPE TARGET [--option value ...]``: run one probe as a check would."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tomllib
from typing import Any, get_origin

from pydantic import ValidationError

from availmon.errors import ConfigError, ConfigIssue
from availmon.secrets import inline_secrets
from probes.base import ProbeResult, timeout_text
from probes.registry import REGISTRY


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="run one probe and print the result as JSON (exit 1 when it failed)",
        description="Options are the check's probe keys, e.g. --expect-status 200 "
        "(values are read as TOML: numbers, true/false, [lists], else text).",
    )
    p.add_argument("type", choices=sorted(REGISTRY))
    p.add_argument("target")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (5)")
    p.set_defaults(func=cmd_probe, allow_extra=True)


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_extra(extra: list[str]) -> dict[str, Any]:
    """``--expect-status 200 --expect-status 301`` -> ``{"expect_status": [200, 301]}``."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        key = extra[i]
        if not key.startswith("--"):
            raise ConfigError([ConfigIssue("command line", key, "expected --option value")])
        name = key[2:].replace("-", "_")
        if "=" in name:
            name, text = name.split("=", 1)
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            text = extra[i + 1]
            i += 2
        else:
            text = "true"
            i += 1
        value = _value(text)
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


def refuse_inline_secrets(target: str, raw: dict[str, Any]) -> None:
    """The command line is as public as a config file (shell history, ``ps``): no password
    in the target URL, no ``Authorization`` header; refused with the value hidden."""
    found = [*inline_secrets(("target",), target), *inline_secrets((), raw)]
    if found:
        raise ConfigError([ConfigIssue("command line", path, msg) for path, msg in found])


async def run_probe(kind: str, target: str, timeout: float, raw: dict[str, Any]) -> ProbeResult:
    spec = REGISTRY[kind]
    refuse_inline_secrets(target, raw)
    problem = spec.check_target(target) if spec.check_target else None
    if problem:
        raise ConfigError([ConfigIssue("command line", "target", problem)])
    try:
        options = spec.parse_options(raw)
    except ValidationError as exc:
        raise ConfigError(
            [
                ConfigIssue("command line", "--" + ".".join(map(str, e["loc"])), e["msg"])
                for e in exc.errors()
            ]
        ) from exc
    try:
        async with asyncio.timeout(timeout + 1.0):
            return await spec.probe(target, timeout, options)
    except TimeoutError:
        return ProbeResult(ok=False, error=timeout_text(timeout))


def cmd_probe(args: argparse.Namespace) -> int:
    raw = parse_extra(args.extra)
    fields = REGISTRY[args.type].options.model_fields
    for key, value in raw.items():
        # One --flag gives a scalar; wrap it where the option is a list.
        wants_list = key in fields and get_origin(fields[key].annotation) in (tuple, list)
        if wants_list and not isinstance(value, list):
            raw[key] = [value]
    result = asyncio.run(run_probe(args.type, args.target, args.timeout, raw))
    json.dump(
        {"type": args.type, "target": args.target, **result.as_dict()},
        sys.stdout,
        indent=2,
        default=str,
    )
    print()
    return 0 if result.ok else 1
