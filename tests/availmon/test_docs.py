"""The README documents every command the CLI has; the docs cannot fall behind the code."""

from __future__ import annotations

import argparse
from pathlib import Path

from availmon.cli import build_parser

README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()


def commands(parser: argparse.ArgumentParser, prefix: str = "availmon") -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}"
                nested = commands(sub, full)
                out.extend(nested or [full])
    return out


def test_every_command_is_in_the_readme() -> None:
    missing = [c for c in commands(build_parser()) if f"`{c}" not in README]
    assert missing == []


def test_quick_start_is_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("```", 2)[1]
    assert [line.split("#")[0].strip() for line in quick.splitlines()[1:] if line.strip()] == [
        "make demo",
        "make test",
    ]


REPO = Path(__file__).resolve().parent.parent.parent


def test_docs_stay_inside_the_repository() -> None:
    """The product documents itself: nothing it ships points at files users never have."""
    texts = {p: p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
    assert [str(p) for p, text in texts.items() if "../shared" in text or "DESIGN.md" in text] == []


def test_readme_links_to_docs_that_exist() -> None:
    linked = {part.split(")", 1)[0] for part in README.split("](docs/")[1:]}
    assert {"architecture.md", "operations.md"} <= linked
    assert [name for name in linked if not (REPO / "docs" / name).is_file()] == []
