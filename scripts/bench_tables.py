"""The ingest benchmark's two tables, their deterministic data, and that data in every form a
contender sends: Python records (asyncpg COPY), BatchStream chunks (ROWS, COLUMNAR, CSV,
ARROW), raw CSV bytes, pyarrow and its PostgreSQL binary COPY encoding (pgpq).

- narrow: ``bench_rows`` — 5 columns, ~57-byte rows, no key, no index, no constraint, nothing
  to quote in CSV: the cheapest case there is.
- realistic: ``bench_realistic`` — bigserial primary key, a unique uuid, a secondary index on
  (account, created_at), 11 inserted columns: uuid, text, text needing CSV quoting (commas,
  quotes, newlines; some NULL), numeric(14,2), integer, double precision (some NULL), boolean,
  timestamptz, date, jsonb, text[].

Every form carries the same values; scripts/bench_ingest.py checks each contender's table
contents against its first baseline's (a fingerprint over all columns but the generated
key: the count and the sum of a 64-bit hash of each row's text, jsonb hashed as jsonb, so that
documents equal to PostgreSQL count as equal).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Spec:
    key: str  # narrow | realistic
    name: str  # the table
    create_sql: str
    columns: list[str]
    describe: str  # for the report
    make: Callable[[int], list[tuple[Any, ...]]]  # records for asyncpg (exact Python values)
    struct: Callable[[tuple[Any, ...]], dict[str, Any]]  # one ROWS row (JSON-like values)
    csv_row: Callable[[tuple[Any, ...]], list[Any]]  # one CSV record's fields
    fingerprint_sql: str


# --- narrow ----------------------------------------------------------------------------------

def _narrow_rows(n: int) -> list[tuple[Any, ...]]:
    categories = ("alpha", "beta", "gamma", "delta")
    return [(f"user-{i:09d}", categories[i % 4], Decimal(i % 100_000) / 100, i % 1000,
             BASE + dt.timedelta(seconds=i)) for i in range(n)]


NARROW = Spec(
    key="narrow", name="bench_rows",
    create_sql="""
DROP TABLE IF EXISTS bench_rows;
CREATE TABLE bench_rows (name text, category text, amount numeric(12, 2), qty integer,
                         at timestamptz)
""",
    columns=["name", "category", "amount", "qty", "at"],
    describe="bench_rows: text, text, numeric(12,2), integer, timestamptz; no key, no index, "
             "no constraint; ~57-byte rows, nothing to quote in CSV",
    make=_narrow_rows,
    struct=lambda r: {"name": r[0], "category": r[1], "amount": str(r[2]), "qty": r[3],
                      "at": r[4].isoformat()},
    csv_row=lambda r: [r[0], r[1], str(r[2]), r[3], r[4].isoformat()],
    fingerprint_sql="SELECT count(*) || ':' || sum(hashtextextended(t::text, 0)) "
                    "FROM bench_rows t",
)

# --- realistic -------------------------------------------------------------------------------

_NOTES = (
    'Deliver to 12 Main St, Apt {a}; ring "twice"',
    "Customer says: \"it's fine, really\"\nSecond line, with a comma",
    "Gift wrap, no invoice\r\nThird-party carrier: Müller & Söhne GmbH",
    "plain note {a}",
    'backslash \\ and "quotes", tab\there, €{a}',
    "Call before 5pm, leave at door, thanks!",
)
_TAGS = ("priority", "gift", "b2b", "retry,later", 'says "hi"', "eu-west", "NULL", "")
_SOURCES = ("web", "ios", "android", "api")


def _realistic_rows(n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(20261201)
    rows = []
    for i in range(n):
        created = BASE + dt.timedelta(seconds=i * 7, microseconds=rng.randrange(1_000_000))
        items = [{"sku": f"SKU-{rng.randrange(10_000):05d}", "n": rng.randrange(1, 6),
                  "price": rng.randrange(100, 100_000) / 100} for _ in range(1 + i % 3)]
        payload = {"source": _SOURCES[i % 4], "ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}."
                   f"{i & 255}", "items": items, "gift": i % 7 == 0,
                   "comment": 'said "hi", then left' if i % 5 == 0 else None}
        rows.append((
            uuid.UUID(int=rng.getrandbits(128), version=4),
            f"acct-{rng.randrange(5_000):05d}",
            None if i % 20 == 0 else _NOTES[i % len(_NOTES)].format(a=i % 97),
            Decimal(rng.randrange(-100_000, 10_000_000)).scaleb(-2),
            rng.randrange(1, 500),
            None if i % 50 == 7 else rng.random() * 1000,
            i % 3 == 0,
            created,
            created.date(),
            json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
            [_TAGS[(i + k) % len(_TAGS)] for k in range(i % 4)],
        ))
    return rows


REALISTIC_COLUMNS = ["ext_id", "account", "note", "amount", "qty", "score", "flag",
                     "created_at", "day", "payload", "tags"]


def _pg_array(values: list[str]) -> str:
    """A text[] literal, every element quoted (so NULL, empty and commas stay text)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


