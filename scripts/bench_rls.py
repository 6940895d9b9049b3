#!/usr/bin/env python3
"""Streams into a table under row-level security (batchd.stream.access: COPY into a staging
table, then INSERT ... SELECT as the role) against the same stream into the same table without
it (plain COPY), as the same tenant role, for each encoding:

    .venv/bin/python scripts/bench_rls.py [--table narrow|realistic|both] [--rows 300000]
                                          [--chunk 10000] [--runs 3] [--dsn DSN]
                                          [--encodings ROWS,COLUMNAR,CSV,ARROW]

The two tables are scripts/bench_tables.py's, each with a ``tenant text NOT NULL DEFAULT
current_user`` column added, so that the policy has something to check: ``USING (tenant =
current_user) WITH CHECK (tenant = current_user)``, as a multi-tenant table has. batchd runs
as the superuser of an embedded PostgreSQL (or --dsn), each stream as the role ``bench_tenant``
(a token mapped to it), which owns neither table. Runs are interleaved (each pair moments
apart, the table truncated and a CHECKPOINT taken before each); the ratio is the median of the
per-run ratios, staged ÷ plain, with its range. The first row, raw, is the floor: the same
chunks by hand with asyncpg (binary COPY; staged by hand the same way), no batchd.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
from typing import Any

from bench_common import postgres_line, sql, start_postgres, start_server, stop_server
from bench_ingest import StreamFailed, stream, stream_requests
from bench_tables import SPECS, arrow_ipc_chunks, arrow_table, copy_binary_pieces, csv_chunks

TOKEN = "bench-tenant-token"
ROLE = "bench_tenant"
ENCODINGS = ("ROWS", "COLUMNAR", "CSV", "ARROW")


def setup_sql(spec_name: str, create_sql: str) -> str:
    plain, rls = spec_name, f"{spec_name}_rls"
    return f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN CREATE ROLE {ROLE}; END IF;
END $$;
{create_sql};
ALTER TABLE {plain} ADD COLUMN tenant text NOT NULL DEFAULT current_user;
DROP TABLE IF EXISTS {rls};
CREATE TABLE {rls} (LIKE {plain} INCLUDING ALL);
ALTER TABLE {rls} ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON {rls} USING (tenant = current_user)
    WITH CHECK (tenant = current_user);
GRANT SELECT, INSERT ON {plain}, {rls} TO {ROLE};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE};
"""


