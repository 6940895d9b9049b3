"""Hypothesis strategies for the differential fuzzer: batches of tests/support/batch_model.py
over its four tables, every one valid as a request (batchd plans it; whatever fails, fails
while running), drawn so that failures of every kind happen often: unique, foreign-key, check
and not-null violations, version conflicts, NOT_FOUND, references to rows that are not there.

Values come from small pools, so that keys collide, filters match and references find rows.
A reference only ever feeds a column of the same family of type (integer to integer, text to
text, numeric to numeric, timestamptz to timestamptz), inside jsonb only integers and text.

INDEPENDENT batches are drawn so that their answer does not depend on how their units
interleave: two units that may run at once (neither depends on the other) touch different
table families ({parent, child}, {doc}, {link}), or only read. The generator adds a ``depends_on``
(on the earlier unit's last operation) where that would not hold. Groups are drawn as
consecutive operations; the request order is then shuffled (a group's members keep their
order), so references and depends_on also point forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from tests.support.batch_model import (
    FAMILY,
    PRIMARY_KEY,
    SOFT_DELETE_COLUMN,
    TABLES,
    VERSION_COLUMN,
    Batch,
    Delete,
    Filter,
    Get,
    Insert,
    Kind,
    Literal,
    OnConflict,
    Op,
    Query,
    Ref,
    Update,
    Where,
)

# Fresh values of each column (small pools: collisions are the point). Literal keys of the
# tables with serial ids are the seed rows' or 99, never one the sequence may hand out in the
# batch: which one it does is not a promise (see the test module).
SERIAL_IDS = [1, 1, 2, 2, 3, 3, 99]
# Instants in several spellings (the first two, and the last, are one instant).
AT = ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", "2024-06-01T10:00:00Z",
      "2025-02-03T04:05:06.789+05:30", "2024-01-01T00:00:00.5Z", "2023-12-31T16:00:00-08:00"]
FRESH: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("parent", "id"): st.sampled_from(SERIAL_IDS),
    ("parent", "code"): st.sampled_from(["a", *"defghijkmnopqrstuvw"]),
    # Integers also as strings, numeric also as numbers and with more digits than its scale.
    ("parent", "qty"): st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "3", "10", -1]),
    ("parent", "price"): st.one_of(
        st.sampled_from([Decimal("0.00"), Decimal("1.50"), Decimal("10.00"),
                                    Decimal("99.99"), Decimal("1.5")]), st.integers(0, 20)),
    ("parent", "note"): st.sampled_from(["x", "y", "Xy", "ab%", "_"]),
    ("child", "id"): st.sampled_from(SERIAL_IDS),
    ("child", "parent_id"): st.sampled_from([1, 1, 2, 3, 3, 99]),
    ("child", "label"): st.sampled_from([f"l{i}" for i in range(1, 10)]),
    ("child", "amount"): st.one_of(st.sampled_from([Decimal("0"), Decimal("1.00"),
                                                    Decimal("2.5"), Decimal("2.555"),
                                                    Decimal("-0.005"), 2.5, 0.1]),
                                   st.integers(0, 9)),
    ("child", "at"): st.sampled_from(AT),
    ("doc", "id"): st.sampled_from([1, 4, 5, 6, 7, 8, 9, "6"]),
    ("doc", "version"): st.integers(1, 4),
    ("doc", "title"): st.sampled_from(["t1", "t2", "t3", "T1"]),
    ("link", "from"): st.sampled_from([1, 1, 2, 3, "2"]),
    ("link", "to"): st.sampled_from(["x", "y", "z", "X"]),
    ("link", "weight"): st.sampled_from([Decimal("1.5"), Decimal("-0.125"), Decimal("0"),
                                         Decimal("2.0005"), 3, 0.25]),
    ("link", "Note"): st.sampled_from(["n", "N", "select", "x y"]),
    ("doc", "tags"): st.one_of(st.lists(st.sampled_from(["a", "b", "c"]),
                                                   max_size=3), st.just(["x", None])),
}
NOT_NULL = {("parent", "id"), ("parent", "code"), ("parent", "qty"), ("child", "id"),
            ("child", "parent_id"), ("child", "label"), ("child", "amount"), ("doc", "id"),
            ("doc", "version"), ("doc", "title"), ("link", "from"), ("link", "to")}
# What an insert names: always (else a not-null violation, drawn on purpose), and maybe.
REQUIRED = {"parent": ["code"], "child": ["parent_id", "label"], "doc": ["id", "title"],
            "link": ["from", "to"]}
OPTIONAL = {"parent": ["qty", "price", "note", "id"], "child": ["amount", "at", "id"],
            "doc": ["body", "tags"], "link": ["weight", "Note"]}
SETTABLE = {"parent": ["code", "qty", "price", "note", "id"],
            "child": ["parent_id", "label", "amount", "at"], "doc": ["title", "body", "tags"],
            "link": ["weight", "Note", "to"]}
UNIQUE_TARGETS = {"parent": [[], ["code"]], "child": [[], ["parent_id", "label"]],
                  "doc": [[], ["id"]], "link": [[], ["from", "to"]]}
# Which values a reference may carry into a column (by type); None: no references.
REF_CLASS = {"integer": "int", "bigint": "int", "text": "text", "numeric(10,2)": "num",
             "numeric(6,3)": "num",
             "timestamp with time zone": "ts"}
# Documents a filter compares a jsonb column with (the seed's among them).
DOCUMENTS: list[Any] = [{"k": 1}, [1, 2], [], "s", 3, {"a": {"b": "c"}}, [[1], [2]]]
# jsonb documents: scalars, lists, objects, nested.
_LEAVES = st.one_of(st.integers(-3, 3), st.sampled_from(["s", "op0.id", "$ref"]), st.booleans(),
                    st.just(1.5), st.none())
TREES = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=2),
    st.dictionaries(st.sampled_from(["k", "a", "b"]), inner, max_size=2)), max_leaves=4)
TOP_DOCUMENTS = st.one_of(st.integers(-3, 3), st.just("s"), st.lists(TREES, max_size=3),
                          st.dictionaries(st.sampled_from(["k", "a"]), TREES, max_size=2))
PATTERNS = ["a%", "%y", "l_", "X%", "%", "t_", "_"]
COMPARISONS = ["EQ", "NE", "LT", "LE", "GT", "GE"]


# Columns holding ids from a sequence, by the sequence: references carry them only into columns
# holding ids of the same one. batchd may run a batch twice (a shared statement that failed is
# run again apart), and the second run draws other ids from each sequence: a child's id that
# happened to equal a parent's in one run would not in the other (the fuzzer found it).
SERIAL = {("parent", "id"): "parent ids", ("child", "parent_id"): "parent ids",
          ("child", "id"): "child ids"}


def ref_class(table: str, column: str) -> str | None:
    if column == SOFT_DELETE_COLUMN.get(table):  # set by now(): differs between two runs
        return None
    if (table, column) in SERIAL:
        return SERIAL[table, column]
    return REF_CLASS.get(TABLES[table][column])


def sortable(table: str) -> list[str]:
    return [c for c in TABLES[table] if ref_class(table, c) is not None]


_INDEXES: dict[int, st.SearchStrategy[int]] = {}


def pick(draw: st.DrawFn, options: Sequence[Any]) -> Any:
    """One of ``options``, as ``st.sampled_from`` would draw it, by a strategy made once per
    length (building strategies anew for every draw costs more than the draws)."""
    strategy = _INDEXES.get(len(options))
    if strategy is None:
        strategy = _INDEXES[len(options)] = st.sampled_from(range(len(options)))
    return options[draw(strategy)]


def some(draw: st.DrawFn, options: Sequence[Any], min_size: int = 0,
         max_size: int = 3) -> list[Any]:
    """Distinct elements of ``options`` (``st.lists(..., unique=True)``), in drawn order."""
    chosen: list[Any] = []
    size = pick(draw, range(min_size, min(max_size, len(options)) + 1))
    for _ in range(8 * size):  # bounded: a replayed draw may repeat one element for ever
        if len(chosen) == size:
            break
        candidate = pick(draw, options)
        if candidate not in chosen:
            chosen.append(candidate)
    return chosen or list(options[:min_size])


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True one time in ``n`` (``st.integers`` would favour its bounds far more)."""
    return bool(pick(draw, range(n)) == n - 1)


