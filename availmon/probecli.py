"""``availmon probe TYPE TARGET [--option value ...]``: run one probe as a check would."""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import json
import sys
import textwrap
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from availmon.durations import duration
from availmon.errors import ConfigError, ConfigIssue
from availmon.secrets import inline_secrets
from probes.base import ProbeResult, timeout_text
from probes.patterns import is_pattern
from probes.registry import REGISTRY


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="run one probe and print the result as JSON (exit 1 when it failed)",
        description="Options are the check's probe keys, e.g. --expect-status 200 "
        "(values are read as TOML: numbers, true/false, [lists], else text). "
        "'availmon probe TYPE --help' lists that type's options.",
        add_help=False,
    )
    p.add_argument("-h", "--help", action=_ProbeHelp, nargs=0, help="show this help and exit")
    p.add_argument("type", choices=sorted(REGISTRY))
    p.add_argument("target")
    p.add_argument(
        "--timeout", type=_timeout, default=5.0, help="seconds, or a duration such as 250ms (5)"
    )
    p.set_defaults(func=cmd_probe, allow_extra=True)


def _timeout(text: str) -> float:
    """``--timeout``: what a check's ``timeout`` may be, more than 0 and at most a year
    (inf overflowed the probe's clock arithmetic, nan and -1 "timed out" at once)."""
    try:
        value = float(duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, got {text!r}")
    return value


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


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's ``#:`` comment in the source of ``model`` and its bases: the options'
    documentation lives beside their declaration, read only when help is asked for."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines, _ = inspect.getsourcelines(cls)
        except (OSError, TypeError):
            continue
        tree = ast.parse(textwrap.dedent("".join(lines)))
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                text: list[str] = []
                i = node.lineno - 2
                while i >= 0 and lines[i].strip().startswith("#:"):
                    text.insert(0, lines[i].strip()[2:].strip())
                    i -= 1
                if text:
                    out[node.target.id] = " ".join(text)
    return out


def _type_name(annotation: Any) -> str:
    """A type as a user reads it: ``list of int``, ``one of 'udp', 'tcp'``, ``text``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return "regex" if is_pattern(args[1:]) else _type_name(args[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" (optional)" if len(named) < len(args) else "")
    if origin in (tuple, list):
        return "list of " + _type_name(args[0]) if args else "list"
    if origin is dict:
        return f"table of {_type_name(args[1])}" if len(args) == 2 else "table"
    names = {str: "text", Path: "path", bool: "true/false", int: "integer", float: "number"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def options_help(kind: str) -> str:
    """The keys a check of type ``kind`` may set: name, type, default and what it does."""
    model = REGISTRY[kind].options
    notes = _comments(model)
    rows = []
    for name, field in model.model_fields.items():
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = repr(field.default)
        about = field.description or notes.get(name, "")
        flag = "--" + name.replace("_", "-")
        rows.append(f"  {flag}  ({_type_name(field.annotation)}, default {default})")
        if about:
            rows.extend("      " + line for line in textwrap.wrap(about, 74))
    return f"options of {kind} probes (in a check: the same keys, with _):\n" + "\n".join(rows)


class _ProbeHelp(argparse.Action):
    """``availmon probe TYPE --help``: the usage, then that type's options from its model."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.print_help()
        kind = getattr(namespace, "type", None)
        print()
        if kind in REGISTRY:
            print(options_help(kind))
        else:
            print(f"'availmon probe TYPE --help' lists a type's options ({', '.join(REGISTRY)})")
        parser.exit()
