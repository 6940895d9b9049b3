"""Bad-row isolation: COPY a chunk's rows, leaving out the ones PostgreSQL refuses.

If PostgreSQL refuses a row of a COPY (constraint, bad CSV field), the rows are split to find
the refused ones: PostgreSQL's error names the line, so the rows before it are written, the row
is rejected, and the rest is tried again; without a line, halves are tried. The other rows are
still written. A refusal that is no row's fault (``about_a_row``) refuses the chunk whole
(``ChunkRefused``). Every encoding writes through here (batchd.stream.encodings).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from batchd.errors import BatchdError, InvalidArgument, from_database
from batchd.stream.target import Written

_COPY_LINE = re.compile(r"COPY [^,]+, line (\d+)")

Copy = Callable[[Sequence[Any]], Awaitable[Written]]


async def write_isolating(conn: asyncpg.Connection, copy: Copy, units: Sequence[Any],
                          indexes: list[int]) -> tuple[Written, list[tuple[int, BatchdError]]]:
    """COPY ``units`` under savepoints, leaving out the ones PostgreSQL (or the encoder)
    refuses: returns (what was written, rejected rows by chunk index).

    Units are tried in windows from the first not yet written: all of them, at first. A window
    refused at a line PostgreSQL names is followed by the units before that line (they were
    fine), then the refused one alone, which is rejected; a window refused without a line, by
    its first half, down to one unit, which is rejected. After a rejection the next window is
    ``wide``, which every refusal halves and every success doubles: a few bad rows among good
    ones cost a few COPYs each, and a chunk of bad rows one short COPY per row, never one of
    every row left after it, nor a recursion as deep as the chunk."""
    written, refused = Written(), []
    position, wide = 0, max(1, len(units))
    window, prefix = wide, False  # prefix: the window is the good units before a refused line
    while position < len(units):
        part = units[position:position + window]
        try:
            async with conn.transaction():  # a savepoint: a refused COPY leaves the rest intact
                written = written + await copy(part)
            position += len(part)
            if prefix:  # the refused one comes next, alone
                window, prefix = 1, False
            else:
                wide = window = min(max(1, len(units) - position), wide * 2)
            continue
        except asyncpg.PostgresError as exc:
            error: BatchdError = from_database(exc) or BatchdError(str(exc))
            if not about_a_row(exc):
                raise ChunkRefused(error) from exc
            line = _line_of(exc)
        except (ArithmeticError, ValueError, TypeError) as exc:  # the driver could not encode
            error = InvalidArgument(f"value cannot be encoded for its column: {exc}")
            line = None
        wide = max(1, wide // 2)
        if len(part) == 1:
            refused.append((indexes[position], error))
            position += 1
            window = wide
        elif line is not None and 1 <= line <= len(part) and _one_line_each(part):
            window, prefix = (line - 1, True) if line > 1 else (1, False)
        else:
            window = len(part) // 2
    return written, refused


class ChunkRefused(Exception):
    """PostgreSQL refused a chunk for a reason that is no row's fault: the chunk is not
    written, and the stream ends with ``error`` (the caller's transaction rolls back, its
    ledger row with it, so that the chunk re-sent later is written)."""

    def __init__(self, error: BatchdError) -> None:
        super().__init__(error.message)
        self.error = error


# SQLSTATE classes of refusals that are no row's fault (every row would get the same one):
# connection, feature not supported (0A), invalid transaction state, authorization, catalog
# and schema names, transaction rollback (serialization, deadlock: the stream is retried),
# access rules (42: privileges, a column or table gone), insufficient resources, object not in
# prerequisite state (lock_timeout), operator intervention (statement_timeout, shutdown),
# system and internal errors. The rest (data exceptions, constraints, a trigger's RAISE, a
# row too big, ...) are a row's own.
_NOT_A_ROW = frozenset({"08", "0A", "0L", "0P", "25", "28", "2D", "3B", "3D", "3F", "40", "42",
                        "53", "55", "57", "58", "F0", "HV", "XX"})


def about_a_row(exc: asyncpg.PostgresError) -> bool:
    """Whether PostgreSQL refused a row of the COPY, rather than the whole of it. Privileges
    are the whole's, except a row-level-security policy refusing a row (SQLSTATE 42501 too):
    told apart by PostgreSQL's message, so that a server whose messages are in another
    language refuses such a chunk whole (honestly, if less finely), never writes it as empty."""
    state = exc.sqlstate or ""
    if state == "42501":
        return "row-level security" in (exc.message or "")
    return state[:2] not in _NOT_A_ROW


def _line_of(exc: asyncpg.PostgresError) -> int | None:
    m = _COPY_LINE.search(getattr(exc, "context", None) or "")
    return int(m.group(1)) if m else None


def _one_line_each(units: Sequence[Any]) -> bool:
    """Binary COPY counts records as lines; CSV counts physical lines, so only records
    without embedded newlines map line numbers to records."""
    return not units or not isinstance(units[0], bytes) or \
        all(u.count(b"\n") <= 1 for u in units)