@dataclass
class _Drawing:
    """The state of one batch being drawn."""

    draw: st.DrawFn
    atomic: bool
    ops: list[Op] = field(default_factory=list)
    unit_of: dict[str, str] = field(default_factory=dict)  # op id -> unit name
    before: dict[str, set[str]] = field(default_factory=dict)  # unit -> units it waits for
    access: dict[str, dict[str, bool]] = field(default_factory=dict)  # unit -> family: writes
    last_of: dict[str, str] = field(default_factory=dict)  # unit -> its last op so far

    # --- references -------------------------------------------------------------------------

    def targets(self, klass: str) -> list[tuple[str, str]]:
        """(op, column) pairs an operation drawn now may refer to."""
        return [(op.id, c) for op in self.ops if op.ordered_rows
                for c in op.output_columns() if ref_class(op.kind.table, c) == klass]

    def ref(self, klass: str | None) -> Ref | None:
        found = self.targets(klass) if klass else []
        if not found:
            return None
        op, column = pick(self.draw, found)
        row = pick(self.draw, [None, None, None, 0, 1, 2])
        return Ref(op, column, row)

    def value(self, table: str, column: str, *, null: bool = True) -> Any:
        """A value for ``column``: fresh, a reference, or (with ``null``) now and then NULL,
        less often if the column is NOT NULL."""
        draw = self.draw
        choice = pick(draw, range(60))
        if choice < (3 if (table, column) == ("parent", "code") else 12):  # a unique column
            found = self.ref(ref_class(table, column))
            if found is not None:
                return found
        if null and (choice == 59 or (choice >= 53 and (table, column) not in NOT_NULL)):
            return None
        if (table, column) == ("doc", "body"):
            return self.document()
        return draw(FRESH[(table, column)])

    def document(self) -> Any:
        """A jsonb value: objects, lists, references inside them, $literal, and objects that
        only look like references."""
        draw = self.draw
        kind = pick(draw, range(1, 10))
        if kind == 1:  # data that would be a reference, passed as data
            return Literal({"$ref": pick(draw, ["op0.id", "x.0.y", "nope"])})
        if kind == 2:  # objects that are not references: another key, or a non-string
            return pick(draw, [{"$ref": "op0.id", "n": 1}, {"$ref": 5},
                                         {"$literal": 1, "b": [2]}])
        if kind in (3, 4):  # a reference inside a document
            found = self.ref(pick(draw, ["int", "text"]))
            if found is not None:
                return {"k": found, "n": draw(TREES)}
        if kind == 5:
            return {"a": Literal({"$ref": "op1.id"})}
        return draw(TOP_DOCUMENTS)

    # --- conditions --------------------------------------------------------------------------

    def filter(self, table: str) -> Filter:
        draw = self.draw
        column = pick(draw, list(TABLES[table]))
        type_ = TABLES[table][column]
        if type_ == "jsonb":  # documents compared whole
            op = pick(draw, ["EQ", "NE", "IN", "IS_NULL"])
            if op == "IS_NULL":
                return Filter(column, op, draw(st.booleans()))
            if op == "IN":
                return Filter(column, op, [pick(draw, DOCUMENTS)
                                           for _ in range(pick(draw, range(4)))])
            return Filter(column, op, pick(draw, DOCUMENTS))
        if ref_class(table, column) is None:
            return Filter(column, "IS_NULL", draw(st.booleans()))
        ops = [*COMPARISONS, "IN", "IS_NULL"] + (["LIKE", "ILIKE"] if type_ == "text" else [])
        op = pick(draw, ops)
        if op == "IS_NULL":
            return Filter(column, op, draw(st.booleans()))
        if op in ("LIKE", "ILIKE"):
            return Filter(column, op, pick(draw, PATTERNS))
        if op == "IN":
            size = draw(st.integers(0, 3))
            return Filter(column, op, [self.value(table, column, null=False)
                                       for _ in range(size)])
        return Filter(column, op, self.value(table, column, null=op in ("EQ", "NE")))

    def where(self, table: str, depth: int = 1) -> Where:
        draw = self.draw
        logic = pick(draw, ["AND", "OR", "NOT"])
        if logic == "NOT":
            if depth < 3 and draw(st.booleans()):
                return Where(logic, groups=[self.where(table, depth + 1)])
            return Where(logic, filters=[self.filter(table)])
        filters = [self.filter(table) for _ in range(draw(st.integers(0, 2)))]
        groups = [self.where(table, depth + 1)
                  for _ in range(draw(st.integers(0, 1 if depth < 3 else 0)))]
        if not filters and not groups:
            filters = [self.filter(table)]
        return Where(logic, filters, groups)

    def selection(self, table: str, *, required: bool) -> tuple[list[Filter], Where | None]:
        draw = self.draw
        filters = [self.filter(table) for _ in range(draw(st.integers(0, 2)))]
        where = self.where(table) if one_in(draw, 3) else None
        if required and not filters and where is None:
            filters = [self.filter(table)]
        return filters, where

    def key(self, table: str) -> dict[str, Any]:
        if table == "doc":  # 3 is soft-deleted; 4 and 5 may have been inserted
            found = self.ref("int") if one_in(self.draw, 4) else None
            return {"id": found or pick(self.draw, [1, 1, 2, 2, 3, 4, 5])}
        return {c: self.value(table, c, null=False) for c in PRIMARY_KEY[table]}

    def columns(self, table: str, *, star: bool = True) -> list[str]:
        draw = self.draw
        choice = pick(draw, range(4))
        if choice == 0:
            return []
        if choice == 1 and star:
            return ["*"]
        return some(draw, list(TABLES[table]), 1, 3)

    # --- operations --------------------------------------------------------------------------

    def insert(self, table: str, like: Insert | None = None) -> Insert:
        draw = self.draw
        earlier = [op.kind for op in self.ops if isinstance(op.kind, Insert)
                   and op.kind.table == table]
        if like is None and earlier and one_in(draw, 3):
            like = earlier[-1]
        if like is not None:  # the same shape: one after the other, they share a statement
            shape = like
            names = list(shape.rows[0])
            on_conflict, returning = shape.on_conflict, shape.returning
        else:
            names = list(REQUIRED[table])
            if one_in(draw, 40):  # a NOT NULL column left out
                names.remove(pick(draw, names))
            optional = OPTIONAL[table]
            extra = some(draw, optional, 0, 2)
            if "id" in extra and not one_in(draw, 4):  # keys from the sequence, mostly
                extra.remove("id")
            names += extra
            if not names:
                names = list(REQUIRED[table][:1])
            on_conflict = self.on_conflict(table, names)
            returning = self.columns(table)
        rows = [{c: self.value(table, c) for c in names} for _ in range(draw(st.integers(1, 3)))]
        return Insert(table, rows, on_conflict, returning)

    def chained(self) -> Insert:
        """An insert a chain can hold (batchd.batch.chain): plain, one row, a parent; or a
        child whose parent is the row an earlier one-row parent insert returned."""
        draw = self.draw
        parents = [op.id for op in self.ops if isinstance(op.kind, Insert)
                   and op.kind.table == "parent" and len(op.kind.rows) == 1
                   and op.kind.on_conflict is None
                   and op.kind.returning in ([], ["*"], ["id", "code"])]
        if parents and not one_in(draw, 3):
            row = {"parent_id": Ref(pick(draw, parents), "id"),
                   "label": draw(FRESH[("child", "label")])}
            return Insert("child", [row], None, self.columns("child"))
        row = {"code": draw(FRESH[("parent", "code")]), "qty": draw(FRESH[("parent", "qty")])}
        return Insert("parent", [row], None, pick(draw, [[], ["*"], ["id", "code"]]))

    def on_conflict(self, table: str, names: list[str]) -> OnConflict | None:
        draw = self.draw
        action = pick(draw, [None, None, "ERROR", "NOTHING", "NOTHING", "UPDATE",
                                       "UPDATE"])
        if action is None:
            return None
        if action == "ERROR":
            return OnConflict("ERROR")
        target = pick(draw, UNIQUE_TARGETS[table])
        if action == "NOTHING":
            return OnConflict("NOTHING", target)
        rest = [c for c in names if c not in (target or PRIMARY_KEY[table])]
        updates: list[str] = []
        if not rest or draw(st.booleans()):
            updates = some(draw, names, 1, 2)
        return OnConflict("UPDATE", target, updates)

    def get(self, table: str) -> Get:
        return Get(table, self.key(table), self.columns(table), self.draw(st.booleans()))

    def query(self, table: str) -> Query:
        draw = self.draw
        filters, where = self.selection(table, required=False)
        order = some(draw, sortable(table), 0, 2)
        return Query(table, filters, where, [(c, draw(st.booleans())) for c in order],
                     pick(draw, [0, 1, 2, 3, 5]), self.columns(table),
                     draw(st.booleans()), draw(st.booleans()))

    def update(self, table: str) -> Update:
        draw = self.draw
        names = some(draw, SETTABLE[table], 1, 2)
        values = {c: self.value(table, c) for c in names}
        if draw(st.booleans()):
            return Update(table, values, key=self.key(table),
                          expected_version=self.expected_version(table),
                          returning=self.columns(table))
        filters, where = self.selection(table, required=True)
        return Update(table, values, filters=filters, where=where,
                      returning=self.columns(table))

    def delete(self, table: str) -> Delete:
        draw = self.draw
        if draw(st.booleans()):
            return Delete(table, key=self.key(table),
                          expected_version=self.expected_version(table),
                          returning=self.columns(table))
        filters, where = self.selection(table, required=True)
        return Delete(table, filters=filters, where=where, returning=self.columns(table))

    def expected_version(self, table: str) -> int | None:
        if table not in VERSION_COLUMN or self.draw(st.booleans()):
            return None
        return self.draw(st.integers(1, 4))

    def operation(self, op_id: str, unit: str, group: str) -> Op:
        draw = self.draw
        last = self.ops[-1].kind if self.ops else None
        if isinstance(last, Insert) and one_in(draw, 3):  # a run of inserts of one shape
            kind: Kind = self.insert(last.table, like=last)
        elif one_in(draw, 3):  # inserts that refer to each other, as a chain holds them
            kind = self.chained()
        else:
            table = pick(draw, ["parent", "parent", "child", "child", "doc", "link"])
            make = pick(draw, [self.insert, self.insert, self.insert, self.get,
                                         self.query, self.update, self.update, self.delete])
            kind = make(table)
        op = Op(op_id, kind, group=group)
        if self.ops and one_in(draw, 7):
            op.depends_on.append(pick(draw, self.ops).id)
        if not self.atomic:
            self.keep_commuting(op, unit)
        self.ops.append(op)
        self.unit_of[op.id] = unit
        self.last_of[unit] = op.id
        return op

    def keep_commuting(self, op: Op, unit: str) -> None:
        """Order ``op``'s unit after every earlier unit it could otherwise race with."""
        waits = self.before.setdefault(unit, set())
        access = self.access.setdefault(unit, {})

        def wait_for(target_op: str) -> None:
            other = self.unit_of[target_op]
            if other != unit:
                waits.add(other)
                waits.update(self.before.get(other, set()))

        for dep in [*op.depends_on, *(r.op for r in op.refs())]:
            wait_for(dep)
        family = FAMILY[op.kind.table]
        access[family] = access.get(family, False) or op.writes
        for other, theirs in self.access.items():
            if other == unit or other in waits:
                continue
            if family in theirs and (op.writes or theirs[family]):
                op.depends_on.append(self.last_of[other])
                wait_for(self.last_of[other])