async def raw(dsn: str, spec_name: str, columns: list[str], pieces: list[bytes],
              staged: bool) -> float:
    """The floor, by hand with asyncpg as the tenant role in one transaction: each chunk's
    binary COPY (pgpq) into the plain table, or (staged) into a temporary table and from there
    by INSERT ... SELECT into the table under row-level security, as batchd does."""
    import asyncpg

    header, chunks, trailer = pieces[0], pieces[1:-1], pieces[-1]
    conn = await asyncpg.connect(dsn)
    try:
        types = dict(await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attnum > 0", spec_name))
        names = ", ".join(columns)
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {ROLE}")
            if staged:
                await conn.execute("CREATE TEMPORARY TABLE stage ("
                                   + ", ".join(f"{c} {types[c]}" for c in columns)
                                   + ") ON COMMIT DROP")
            for chunk in chunks:
                async def source(data: bytes = header + chunk + trailer) -> Any:
                    yield data
                async with conn.transaction():
                    await conn.copy_to_table("stage" if staged else spec_name, columns=columns,
                                             source=source(), format="binary")
                    if staged:
                        await conn.execute(f"INSERT INTO {spec_name}_rls ({names}) "
                                           f"SELECT {names} FROM stage")
                        await conn.execute("TRUNCATE stage")
        return time.perf_counter() - started
    finally:
        await conn.close()


def retarget(requests: list[bytes], table: str) -> list[bytes]:
    """The same stream, its header naming ``table``."""
    from batchd.v1 import batch_pb2

    first = batch_pb2.BatchStreamRequest.FromString(requests[0])
    first.header.table = table
    return [first.SerializeToString(), *requests[1:]]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", choices=["narrow", "realistic", "both"], default="both")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--encodings", default=",".join(ENCODINGS))
    parser.add_argument("--dsn")
    args = parser.parse_args()
    keys = ["narrow", "realistic"] if args.table == "both" else [args.table]
    dsn, embedded = start_postgres(args.dsn)
    try:
        for key in keys:
            await sql(dsn, setup_sql(SPECS[key].name, SPECS[key].create_sql))
        settings = await postgres_line(dsn, embedded)
        os.environ["BATCHD_TOKENS"] = json.dumps([{
            "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "principal": "tenant",
            "role": ROLE, "scopes": ["read:public.*", "write:public.*"]}])
        server, target = await start_server(dsn)
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        lines = [settings + ".", "", f"{args.rows:,} rows, chunks of {args.chunk:,} in one "
                 f"atomic stream, {args.runs} interleaved runs; rows/s median (min-max).", "",
                 "| table | encoding | plain COPY | under RLS (staged) | staged / plain |",
                 "|---|---|---|---|---|"]
        try:
            for key in keys:
                spec = SPECS[key]
                rows = spec.make(args.rows)
                table = arrow_table(spec, rows)
                csv = csv_chunks(spec, rows, args.chunk)
                binary = copy_binary_pieces(table, args.chunk)
                for encoding in ["raw", *args.encodings.split(",")]:
                    if encoding == "raw":
                        pair = {which: (lambda staged=(which == "staged"), spec=spec,
                                        binary=binary: raw(dsn, spec.name, spec.columns,
                                                           binary, staged))
                                for which in ("plain", "staged")}
                    else:
                        requests = stream_requests(
                            spec, encoding, rows, args.chunk, csv=csv,
                            arrow=arrow_ipc_chunks(table, args.chunk) if encoding == "ARROW"
                            else None)
                        both = {"plain": requests,
                                "staged": retarget(requests, f"{spec.name}_rls")}
                        for which, reqs in both.items():  # untimed first use
                            await sql(dsn, f"TRUNCATE {spec.name}"
                                           + ("_rls" if which == "staged" else ""))
                            await stream(target, [reqs[0], reqs[1], reqs[-1]],
                                         min(args.rows, args.chunk), metadata)
                        pair = {which: (lambda reqs=reqs: stream(target, reqs, args.rows,
                                                                  metadata))
                                for which, reqs in both.items()}
                    seconds: dict[str, list[float]] = {"plain": [], "staged": []}
                    for run in range(args.runs):
                        for which, run_one in pair.items():
                            name = spec.name + ("_rls" if which == "staged" else "")
                            await sql(dsn, f"TRUNCATE {name} RESTART IDENTITY")
                            await sql(dsn, "CHECKPOINT")
                            try:
                                took = await run_one()
                            except StreamFailed as exc:
                                raise SystemExit(f"{key} {encoding} {which}: {exc}") from None
                            assert await sql(dsn, f"SELECT count(*) FROM {name} WHERE "
                                                  f"tenant = '{ROLE}'") == args.rows
                            seconds[which].append(took)
                            print(f"  run {run + 1}: {key} {encoding} {which}: "
                                  f"{args.rows / took:,.0f} rows/s", flush=True)
                    rates = {w: sorted(args.rows / s for s in seconds[w]) for w in seconds}
                    ratios = sorted(p / s for p, s in zip(seconds["plain"], seconds["staged"],
                                                          strict=True))
                    shown = {w: f"{statistics.median(r):,.0f} ({r[0]:,.0f}-{r[-1]:,.0f})"
                             for w, r in rates.items()}
                    lines.append(f"| {key} | {encoding} | {shown['plain']} | {shown['staged']} | "
                                 f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-"
                                 f"{ratios[-1]:.2f}) |")
        finally:
            await stop_server(server)
    finally:
        if embedded is not None:
            embedded.cleanup()
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    started = time.perf_counter()
    asyncio.run(main())
    print(f"\n({time.perf_counter() - started:.0f} s)")
