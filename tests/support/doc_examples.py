"""The docs' examples, read from docs/**/*.md and README.md and run as a reader would run them,
in page order, against a server of the page's own on a fresh demo schema
(tests/integration/test_docs_examples.py).

A fenced block is an example when the line right above its fence is a marker comment (an HTML
comment: Markdown renders nothing for it):

    <!-- run -->            sh / console: each `$ command` runs in bash; what follows it, up to
                            the next `$ `, is its shown output. python / ts: the block is a
                            program; its output is the next block marked <!-- output -->.
                            sql: run on the page's database as its superuser.
    <!-- run: config -->    toml: the page's server restarts with these settings.
    <!-- run: file NAME --> the block is written to NAME in the page's folder.
    <!-- output -->         the output of the python / ts program above it.
    <!-- not run: WHY -->   shown, never run (Go: no toolchain here; docker, kubectl...).

Every sh, console, python, ts and go block carries one of these (check_markers), so that an
example nobody runs cannot be added by accident.

Outputs are compared as JSON when the shown output is JSON (grpcurl's answers: the page may print
them compactly), else line by line. In both, ``...`` stands for what the page cuts or masks (ids
that depend on timing, timestamps, long messages): a string "..." matches any value, a string
ending in "..." any string that begins so, a list whose last item is "..." any further items, a
dict with a key "..." any further keys; in text, ``...``
matches any run of characters within a line, and a line that is only ``...`` any lines.

Addresses: `localhost:50051` in an example is the page's server, `localhost:8080` its HTTP port;
`batchd exec|schema|ingest`
get `--target` for it, and programs read BATCHD_TARGET, which the pages set as their default.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!-- (run(?:: (?P<arg>[^>]*?))?|output|not run: (?P<why>[^>]*?)) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)")
MUST_BE_MARKED = {"sh", "console", "python", "ts", "go", "bash"}
CUT = "..."


@dataclass
class Block:
    """A fenced block of a page and the marker above it (``None``: unmarked)."""

    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order (top-level fences only)."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marker = lines[start - 1].strip() if start > 0 else ""
        found.append(Block(page, start + 1, fence["lang"], "\n".join(body) + "\n",
                           marker if MARKER.match(marker) else None))
        i += 1
    return found


def all_pages() -> list[Path]:
    """The docs' pages, and the README (its examples run too)."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def pages() -> list[Path]:
    """Every page with at least one example to run."""
    return [p for p in all_pages()
            if any(b.marker and b.marker.startswith("<!-- run") for b in blocks(p))]


def check_markers() -> list[str]:
    """The blocks that must say whether they run and do not (each as ``page:line``)."""
    return [b.where for p in all_pages() for b in blocks(p)
            if b.lang in MUST_BE_MARKED and b.marker is None]


def marker_arg(block: Block) -> str | None:
    match = MARKER.match(block.marker or "")
    return match["arg"] if match else None


# --- shell sessions ----------------------------------------------------------------------------

@dataclass
class Command:
    """One ``$ command`` of a shell block and the output the page shows for it."""

    text: str
    shown: str
    line: int


def commands(block: Block) -> list[Command]:
    """The commands of a shell session: a command runs on until its quotes close and it does
    not end in a backslash; a heredoc (<<'END') until its END line."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise AssertionError(f"{block.where}: line {i + 1} of the block is neither a "
                                 f"command ($ ...) nor the output of one: {lines[i]!r}")
        start = i
        text = lines[i][2:]
        while not complete(text) and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        heredoc = re.search(r"<<-?'?(\w+)'?", text)
        if heredoc:
            while i + 1 < len(lines) and lines[i].strip() != heredoc[1]:
                i += 1
                text += "\n" + lines[i]
        i += 1
        shown: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            shown.append(lines[i])
            i += 1
        found.append(Command(text, "\n".join(shown), block.line + start + 1))
    return found


def complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def addressed(command: str, port: int, http_port: int = 0) -> str:
    """The command aimed at the page's server (``http_port``: its HTTP port, for 8080)."""
    command = re.sub(r"\b(localhost|127\.0\.0\.1):50051\b", f"127.0.0.1:{port}", command)
    if http_port:
        command = re.sub(r"\b(localhost|127\.0\.0\.1):8080\b", f"127.0.0.1:{http_port}",
                         command)
    return re.sub(r"(^|[;&|]\s*)batchd (exec|schema|ingest)\b",
                  rf"\1batchd \2 --target 127.0.0.1:{port}", command)


# --- outputs -----------------------------------------------------------------------------------

def json_values(text: str) -> list[Any] | None:
    """The JSON values ``text`` holds one after the other, or None if it is not JSON."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    text = text.strip()
    at = 0
    try:
        while at < len(text):
            value, at = decoder.raw_decode(text, at)
            values.append(value)
            while at < len(text) and text[at].isspace():
                at += 1
    except json.JSONDecodeError:
        return None
    return values or None


def json_matches(shown: Any, actual: Any) -> bool:
    if shown == CUT:
        return True
    if isinstance(shown, str) and shown.endswith(CUT):
        return isinstance(actual, str) and actual.startswith(shown[:-len(CUT)])
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return False
        keys = set(shown) - {CUT}
        if CUT not in shown and set(actual) != keys:
            return False
        return keys <= set(actual) and all(json_matches(shown[k], actual[k]) for k in keys)
    if isinstance(shown, list):
        if not isinstance(actual, list):
            return False
        if shown and shown[-1] == CUT:
            shown = shown[:-1]
            actual = actual[:len(shown)]
        return len(shown) == len(actual) and all(map(json_matches, shown, actual))
    return bool(shown == actual)


def text_pattern(shown: str) -> re.Pattern[str]:
    parts = []
    for line in shown.rstrip().splitlines():
        if line.strip() == CUT:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(map(re.escape, line.rstrip().split(CUT))) + r"[ \t]*\n")
    return re.compile("".join(parts), re.DOTALL)


def output_matches(shown: str, actual: str) -> bool:
    """Does the ``actual`` output read as the page shows it (the rules at the top)?"""
    if not shown.strip():
        return True
    shown_json = json_values(shown)
    if shown_json is not None:
        actual_json = json_values(actual)
        return (actual_json is not None and len(actual_json) == len(shown_json)
                and all(map(json_matches, shown_json, actual_json)))
    lines = [line.rstrip() for line in actual.strip("\n").splitlines()]
    return text_pattern(shown).fullmatch("\n".join(lines) + "\n") is not None


# Runs a Python example as a reader's script, top-level await allowed (the pages' async examples).
PYTHON_RUNNER = """\
import ast, asyncio, sys, types
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
module = types.ModuleType("__main__"); module.__file__ = path
sys.modules["__main__"] = module
result = eval(code, module.__dict__)
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""
