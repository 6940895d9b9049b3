"""Chains: consecutive inserts that refer to each other, sent as one statement.

A customer, its order by ``{"$ref": "c.id"}``, the order's items: statement by statement that
is a round trip each, every reference resolved in Python between them. A chain is such a run
compiled into one statement of data-modifying CTEs, each insert (or run of coalesced inserts,
batchd.batch.coalesce) one part, each reference to an earlier part a scalar subquery over that
part's RETURNING, resolved inside PostgreSQL:

    WITH s0 AS (INSERT INTO customers (name) SELECT u.c0 FROM unnest($1::text[])
                WITH ORDINALITY AS u(c0, n) ORDER BY u.n RETURNING id),
         s1 AS (INSERT INTO orders (customer_id, total) SELECT (SELECT id FROM s0), u.c1
                FROM unnest($2::numeric[]) WITH ORDINALITY AS u(c1, n) ORDER BY u.n
                RETURNING id)
    SELECT 0, s0.id FROM s0 UNION ALL SELECT 1, s1.id FROM s1

Every part's rows come back in one result (the part's number, then columns by type that the
parts share, the others' NULL), split back per operation. The caller sees exactly what
statement by statement gives; where it could not, the chain ends and the next insert starts
another:

- The parts of one statement share one snapshot: a part cannot read what another wrote. So
  only inserts chain (they read nothing themselves), into tables where nothing else runs on a
  write (``Table.plain``: no triggers of their own, row-level security or rules). What an
  insert checks against other rows is PostgreSQL's own: unique and exclusion indexes see rows
  an earlier part inserted, and foreign keys are checked at the end of the statement — so an
  insert into a table that an earlier part's foreign key points at ends the chain (statement
  by statement, the earlier rows' keys are checked before those rows exist), unless that
  part's key columns all take references to parts before it (rows that exist either way).
- Plain inserts: no ON CONFLICT (a conflict would drop rows from RETURNING, or update a row
  another part inserted), RETURNING something, no array columns (they take VALUES, not unnest),
  at most ``ROWS_PER_STATEMENT`` rows a part (a larger insert is cut into statements of that
  many, so that encoding its parameters never stalls the event loop for long).
- A reference to a part must be a whole value (``{"$ref": "o.id"}``), to an operation that
  inserts exactly one row alone in its part, of a column of the referring column's very type
  (no coercion in between). A reference to anything that ran before the chain is an ordinary
  bound value.

A batch's first chain can also carry its request id's claim (``Guard``, the CTEs of
batchd.batch.idempotency): its parts insert only behind a claimed id, and the claim costs no
round trip of its own.

What PostgreSQL cannot tell batchd: a column default or a CHECK that calls a function reading
another table sees, inside a chain, the rows of that table as the statement began (PostgreSQL
itself calls such a CHECK unsupported). Tables whose defaults do that should have a trigger
instead, which keeps their inserts out of chains.

A failed chain names no operation: its transaction is aborted, and the batch runs again with
its operations apart (``APART``, batchd.batch.failure), as a failed coalesced insert does. Errors
that are not about an operation (a serialization failure, a timeout, a lost connection) are
the chain's first operation's, as the transaction's next statement would have met them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from batchd.batch.plan import Step
from batchd.catalog import Column
from batchd.kinds.base import Output, select_list
from batchd.kinds.insert import ROWS_PER_STATEMENT, InsertSpec, column_values
from batchd.kinds.params import Deferred, Results, find_refs
from batchd.values import Ref

# Parts per chain: a statement of many CTEs takes longer to plan than its round trips save,
# and its result row grows a column per part's returned column.
MAX_PARTS = 32

# (part, column): the earlier part's returned column a column takes; None: bound values.
Source = tuple[int, Column] | None


@dataclass(slots=True)
class Part:
    """One CTE: one insert, or a run of coalesced inserts (one table, columns, RETURNING)."""

    steps: list[Step]
    specs: list[InsertSpec]
    sources: tuple[Source, ...]  # per column of the insert


@dataclass(frozen=True, slots=True)
class Guard:
    """What a chain's parts run behind: CTEs leading the statement (their parameters $1 to
    $len(args)), the one of them without whose rows no part inserts anything, and boolean
    expressions over them, read back (``run`` returns them)."""

    ctes: str
    args: list[Any]
    gate: str
    flags: tuple[str, ...]


@dataclass(slots=True)
class Chain:
    parts: list[Part]

    @property
    def steps(self) -> list[Step]:
        return [s for p in self.parts for s in p.steps]


def runs(groups: list[list[Step]]) -> list[list[Step] | Chain]:
    """``groups`` (coalesce.runs) in order, consecutive ones joined into chains where they can
    be (see the module's docstring); the rest as they are."""
    out: list[list[Step] | Chain] = []
    parts: list[Part] = []
    where: dict[str, int] = {}  # step id -> its part in ``parts``

    def close() -> None:
        if len(parts) > 1:
            out.append(Chain(list(parts)))
        elif parts:
            out.append(parts[0].steps)
        parts.clear()
        where.clear()

    for group in groups:
        specs = _chainable(group)
        if specs is None:
            close()
            out.append(group)
            continue
        part = _joined(group, specs, parts, where) if len(parts) < MAX_PARTS else None
        if part is None:
            close()
            part = _joined(group, specs, parts, where)  # alone, it refers only to what ran
            assert part is not None
        for step in group:
            where[step.id] = len(parts)
        parts.append(part)
    close()
    return out


def _chainable(group: list[Step]) -> list[InsertSpec] | None:
    """The inserts of ``group`` if a chain can hold them: plain inserts into a plain table."""
    specs = []
    for step in group:
        planned = step.planned
        if planned is None or not isinstance(planned.spec, InsertSpec):
            return None
        specs.append(planned.spec)
    shape = specs[0].shape
    if (shape.conflict_sql or not shape.columns or not shape.returning
            or not shape.table.plain or any(c.is_array for c in shape.columns)
            or sum(len(spec.rows) for spec in specs) > ROWS_PER_STATEMENT):
        return None
    return specs


def _joined(group: list[Step], specs: list[InsertSpec], parts: list[Part],
            where: dict[str, int]) -> Part | None:
    """``group`` as the next part after ``parts``, or None if it cannot follow them."""
    shape = specs[0].shape
    if any(_may_point_at(p, shape.table.oid) for p in parts):
        return None
    if not any(spec.has_deferred for spec in specs):
        return Part(group, specs, (None,) * len(shape.columns))
    sources: list[Source] = []
    for i, column in enumerate(shape.columns):
        unset = True
        source: Source = None
        for spec in specs:
            for row in spec.rows:
                found = _source(row[i], column, parts, where)
                if found is False:
                    return None
                if unset:
                    source, unset = found, False
                elif found != source:
                    return None  # some rows refer to a part, others do not
        sources.append(source)
    return Part(group, specs, tuple(sources))


def _may_point_at(part: Part, oid: int) -> bool:
    """Whether a foreign key of ``part``'s rows may point at a row of table ``oid`` inserted
    after them: one that points at the table, and not only through references to parts before
    it."""
    shape = part.specs[0].shape
    referenced = {c.name for c, s in zip(shape.columns, part.sources, strict=True) if s}
    return any(parent == oid and not set(columns) <= referenced
               for parent, columns in shape.table.foreign_keys)


def _source(value: Any, column: Column, parts: list[Part],
            where: dict[str, int]) -> Source | Literal[False]:
    """Where ``value`` comes from inside the chain: None (a value bound as it is, references
    to what ran before included), a part's column, or False: it cannot be in the chain."""
    if type(value) is not Deferred:
        return None
    inside = [r for r in find_refs(value.raw) if r.operation in where]
    if not inside:
        return None
    ref = value.raw
    if not isinstance(ref, Ref) or ref.row != 0:
        return False
    at = where[ref.operation]
    target = parts[at]
    if len(target.specs) != 1 or len(target.specs[0].rows) != 1:
        return False  # not exactly one row of its own
    returned = next((c for c in target.specs[0].shape.returning if c.name == ref.column), None)
    if returned is None or returned.cast_sql != column.cast_sql:
        return False
    return at, returned


async def run(chain: Chain, conn: asyncpg.Connection, results: Results[Any],
              guard: Guard | None = None) -> tuple[dict[str, Output], tuple[Any, ...]]:
    """Run ``chain`` as one statement: each operation's output, by id (its rows are recorded
    by the caller), and the values of ``guard``'s flags (none without one)."""
    params: list[Any] = list(guard.args) if guard is not None else []
    for part in chain.parts:
        given = [row for spec in part.specs for row in spec.rows]
        bound = [c for c, s in zip(part.specs[0].shape.columns, part.sources, strict=True)
                 if s is None]
        if not bound:
            params.append(len(given))
            continue
        at = [i for i, s in enumerate(part.sources) if s is None]
        values = [[results.finalize(row[i]) for i in at] for row in given]
        params.extend(column_values(bound, values))
    sql, slots = statement(chain, guard)
    records = await conn.fetch(sql, *params)
    by_part: list[list[asyncpg.Record]] = [[] for _ in chain.parts]
    flags: tuple[Any, ...] = ()
    for record in records:
        if record[0] < 0:
            flags = tuple(record[len(record) - len(guard.flags):]) if guard else ()
        else:
            by_part[record[0]].append(record)
    outputs: dict[str, Output] = {}
    if not all(flags):  # the guard kept the parts from inserting anything
        return {step.id: Output([], part.specs[0].shape.rendering)
                for part in chain.parts for step in part.steps}, flags
    for part, found, at in zip(chain.parts, by_part, slots, strict=True):
        shape = part.specs[0].shape
        names = list(zip([c.name for c in shape.returning], at, strict=True))
        rows = [{name: r[i] for name, i in names} for r in found]
        start = 0
        for step, spec in zip(part.steps, part.specs, strict=True):
            mine = rows[start:start + len(spec.rows)]
            start += len(spec.rows)
            outputs[step.id] = Output(mine, shape.rendering, rows_affected=len(mine))
        if start != len(rows):
            raise RuntimeError(f"a chained insert returned {len(rows)} rows for {start}")
    return outputs, flags


# Statements by the chain's form (tables, columns, sources, RETURNING), with where each
# part's returned columns are in the result: the same for every batch of one form. Bounded,
# like every cache keyed by requests.
_statements: dict[tuple[Any, ...], tuple[str, list[list[int]]]] = {}


def statement(chain: Chain, guard: Guard | None = None) -> tuple[str, list[list[int]]]:
    """The chain's statement, and for each part the result's positions of its returned
    columns."""
    key = (tuple((p.specs[0].shape.table.sql,
                  tuple((c.sql, c.cast_sql) for c in p.specs[0].shape.columns),
                  tuple(None if s is None else (s[0], s[1].sql) for s in p.sources),
                  tuple((c.sql, c.cast_sql) for c in p.specs[0].shape.returning))
                 for p in chain.parts),
           None if guard is None else (guard.ctes, guard.gate, guard.flags))
    found = _statements.get(key)
    if found is None:
        if len(_statements) >= 1024:
            _statements.clear()
        found = _statements[key] = _compile(chain, guard)
    return found


def _compile(chain: Chain, guard: Guard | None) -> tuple[str, list[list[int]]]:
    ctes = [guard.ctes] if guard is not None else []
    n = len(guard.args) if guard is not None else 0
    behind = f" WHERE EXISTS (SELECT FROM {guard.gate})" if guard is not None else ""
    for i, part in enumerate(chain.parts):
        shape = part.specs[0].shape
        names, arrays, exprs = [], [], []
        for j, (column, source) in enumerate(zip(shape.columns, part.sources, strict=True)):
            if source is None:
                n += 1
                names.append(f"c{j}")
                arrays.append(f"${n}::{column.cast_sql}[]")
                exprs.append(f"u.c{j}")
            else:
                exprs.append(f"(SELECT {source[1].sql} FROM s{source[0]})")
        if names:
            rows = f"unnest({', '.join(arrays)}) WITH ORDINALITY AS u({', '.join(names)}, n)"
        else:
            n += 1
            rows = f"generate_series(1, ${n}::int8) AS u(n)"
        ctes.append(f"s{i} AS (INSERT INTO {shape.table.sql} ({select_list(shape.columns)}) "
                    f"SELECT {', '.join(exprs)} FROM {rows}{behind} ORDER BY u.n "
                    f"RETURNING {select_list(shape.returning)})")
    # The result's columns after the part's number: a slot per type, as many of one type as
    # one part returns, shared by the parts (the others' NULL), so that a chain of orders and
    # their items is a result of a few columns, not of every part's.
    slots: list[str] = []
    positions: list[list[int]] = []
    for part in chain.parts:
        mine: list[int] = []
        for column in part.specs[0].shape.returning:
            taken = sum(1 for k in mine if slots[k] == column.cast_sql)
            of_type = [k for k, t in enumerate(slots) if t == column.cast_sql]
            if taken < len(of_type):
                mine.append(of_type[taken])
            else:
                slots.append(column.cast_sql)
                mine.append(len(slots) - 1)
        positions.append(mine)
    # With a guard, a row of its own (part -1) carries its flags, in columns of their own.
    no_flags = ["NULL::boolean" for _ in guard.flags] if guard is not None else []
    selects = []
    if guard is not None:
        flag_row = [f"NULL::{t}" for t in slots] + list(guard.flags)
        selects.append(f"SELECT -1, {', '.join(flag_row)}")
    for i, (part, mine) in enumerate(zip(chain.parts, positions, strict=True)):
        values = [f"NULL::{t}" for t in slots]
        for column, k in zip(part.specs[0].shape.returning, mine, strict=True):
            values[k] = f"s{i}.{column.sql}"
        selects.append(f"SELECT {i}, {', '.join(values + no_flags)} FROM s{i}")
    return (f"WITH {', '.join(ctes)} {' UNION ALL '.join(selects)}",
            [[k + 1 for k in mine] for mine in positions])