REALISTIC = Spec(
    key="realistic", name="bench_realistic",
    create_sql="""
DROP TABLE IF EXISTS bench_realistic;
CREATE TABLE bench_realistic (
    id bigserial PRIMARY KEY, ext_id uuid NOT NULL UNIQUE, account text NOT NULL, note text,
    amount numeric(14, 2) NOT NULL, qty integer NOT NULL, score double precision,
    flag boolean NOT NULL, created_at timestamptz NOT NULL, day date NOT NULL,
    payload jsonb NOT NULL, tags text[] NOT NULL);
CREATE INDEX ON bench_realistic (account, created_at)
""",
    columns=REALISTIC_COLUMNS,
    describe="bench_realistic: bigserial primary key, uuid UNIQUE, index on (account, "
             "created_at); 11 columns sent: uuid, text, text with commas, quotes and newlines "
             "(5 % NULL), numeric(14,2), integer, double precision (2 % NULL), boolean, "
             "timestamptz, date, jsonb (~150 bytes), text[] (0-3 elements)",
    make=_realistic_rows,
    struct=lambda r: {"ext_id": str(r[0]), "account": r[1], "note": r[2], "amount": str(r[3]),
                      "qty": r[4], "score": r[5], "flag": r[6], "created_at": r[7].isoformat(),
                      "day": r[8].isoformat(), "payload": json.loads(r[9]), "tags": r[10]},
    csv_row=lambda r: [str(r[0]), r[1], r[2], str(r[3]), r[4],
                       "" if r[5] is None else repr(r[5]), "t" if r[6] else "f",
                       r[7].isoformat(), r[8].isoformat(), r[9], _pg_array(r[10])],
    # jsonb by jsonb's own hash: equal documents are equal (5.0 and 5 are one number to it).
    fingerprint_sql="SELECT count(*) || ':' || sum(hashtextextended(x::text, 0)) FROM (SELECT "
                    + ", ".join("jsonb_hash_extended(payload, 0)" if c == "payload" else c
                                for c in REALISTIC_COLUMNS) + " FROM bench_realistic) x",
)

SPECS = {spec.key: spec for spec in (NARROW, REALISTIC)}


# --- the forms -------------------------------------------------------------------------------

