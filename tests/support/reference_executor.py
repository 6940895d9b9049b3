"""The reference executor of the differential fuzzer: a batch of tests/support/batch_model.py
run the plain way, statement by statement on one asyncpg connection, with hand-written SQL and
no batchd code at all. What batchd must answer for the same batch follows from the docs and
batch.proto, written down here once more the naive way:

- ATOMIC: one transaction, operations in request order; the first failure rolls it back (that
  operation FAILED, the earlier ones ROLLED_BACK without rows, the later ones NOT_RUN, both
  ABORTED) and the RPC fails with the failing operation's code.
- INDEPENDENT: one transaction per unit (a group's operations, or one operation), in an order
  where each comes after what it depends on (references, depends_on); a unit whose dependency
  outside it did not succeed is SKIPPED whole (FAILED_PRECONDITION); a failed unit reports like
  a failed atomic batch. ``validate_only``: one transaction, a savepoint per unit, rolled back.
- References resolve to the native value of the referenced row (``op.N.column``; a missing
  row: FAILED_PRECONDITION, DEPENDENCY_FAILED); ``$literal`` is data.
- PostgreSQL's errors get the code of the docs' error table by SQLSTATE.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from tests.support.batch_model import (
    CASTS,
    PRIMARY_KEY,
    REFERENCE_SCHEMA,
    SOFT_DELETE_COLUMN,
    TABLES,
    VERSION_COLUMN,
    Batch,
    Delete,
    Filter,
    Get,
    Insert,
    Literal,
    Op,
    Query,
    Ref,
    Update,
    Where,
    canonical,
)

# The docs' error table (docs/reference/errors.md), by SQLSTATE (exact first, then class).
BY_SQLSTATE = {"23505": "ALREADY_EXISTS", "23503": "FAILED_PRECONDITION",
               "23502": "INVALID_ARGUMENT", "23514": "INVALID_ARGUMENT",
               "25006": "FAILED_PRECONDITION", "40001": "ABORTED", "40P01": "ABORTED"}
BY_CLASS = {"21": "INVALID_ARGUMENT", "22": "INVALID_ARGUMENT", "23": "FAILED_PRECONDITION",
            "40": "ABORTED", "42": "INVALID_ARGUMENT"}


@dataclass
class OpResult:
    """One operation's answer, normalised (the same form is made of batchd's)."""

    id: str
    outcome: str  # SUCCEEDED FAILED ROLLED_BACK NOT_RUN SKIPPED
    code: str = "OK"  # grpc.StatusCode name
    reason: str = ""  # batchd's own reasons; "" for PostgreSQL's errors (sqlstate says)
    sqlstate: str = ""
    constraint: str = ""
    columns: list[tuple[str, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    rows_affected: int = 0
    more: bool = False  # a next_page_token was given
    total_count: int | None = None
    message: str = field(default="", compare=False)  # batchd's (not compared: wording)


@dataclass
class BatchResult:
    code: str  # of the RPC
    committed: bool
    attempts: int
    results: list[OpResult]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list, compare=False)  # batchd's page tokens


class OpError(Exception):
    def __init__(self, code: str, reason: str = "", sqlstate: str = "",
                 constraint: str = "") -> None:
        super().__init__(code, reason, sqlstate, constraint)
        self.code, self.reason, self.sqlstate, self.constraint = code, reason, sqlstate, \
            constraint


def _database_error(exc: asyncpg.PostgresError) -> OpError:
    state = exc.sqlstate or ""
    code = BY_SQLSTATE.get(state) or BY_CLASS.get(state[:2], "UNKNOWN")
    return OpError(code, sqlstate=state, constraint=getattr(exc, "constraint_name", "") or "")


@dataclass
class _Output:
    rows: list[dict[str, Any]]  # native values, for references
    rows_affected: int
    more: bool = False
    total_count: int | None = None


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Params:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any, type_: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{CASTS[type_]}"


class ReferenceExecutor:
    """Runs a Batch on ``conn`` against the tables of ``schema``."""

    def __init__(self, conn: asyncpg.Connection, schema: str = REFERENCE_SCHEMA) -> None:
        self.conn = conn
        self.schema = schema

    def table(self, name: str) -> str:
        return f"{q(self.schema)}.{q(name)}"

    # --- the batch ------------------------------------------------------------------------

    async def run(self, batch: Batch) -> BatchResult:
        if batch.atomic:
            result = await self._atomic(batch)
        else:
            result = await self._independent(batch)
        result.tables = await self.contents()
        return result

    def _transaction(self, batch: Batch) -> Any:
        return self.conn.transaction(isolation=batch.isolation or "read_committed",
                                     readonly=batch.read_only)

    async def _atomic(self, batch: Batch) -> BatchResult:
        outputs: dict[str, _Output] = {}
        failure: tuple[Op, OpError] | None = None
        tx = self._transaction(batch)
        await tx.start()
        try:
            for op in batch.ops:
                try:
                    outputs[op.id] = await self._op(op, outputs)
                except OpError as exc:
                    failure = (op, exc)
                    break
        finally:
            if failure is not None or batch.validate_only:
                await tx.rollback()
            else:
                await tx.commit()
        if failure is None:
            return BatchResult("OK", not batch.validate_only, 1,
                               [self._succeeded(op, outputs[op.id]) for op in batch.ops])
        failed = self._failed_unit(batch.ops, outputs, *failure)
        return BatchResult(failure[1].code, False, 1, [failed[op.id] for op in batch.ops])

    async def _independent(self, batch: Batch) -> BatchResult:
        by_id = {op.id: op for op in batch.ops}
        units: dict[str, list[Op]] = {}  # by group (or the lone operation's id), in run order
        for op_id in batch.run_order:
            op = by_id[op_id]
            units.setdefault(op.group or f"\0{op.id}", []).append(op)
        outputs: dict[str, _Output] = {}  # succeeded operations
        answers: dict[str, OpResult] = {}
        outer = None
        if batch.validate_only:
            outer = self._transaction(batch)
            await outer.start()
        try:
            for members in units.values():
                # A group runs in request order.
                members.sort(key=batch.ops.index)
                ids = {m.id for m in members}
                needs = [d for m in members for d in [*m.depends_on, *(r.op for r in m.refs())]
                         if d not in ids]
                missing = next((d for d in needs if d not in outputs), None)
                if missing is not None:
                    for m in members:
                        answers[m.id] = OpResult(m.id, "SKIPPED", "FAILED_PRECONDITION",
                                                 "DEPENDENCY_NOT_SUCCEEDED")
                    continue
                ran: dict[str, _Output] = {}
                failure: tuple[Op, OpError] | None = None
                tx = self.conn.transaction() if outer else self._transaction(batch)
                await tx.start()
                try:
                    for m in members:
                        try:
                            ran[m.id] = await self._op(m, {**outputs, **ran})
                        except OpError as exc:
                            failure = (m, exc)
                            break
                finally:
                    if failure is not None:
                        await tx.rollback()
                    else:
                        await tx.commit()
                if failure is None:
                    outputs.update(ran)
                    answers.update((m.id, self._succeeded(m, ran[m.id])) for m in members)
                else:
                    answers.update(self._failed_unit(members, ran, *failure))
        finally:
            if outer is not None:
                await outer.rollback()
        return BatchResult("OK", bool(outputs) and not batch.validate_only, 1,
                           [answers[op.id] for op in batch.ops])

    @staticmethod
    def _succeeded(op: Op, out: _Output) -> OpResult:
        table = op.kind.table
        names = op.output_columns()
        return OpResult(op.id, "SUCCEEDED",
                        columns=[(c, TABLES[table][c]) for c in names],
                        rows=[{c: canonical(table, c, row[c]) for c in names}
                              for row in out.rows],
                        rows_affected=out.rows_affected, more=out.more,
                        total_count=out.total_count)

    @staticmethod
    def _failed_unit(ops: list[Op], ran: dict[str, _Output], failed: Op,
                     error: OpError) -> dict[str, OpResult]:
        out = {}
        for op in ops:
            if op.id == failed.id:
                out[op.id] = OpResult(op.id, "FAILED", error.code, error.reason,
                                      error.sqlstate, error.constraint)
            elif op.id in ran:
                out[op.id] = OpResult(op.id, "ROLLED_BACK", "ABORTED")
            else:
                out[op.id] = OpResult(op.id, "NOT_RUN", "ABORTED")
        return out

    async def contents(self) -> dict[str, list[dict[str, Any]]]:
        """Every table's rows, by primary key, normalised."""
        tables = {}
        for name, columns in TABLES.items():
            records = await self.conn.fetch(f"SELECT * FROM {self.table(name)} ORDER BY "
                                            f"{self._columns_sql(PRIMARY_KEY[name])}")
            tables[name] = [{c: canonical(name, c, _native(columns[c], r[c])) for c in columns}
                            for r in records]
        return tables

    # --- one operation ----------------------------------------------------------------------

    async def _op(self, op: Op, outputs: dict[str, _Output]) -> _Output:
        k = op.kind
        try:
            if isinstance(k, Insert):
                return await self._insert(op, k, outputs)
            if isinstance(k, Get):
                return await self._get(op, k, outputs)
            if isinstance(k, Query):
                return await self._query(op, k, outputs)
            return await self._write(op, k, outputs)
        except asyncpg.PostgresError as exc:
            raise _database_error(exc) from exc

    async def _fetch(self, sql: str, params: _Params, table: str) -> list[dict[str, Any]]:
        columns = TABLES[table]
        return [{c: _native(columns[c], v) for c, v in r.items()}
                for r in await self.conn.fetch(sql, *params.values)]

    def _columns_sql(self, names: list[str]) -> str:
        return ", ".join(q(c) for c in names)

    async def _insert(self, op: Op, k: Insert, outputs: dict[str, _Output]) -> _Output:
        types = TABLES[k.table]
        names = list(k.rows[0])
        resolved = [{c: resolve(v, outputs) for c, v in row.items()} for row in k.rows]
        params = _Params()
        groups = ["(" + ", ".join(params.add(bind(row[c], types[c]), types[c]) for c in names)
                  + ")" for row in resolved]
        sql = (f"INSERT INTO {self.table(k.table)} ({self._columns_sql(names)}) "
               f"VALUES {', '.join(groups)}{self._conflict(k, names)} "
               f"RETURNING {self._columns_sql(op.output_columns())}")
        rows = await self._fetch(sql, params, k.table)
        return _Output(rows, len(rows))

    def _conflict(self, k: Insert, names: list[str]) -> str:
        oc = k.on_conflict
        if oc is None or oc.action == "ERROR":
            return ""
        target = oc.conflict_columns or PRIMARY_KEY[k.table]
        head = f" ON CONFLICT ({self._columns_sql(target)})"
        if oc.action == "NOTHING":
            return f"{head} DO NOTHING"
        updates = oc.update_columns or [c for c in names if c not in target]
        sets = [f"{q(c)} = EXCLUDED.{q(c)}" for c in updates]
        version = VERSION_COLUMN.get(k.table)
        if version and version not in updates:
            sets.append(f"{q(version)} = {self.table(k.table)}.{q(version)} + 1")
        return f"{head} DO UPDATE SET {', '.join(sets)}"

    def _visible(self, table: str, include_deleted: bool) -> list[str]:
        deleted = SOFT_DELETE_COLUMN.get(table)
        return [] if include_deleted or deleted is None else [f"{q(deleted)} IS NULL"]

    def _key(self, table: str, key: dict[str, Any], params: _Params,
             outputs: dict[str, _Output]) -> list[str]:
        return [self._condition(table, Filter(c, "EQ", resolve(v, outputs)), params)
                for c, v in key.items()]

    def _condition(self, table: str, f: Filter, params: _Params) -> str:
        """``f`` with its value resolved already."""
        type_ = TABLES[table][f.column]
        column = q(f.column)
        if f.op == "IS_NULL":
            return f"{column} IS {'' if f.value else 'NOT '}NULL"
        if f.op == "IN":
            params.values.append([bind(v, type_) for v in f.value])
            return f"{column} = ANY(${len(params.values)}::{CASTS[type_]}[])"
        if f.op in ("LIKE", "ILIKE"):
            return f"{column} {f.op} {params.add(f.value, 'text')}"
        if f.value is None and f.op in ("EQ", "NE"):
            return f"{column} IS {'' if f.op == 'EQ' else 'NOT '}NULL"
        sign = {"EQ": "=", "NE": "<>", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}[f.op]
        return f"{column} {sign} {params.add(bind(f.value, type_), type_)}"

    def _where(self, table: str, w: Where, params: _Params,
               outputs: dict[str, _Output]) -> str:
        parts = [self._condition(table, _resolved(f, outputs), params) for f in w.filters]
        parts += [self._where(table, g, params, outputs) for g in w.groups]
        if w.logic == "NOT":
            return f"(NOT ({parts[0]}))"
        return "(" + f" {w.logic} ".join(parts) + ")"

    def _selection(self, k: Query | Update | Delete, params: _Params,
                   outputs: dict[str, _Output]) -> list[str]:
        parts = [self._condition(k.table, _resolved(f, outputs), params) for f in k.filters]
        if k.where is not None:
            parts.append(self._where(k.table, k.where, params, outputs))
        return parts

    async def _get(self, op: Op, k: Get, outputs: dict[str, _Output]) -> _Output:
        params = _Params()
        where = [*self._key(k.table, k.key, params, outputs),
                 *self._visible(k.table, k.include_deleted)]
        rows = await self._fetch(f"SELECT {self._columns_sql(op.output_columns())} FROM "
                                 f"{self.table(k.table)} WHERE {' AND '.join(where)}",
                                 params, k.table)
        if not rows:
            raise OpError("NOT_FOUND", "NOT_FOUND")
        return _Output(rows, 1)

    async def _query(self, op: Op, k: Query, outputs: dict[str, _Output]) -> _Output:
        params = _Params()
        where = [*self._selection(k, params, outputs),
                 *self._visible(k.table, k.include_deleted)]
        where_sql = " AND ".join(where) or "TRUE"
        order = [*k.order_by,
                 *((c, False) for c in PRIMARY_KEY[k.table] if c not in dict(k.order_by))]
        limit = k.limit or 100
        rows = await self._fetch(
            f"SELECT {self._columns_sql(op.output_columns())} FROM {self.table(k.table)} "
            f"WHERE {where_sql} ORDER BY "
            + ", ".join(f"{q(c)} {'DESC' if d else 'ASC'}" for c, d in order)
            + f" LIMIT {limit + 1}", params, k.table)
        total = None
        if k.count:
            total = int(await self.conn.fetchval(
                f"SELECT count(*) FROM {self.table(k.table)} WHERE {where_sql}", *params.values))
        return _Output(rows[:limit], len(rows[:limit]), len(rows) > limit, total)

    async def _write(self, op: Op, k: Update | Delete, outputs: dict[str, _Output]) -> _Output:
        types = TABLES[k.table]
        params = _Params()
        sets = []
        if isinstance(k, Update):
            sets = [f"{q(c)} = {params.add(bind(resolve(v, outputs), types[c]), types[c])}"
                    for c, v in k.set.items()]
        deleted = SOFT_DELETE_COLUMN.get(k.table)
        if isinstance(k, Delete) and deleted:
            sets.append(f"{q(deleted)} = now()")
        version = VERSION_COLUMN.get(k.table)
        if version and sets:
            sets.append(f"{q(version)} = {q(version)} + 1")
        if k.key is not None:
            where = self._key(k.table, k.key, params, outputs)
        else:
            where = self._selection(k, params, outputs)
        where += self._visible(k.table, False)
        if k.expected_version is not None:
            assert version is not None
            where.append(f"{q(version)} = {params.add(k.expected_version, 'integer')}")
        returning = self._columns_sql(op.output_columns())
        if sets:
            sql = (f"UPDATE {self.table(k.table)} SET {', '.join(sets)} "
                   f"WHERE {' AND '.join(where)} RETURNING {returning}")
        else:
            sql = f"DELETE FROM {self.table(k.table)} WHERE {' AND '.join(where)} " \
                  f"RETURNING {returning}"
        rows = await self._fetch(sql, params, k.table)
        if not rows and k.key is not None:
            if k.expected_version is not None:
                look = _Params()
                found = await self.conn.fetchval(
                    f"SELECT 1 FROM {self.table(k.table)} WHERE " + " AND ".join(
                        [*self._key(k.table, k.key, look, outputs),
                         *self._visible(k.table, False)]), *look.values)
                if found:
                    raise OpError("ABORTED", "VERSION_CONFLICT")
            raise OpError("NOT_FOUND", "NOT_FOUND")
        return _Output(rows, len(rows))


