"""Untrusted text on its way out: to a terminal, a Markdown file or a spreadsheet.

Causes, notes, providers and check names come from people and agents (CSV imports,
``annotate``, MQTT), so each output format neutralises them here, in one place each, rather
than trusting every caller to remember (issue 15). HTML is escaped by Jinja's autoescape.
"""

from __future__ import annotations

import re
import unicodedata

#: Cells a spreadsheet would run as a formula (OWASP, "CSV Injection"): a leading ``=``,
#: ``+``, ``-``, ``@``, tab or carriage return.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Markdown's inline syntax (emphasis, code, links, strike-through), ``|`` (a table cell's
#: end) and ``\`` itself. Values never start a line in our templates, so ``#``, ``-`` and
#: ``>`` (headings, lists, quotes) need no escape and dates stay readable in the source.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def terminal(text: object) -> str:
    """Printable as-is: control characters (ESC sequences, bidi overrides, newlines) are shown
    as ``\\x1b``-style escapes, so an imported cause cannot move the cursor, recolour the
    screen or set the window title."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in s)


def one_line(text: object) -> str:
    """A message for one line of a terminal or log: newlines become ``; ``, the rest as
    :func:`terminal`."""
    return terminal("; ".join(part for part in str(text).splitlines() if part.strip()))


def markdown(text: object) -> str:
    """Literal text in Markdown (including a table cell): no raw HTML, links, emphasis or
    cell breaks. ``<``, ``>`` and ``&`` become entities (Markdown passes raw HTML through)."""
    s = " ".join(str(text).split())  # a newline would end the table row
    s = "".join(_HTML_SPECIAL.get(ch, ch) for ch in s)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return "".join(ch if ch.isprintable() else " " for ch in unicodedata.normalize("NFC", s))


def csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: a leading formula character gets a ``'`` in front
    (OWASP's recommendation), so ``=HYPERLINK(...)`` or ``=cmd|...`` is never evaluated. A
    bare carriage return becomes a newline: the csv module quotes cells holding its line
    terminator (``\n``) but not ``\r``, which a reader then takes for the end of the row."""
    s = "" if value is None else str(value)
    if s.startswith(_FORMULA_START):
        s = "'" + s
    return s.replace("\r\n", "\n").replace("\r", "\n")


def encodable(text: str) -> bool:
    """Whether ``text`` can be written out as UTF-8. Bytes that were not UTF-8 come into
    Python (arguments, headers) as lone surrogates, and JSON can escape one (``"\\udcff"``):
    neither SQLite nor a terminal can take them ('unexpected UnicodeEncodeError')."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