def slices(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def csv_chunks(spec: Spec, rows: list[tuple[Any, ...]], chunk: int) -> list[bytes]:
    """The rows as CSV (PostgreSQL's defaults: NULL is an unquoted empty field), per chunk."""
    out = []
    for start, end in slices(len(rows), chunk):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows[start:end]:
            writer.writerow(spec.csv_row(row))  # the data holds no empty string (it would
            #                                       be written unquoted: NULL)
        out.append(buffer.getvalue().encode())
    return out


def columnar_columns(spec: Spec, rows: list[tuple[Any, ...]], message: Any) -> None:
    """Fill a ColumnarRows message with the rows, one typed array per column. json/jsonb and
    array columns go as strings of JSON text (no protobuf array holds documents or lists)."""
    cols = message.columns
    values = list(zip(*rows, strict=True)) if rows else [()] * len(spec.columns)

    def strings(column: tuple[Any, ...], convert: Callable[[Any], str] = str) -> None:
        array = cols.add()
        array.strings.values.extend("" if v is None else convert(v) for v in column)
        array.null_indexes.extend(i for i, v in enumerate(column) if v is None)

    def timestamps(column: tuple[Any, ...]) -> None:
        cols.add().timestamp_micros.values.extend((v - EPOCH) // US for v in column)

    if spec.key == "narrow":
        names, categories, amounts, qtys, ats = values
        strings(names)
        strings(categories)
        strings(amounts)
        cols.add().int64s.values.extend(qtys)
        timestamps(ats)
        return
    ext_ids, accounts, notes, amounts, qtys, scores, flags, created, days, payloads, tags = values
    strings(ext_ids)
    strings(accounts)
    strings(notes)
    strings(amounts)
    cols.add().int64s.values.extend(qtys)
    array = cols.add()
    array.doubles.values.extend(0.0 if v is None else v for v in scores)
    array.null_indexes.extend(i for i, v in enumerate(scores) if v is None)
    cols.add().bools.values.extend(flags)
    timestamps(created)
    strings(days, dt.date.isoformat)
    strings(payloads)
    strings(tags, lambda v: json.dumps(v, ensure_ascii=False))


def arrow_table(spec: Spec, rows: list[tuple[Any, ...]]) -> Any:
    """The rows as one pyarrow Table (uuid as 16-byte fixed-size binary, jsonb as JSON text)."""
    import pyarrow as pa

    values = list(zip(*rows, strict=True))
    ts = pa.timestamp("us", tz="UTC")
    if spec.key == "narrow":
        names, categories, amounts, qtys, ats = values
        return pa.table({"name": pa.array(names, pa.string()),
                         "category": pa.array(categories, pa.string()),
                         "amount": pa.array(amounts, pa.decimal128(12, 2)),
                         "qty": pa.array(qtys, pa.int32()), "at": pa.array(ats, ts)})
    ext_ids, accounts, notes, amounts, qtys, scores, flags, created, days, payloads, tags = values
    return pa.table({
        "ext_id": pa.array([u.bytes for u in ext_ids], pa.binary(16)),
        "account": pa.array(accounts, pa.string()), "note": pa.array(notes, pa.string()),
        "amount": pa.array(amounts, pa.decimal128(14, 2)), "qty": pa.array(qtys, pa.int32()),
        "score": pa.array(scores, pa.float64()), "flag": pa.array(flags, pa.bool_()),
        "created_at": pa.array(created, ts), "day": pa.array(days, pa.date32()),
        "payload": pa.array(payloads, pa.string()),
        "tags": pa.array(tags, pa.list_(pa.string())),
    })


def copy_binary_pieces(table: Any, chunk: int) -> list[bytes]:
    """The table in PostgreSQL's binary COPY format (pgpq): header, one piece per chunk of
    rows, trailer. jsonb columns (here: payload) are encoded as jsonb."""
    from pgpq import ArrowToPostgresBinaryEncoder
    from pgpq.encoders import StringEncoderBuilder
    from pgpq.schema import Jsonb

    encoders = {field.name: ArrowToPostgresBinaryEncoder.infer_encoder(field)
                for field in table.schema}
    if "payload" in table.schema.names:
        encoders["payload"] = StringEncoderBuilder.new_with_output(
            table.schema.field("payload"), Jsonb())
    encoder = ArrowToPostgresBinaryEncoder.new_with_encoders(table.schema, encoders)
    pieces = [encoder.write_header()]
    for start, end in slices(table.num_rows, chunk):
        for batch in table.slice(start, end - start).to_batches():
            pieces.append(encoder.write_batch(batch))
    pieces.append(encoder.finish())
    return pieces


def arrow_ipc_chunks(table: Any, chunk: int) -> list[bytes]:
    """One Arrow IPC stream (schema + record batches) per chunk of rows."""
    import pyarrow as pa

    out = []
    for start, end in slices(table.num_rows, chunk):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(start, end - start))
        out.append(sink.getvalue().to_pybytes())
    return out