# --- values ----------------------------------------------------------------------------------

def resolve(value: Any, outputs: dict[str, _Output]) -> Any:
    """``value`` with its references replaced by the referenced values (native, as asyncpg
    returned them); a ``Literal`` is its data, untouched."""
    if isinstance(value, Ref):
        rows = outputs[value.op].rows
        if value.index >= len(rows):
            raise OpError("FAILED_PRECONDITION", "DEPENDENCY_FAILED")
        return rows[value.index][value.column]
    if isinstance(value, Literal):
        return value.value
    if isinstance(value, list):
        return [resolve(v, outputs) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, outputs) for k, v in value.items()}
    return value


def _resolved(f: Filter, outputs: dict[str, _Output]) -> Filter:
    return Filter(f.column, f.op, resolve(f.value, outputs))


def bind(value: Any, type_: str) -> Any:
    """A resolved value as asyncpg binds it for a parameter of ``type_``."""
    if value is None:
        return None
    if type_ == "jsonb":
        return json.dumps(value)
    if type_ in ("integer", "bigint"):
        return int(value)
    if type_.startswith("numeric"):
        return Decimal(str(value))
    if type_ == "timestamp with time zone" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def _native(type_: str, value: Any) -> Any:
    """asyncpg's value of a column, jsonb parsed (asyncpg gives its text)."""
    if type_ == "jsonb" and value is not None:
        return json.loads(value)
    return value