@st.composite
def queries(draw: st.DrawFn) -> Query:
    """A query to read page by page: small pages, an order on up to three columns (NULLs
    among their values), filters and where."""
    drawing = _Drawing(draw, atomic=True)
    query = drawing.query(pick(draw, ["parent", "child", "doc", "link"]))
    query.order_by = [(c, draw(st.booleans())) for c in some(draw, sortable(query.table))]
    query.limit = pick(draw, [1, 1, 2, 3])
    return query


@st.composite
def batches(draw: st.DrawFn, atomic: bool) -> Batch:
    """A batch of 1-8 operations; INDEPENDENT ones in units (some of them groups)."""
    drawing = _Drawing(draw, atomic)
    size = draw(st.integers(1, 7))
    n = 0
    while n < size:
        grouped = not atomic and one_in(draw, 3)
        members = draw(st.integers(1, 3)) if grouped else 1
        unit = f"g{n}" if grouped else f"u{n}"
        for _ in range(members):
            drawing.operation(f"op{n}", unit, unit if grouped else "")
            n += 1
    ops = drawing.ops
    run_order = [op.id for op in ops]
    if not atomic:
        shuffled = draw(st.permutations(ops))
        # A group's members keep their order: they take its positions in turn.
        queues: dict[str, list[Op]] = {}
        for op in ops:
            queues.setdefault(op.group or op.id, []).append(op)
        ops = [queues[op.group or op.id].pop(0) for op in shuffled]
    return Batch(ops, atomic,
                 validate_only=one_in(draw, 10), read_only=one_in(draw, 40),
                 isolation=pick(draw, ["", "", "repeatable_read", "serializable"]),
                 run_order=run_order, idempotent=one_in(draw, 3))
