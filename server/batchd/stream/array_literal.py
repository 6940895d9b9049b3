"""PostgreSQL's array literal — ``{a,b}``, ``{"a b",NULL}``, ``{{1,2},{3,4}}`` — read as
PostgreSQL's own ``array_in`` reads it (PostgreSQL 17 and later), for COLUMNAR array columns.

A PostgreSQL export (``COPY TO``, ``psql``, ``pg_dump``) writes arrays this way, so COLUMNAR
takes it beside JSON text (``["a","b"]``). The structure is read exactly:

- elements are separated by ``,`` and may be nested ``{...}``, which must be rectangular;
  ``{}`` (and ``{{}}``, ``{{},{}}``) is the empty array;
- an element is unquoted or ``"quoted"``; a backslash takes the next character as it is, in
  both; whitespace around an element is dropped, inside an unquoted one it is kept (an escaped
  space counts as inside);
- ``NULL`` (any case, unquoted and without a backslash) is NULL; ``"NULL"`` and ``NU\\LL`` are
  the text NULL;
- ``[1:2]={a,b}`` bounds are checked against the elements; a lower bound other than 1 is
  refused, since the array batchd writes starts at 1 (PostgreSQL would keep it).

Every element comes back as its text (or None), for the column's coercion to read as it reads
JSON strings; ``element_text`` turns the text forms PostgreSQL writes that JSON would not (a
boolean's ``t``, bytea's ``\\x0102``, a json element's document) into what that coercion takes.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from batchd.pgtext import JsonText

_SPACE = " \t\n\r\v\f"  # PostgreSQL's scanner_isspace
_BOUNDS = re.compile(r"\[\s*([-+]?\d+)\s*(?::\s*([-+]?\d+)\s*)?\]")
# Bounds, then "=": "[2]" alone is JSON (an array of the number 2).
_BOUNDS_START = re.compile(r"[ \t\n\r\v\f]*(\[\s*[-+]?\d+\s*(:\s*[-+]?\d+\s*)?\]\s*)+=")


class ArrayLiteralError(ValueError):
    """Not an array literal PostgreSQL would read (or one batchd cannot write as read)."""


def is_literal(text: str) -> bool:
    """Whether ``text`` is meant as an array literal (``{`` or bounds first), not JSON."""
    start = text[:1]
    if start and start in _SPACE:  # rare: no copy of every text for it
        start = text.lstrip(_SPACE)[:1]
    return start == "{" or (start == "[" and _BOUNDS_START.match(text) is not None)


# "NULL" in any case, ASCII only as PostgreSQL's pg_strcasecmp (str.upper would also take
# characters whose capitals are N, U or L).
_NULLS = frozenset("".join(c) for c in itertools.product("nN", "uU", "lL", "lL"))
# The common export: one dimension, nothing quoted or escaped. Split at once.
_SIMPLE = re.compile(r"[ \t\n\r\v\f]*\{([^{}\"\\]*)\}[ \t\n\r\v\f]*")


def parse(text: str) -> list[Any]:
    """The array, as nested lists of element texts and None; ArrayLiteralError saying why
    not (at which character)."""
    simple = _SIMPLE.fullmatch(text)
    if simple is not None:
        inner = simple[1]
        if not inner.strip(_SPACE):
            return []
        items = [item.strip(_SPACE) for item in inner.split(",")]
        if all(items):  # else an empty element: the full reading says where
            return [None if item in _NULLS else item for item in items]
    i, bounds = _skip(text, 0), []
    while i < len(text) and text[i] == "[":
        found = _BOUNDS.match(text, i)
        if found is None:
            raise ArrayLiteralError(f"malformed bounds at character {i + 1}")
        lower = int(found[1]) if found[2] is not None else 1
        upper = int(found[2]) if found[2] is not None else int(found[1])
        bounds.append((lower, upper))
        i = _skip(text, found.end())
    if bounds:
        if i >= len(text) or text[i] != "=":
            raise ArrayLiteralError('bounds must be followed by "="')
        i = _skip(text, i + 1)
    if i >= len(text) or text[i] != "{":
        raise ArrayLiteralError('an array literal starts with "{" (or bounds such as [1:2]=)')
    value, i = _array(text, i)
    i = _skip(text, i)
    if i < len(text):
        raise ArrayLiteralError(f"junk after the closing brace at character {i + 1}")
    shape = _shape(value)
    if bounds:
        _check_bounds(bounds, shape)
    return value if shape else []


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


MAX_DIMENSIONS = 6  # PostgreSQL's MAXDIM: a deeper literal is refused, never recursed into


def _array(text: str, i: int, depth: int = 1) -> tuple[list[Any], int]:
    """The ``{...}`` at ``text[i]``, and the index after its ``}``."""
    if depth > MAX_DIMENSIONS:
        raise ArrayLiteralError(f"more than {MAX_DIMENSIONS} dimensions at character {i + 1} "
                                "(PostgreSQL's limit)")
    items: list[Any] = []
    i += 1
    after_delimiter = False
    while True:
        i = _skip(text, i)
        if i >= len(text):
            raise ArrayLiteralError("unexpected end of the literal (a missing \"}\"?)")
        c = text[i]
        if c == "}" and not items and not after_delimiter:
            return items, i + 1
        if c in ",}":
            raise ArrayLiteralError(f'unexpected "{c}" at character {i + 1} (an empty '
                                    'element is written "")')
        if c == "{":
            sub, i = _array(text, i, depth + 1)
            items.append(sub)
        elif c == '"':
            quoted, i = _quoted(text, i)
            items.append(quoted)
        else:
            unquoted, i = _unquoted(text, i)
            items.append(unquoted)
        i = _skip(text, i)
        if i >= len(text):
            raise ArrayLiteralError("unexpected end of the literal (a missing \"}\"?)")
        if text[i] == "}":
            return items, i + 1
        if text[i] != ",":
            raise ArrayLiteralError(f"incorrectly quoted element: unexpected {text[i]!r} at "
                                    f"character {i + 1}")
        i += 1
        after_delimiter = True


def _quoted(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                break
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ArrayLiteralError("unexpected end of the literal inside a quoted element")


def _unquoted(text: str, i: int) -> tuple[str | None, int]:
    out: list[str] = []
    kept = 0  # the length up to the last character that is not trailing whitespace
    escaped = False
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                break
            out.append(text[i + 1])
            kept, escaped = len(out), True
            i += 2
            continue
        if c in ",}":
            value = "".join(out[:kept])
            return (None if not escaped and value in _NULLS else value), i
        if c in '{"':
            raise ArrayLiteralError(f"incorrectly quoted element: unexpected {c!r} at "
                                    f"character {i + 1} (quote the whole element, or escape "
                                    "it with a backslash)")
        out.append(c)
        if c not in _SPACE:
            kept = len(out)
        i += 1
    raise ArrayLiteralError("unexpected end of the literal (a missing \"}\"?)")


def _shape(value: list[Any]) -> tuple[int, ...]:
    """The dimensions of a rectangular array; () for one without elements (``{{},{}}``)."""
    if not _has_elements(value):
        return ()
    if not value:
        raise ArrayLiteralError("sub-arrays must have matching dimensions")
    kinds = {isinstance(v, list) for v in value}
    if kinds == {False}:
        return (len(value),)
    if kinds != {True}:
        raise ArrayLiteralError("sub-arrays must have matching dimensions")
    shapes = {_shape(v) for v in value}
    if len(shapes) != 1 or () in shapes:
        raise ArrayLiteralError("sub-arrays must have matching dimensions")
    return (len(value), *shapes.pop())


def _has_elements(value: list[Any]) -> bool:
    return any(not isinstance(v, list) or _has_elements(v) for v in value)


def _check_bounds(bounds: list[tuple[int, int]], shape: tuple[int, ...]) -> None:
    sizes = tuple(upper - lower + 1 for lower, upper in bounds)
    if sizes != shape:
        raise ArrayLiteralError(f"the bounds say {'x'.join(map(str, sizes))} elements, the "
                                f"literal has {'x'.join(map(str, shape)) or 0}")
    for lower, _ in bounds:
        if lower != 1:
            raise ArrayLiteralError(f"lower bound {lower}: batchd writes arrays that start "
                                    "at 1; send the elements without bounds")


# --- element texts ---------------------------------------------------------------------------

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _pg_bool(text: str) -> bool:
    """PostgreSQL's boolean input: t, true, y, yes, on, 1 (and f, ...), any case, or an
    unambiguous prefix (``o`` alone is not: on or off)."""
    word = text.strip(_SPACE).lower()
    if word:
        if word == "o":
            raise ArrayLiteralError(f"{text!r} is not a boolean")
        if any(t.startswith(word) for t in _TRUE):
            return True
        if any(f.startswith(word) for f in _FALSE):
            return False
    raise ArrayLiteralError(f"{text!r} is not a boolean (t, f, true, false, ...)")


def _pg_bytea(text: str) -> bytes:
    """PostgreSQL's bytea input: hex (``\\x0102``) or escape format (``a\\000b``: ``\\\\``
    a backslash, ``\\nnn`` an octal byte, any other character its UTF-8 bytes)."""
    if text.startswith("\\x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise ArrayLiteralError(f"{text!r} is not bytea hex (\\x then pairs of hex "
                                    "digits)") from None
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] != "\\":
            out += text[i].encode()
            i += 1
        elif text[i + 1:i + 2] == "\\":
            out.append(0x5C)
            i += 2
        elif re.fullmatch(r"[0-3][0-7]{2}", text[i + 1:i + 4]):
            out.append(int(text[i + 1:i + 4], 8))
            i += 4
        else:
            raise ArrayLiteralError(f"{text!r}: invalid bytea escape (\\\\ or \\nnn octal)")
    return bytes(out)


def _pg_json(text: str) -> JsonText:
    try:
        json.loads(text)
    except ValueError as exc:
        raise ArrayLiteralError(f"element {text[:40]!r} is not JSON text: {exc}") from None
    except RecursionError:  # Python's JSON reader recurses per level of nesting
        raise ArrayLiteralError(f"element {text[:40]!r} is JSON nested too deep to read") \
            from None
    return JsonText(text)


_ELEMENT_TEXT = {"bool": _pg_bool, "bytea": _pg_bytea, "json": _pg_json}


def element_texts(value: list[Any], family: str) -> list[Any]:
    """``value``'s element texts as the column's coercion takes them (see the module doc)."""
    read = _ELEMENT_TEXT.get(family)
    if read is None:
        return value
    return [None if v is None else element_texts(v, family) if isinstance(v, list) else read(v)
            for v in value]
