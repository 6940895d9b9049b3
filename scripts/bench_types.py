#!/usr/bin/env python3
"""Which column types each BatchStream encoding carries: one small stream per type x encoding.

    .venv/bin/python scripts/bench_types.py [--rows 2000] [--dsn DSN]

For each column of the ingest benchmark's realistic table (scripts/bench_tables.py: uuid,
text, text to quote, numeric(14,2), integer, double precision, boolean, timestamptz, date,
jsonb, text[]), a table of its own (id bigserial primary key, the column) receives --rows of
the benchmark's values through BatchStream in each encoding (ROWS, COLUMNAR, CSV; ARROW once the
protocol has it), as bench_ingest.py sends them; the stored values are compared with those of
asyncpg's copy_records_to_table, row by row. Prints one line per type and encoding: "ok";
"same values, other text" (equal to PostgreSQL, e.g. jsonb 5.0 and 5, but not the same text
when read back; the first such row shown); "WRONG CONTENTS" (the first unequal row shown); or
the stream's status.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
from typing import Any

from bench_common import sql, start_postgres, start_server, stop_server
from bench_ingest import StreamFailed, stream
from bench_tables import REALISTIC, arrow_ipc_chunks, arrow_table, columnar_columns

TYPES = {"ext_id": "uuid", "account": "text", "note": "text", "amount": "numeric(14, 2)",
         "qty": "integer", "score": "double precision", "flag": "boolean",
         "created_at": "timestamptz", "day": "date", "payload": "jsonb", "tags": "text[]"}


def csv_field(value: Any) -> str:
    """One CSV record of one field; NULL is an empty line (the csv module would write "")."""
    if value is None or value == "":
        return "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([value])
    return buffer.getvalue()


def requests(table: str, column: str, j: int, encoding: str, rows: list[tuple[Any, ...]],
             columnar: Any, arrow: Any) -> list[bytes]:
    from google.protobuf import struct_pb2

    from batchd.v1 import batch_pb2

    chunk = batch_pb2.StreamChunk(sequence=1)
    if encoding == "ROWS":
        for row in rows:
            struct = struct_pb2.Struct()
            struct.update({column: REALISTIC.struct(row)[column]})
            chunk.rows.append(struct)
    elif encoding == "COLUMNAR":
        chunk.columnar.columns.add().CopyFrom(columnar.columns[j])
    elif encoding == "CSV":
        chunk.csv = "".join(csv_field(REALISTIC.csv_row(row)[j]) for row in rows).encode()
    else:
        import pyarrow as pa

        chunk.arrow = arrow_ipc_chunks(  # type: ignore[attr-defined]
            pa.table({column: arrow.column(column)}), len(rows))[0]
    header = batch_pb2.StreamHeader(table=table, columns=[column],
                                    encoding=batch_pb2.Encoding.Value(f"ENCODING_{encoding}"))
    return [batch_pb2.BatchStreamRequest(header=header).SerializeToString(),
            batch_pb2.BatchStreamRequest(chunk=chunk).SerializeToString(),
            batch_pb2.BatchStreamRequest(commit=batch_pb2.StreamCommit()).SerializeToString()]


async def compare(conn: Any, table: str, column: str) -> str:
    """The stored rows against the baseline's, by id (both loads numbered 1..n in order)."""
    query = (f"SELECT e.id, e.{column}::text AS expected, t.{column}::text AS stored "
             f"FROM expected_{column} e FULL JOIN {table} t USING (id) WHERE {{}} "
             f"ORDER BY e.id LIMIT 1")
    unequal = await conn.fetchrow(query.format(f"e.{column} IS DISTINCT FROM t.{column}"))
    if unequal is not None:
        return (f"WRONG CONTENTS (row {unequal['id']}: stored {unequal['stored']!r}, "
                f"expected {unequal['expected']!r})")
    other = await conn.fetchrow(query.format(f"e.{column}::text IS DISTINCT FROM "
                                             f"t.{column}::text"))
    if other is not None:
        return (f"same values, other text (row {other['id']}: stored {other['stored']!r}, "
                f"expected {other['expected']!r})")
    return "ok"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--dsn")
    args = parser.parse_args()

    import asyncpg

    from batchd.v1 import batch_pb2

    encodings = ["ROWS", "COLUMNAR", "CSV"] + ["ARROW"] * hasattr(batch_pb2, "ENCODING_ARROW")
    dsn, embedded = start_postgres(args.dsn)
    server = None
    try:
        for column, type_sql in TYPES.items():
            await sql(dsn, f"DROP TABLE IF EXISTS types_{column}; CREATE TABLE types_{column} "
                           f"(id bigserial PRIMARY KEY, {column} {type_sql})")
        server, target = await start_server(dsn)  # after the tables: it reads its catalog
        rows = REALISTIC.make(args.rows)
        columnar = batch_pb2.ColumnarRows()
        columnar_columns(REALISTIC, rows, columnar)
        arrow = arrow_table(REALISTIC, rows) if "ARROW" in encodings else None
        conn = await asyncpg.connect(dsn)
        try:
            for j, column in enumerate(REALISTIC.columns):
                table = f"types_{column}"
                await conn.copy_records_to_table(table, columns=[column],
                                                 records=[(r[j],) for r in rows])
                await conn.execute(f"DROP TABLE IF EXISTS expected_{column}; CREATE TABLE "
                                   f"expected_{column} AS SELECT * FROM {table}")
                outcomes = []
                for encoding in encodings:
                    await conn.execute(f"TRUNCATE {table} RESTART IDENTITY")
                    try:
                        await stream(target, requests(table, column, j, encoding, rows,
                                                      columnar, arrow), len(rows))
                    except StreamFailed as exc:
                        outcomes.append(f"{encoding}: fails: {exc}")
                        continue
                    outcomes.append(f"{encoding}: " + await compare(conn, table, column))
                print(f"{column} ({TYPES[column]}): " + " | ".join(outcomes), flush=True)
        finally:
            await conn.close()
    finally:
        if server is not None:
            await stop_server(server)
        if embedded is not None:
            embedded.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
