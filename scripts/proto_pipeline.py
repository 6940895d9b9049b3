#!/usr/bin/env python3
"""Issue 17's prototypes, measured: one dependent batch sent to PostgreSQL in as few round trips
as each design allows, over a network (scripts/delay_proxy.py) and on loopback.

    .venv/bin/python scripts/proto_pipeline.py [--delay-ms 0.5] [--seconds 5] [--runs 3]
                                               [--callers 1,16] [--children 9]

The batch (the issue's scratch test): in one transaction with batchd's SET LOCAL limits and a
role switch, insert one parent RETURNING its id, then --children child rows referencing it, then
read the parent back. Designs, each written by hand here (no batchd code), each checked to leave
exactly the rows it should:

- ``asyncpg, statement by statement`` as batchd runs it today: BEGIN with the limits and the
  role in one simple-query message, the parent insert, the children in one ``executemany``
  (asyncpg pipelines one statement's argument sets: what batchd's coalescing does), the get,
  COMMIT with the pool's reset in the same message;
- ``asyncpg, one CTE statement``: BEGIN (limits, role), then the whole batch as one statement of
  data-modifying CTEs (the children take the parent's id from its RETURNING), COMMIT: the same
  snapshot for every part, so only batches whose parts need not see each other's writes;
- ``psycopg 3, pipeline mode``: BEGIN, the limits, the role, the parent insert keeping its id in
  a transaction-local setting (``set_config('batch.ref_p', ..., true)``), the children reading it
  back (``current_setting``), the get and COMMIT, all sent before one Sync: statement-by-
  statement visibility in one round trip.

Round trips are counted by tests/support/pgwire.py's proxy (the client's sends after PostgreSQL
answered); latency p50/p99 and transactions/s by N callers looping for --seconds, interleaved
runs, each design with its own pool of 16 connections through the delaying proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_common import ROOT, postgres_line, sql, start_postgres

SETUP = """
DROP TABLE IF EXISTS proto_children, proto_parents;
CREATE TABLE proto_parents (id bigserial PRIMARY KEY, name text NOT NULL,
                            created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE proto_children (id bigserial PRIMARY KEY,
                             parent_id bigint NOT NULL REFERENCES proto_parents,
                             n integer NOT NULL, note text);
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'proto_role') THEN
    CREATE ROLE proto_role;
  END IF;
END $$;
GRANT SELECT, INSERT ON proto_parents, proto_children TO proto_role;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO proto_role;
"""
LIMITS = ("SET LOCAL statement_timeout = 30000; SET LOCAL lock_timeout = 10000; "
          "SET LOCAL idle_in_transaction_session_timeout = 60000; SET LOCAL ROLE proto_role;")
# asyncpg's reset of a pooled connection, sent with COMMIT as batchd does (one round trip less).
RESET = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;"
PARENT = "INSERT INTO proto_parents (name) VALUES ($1) RETURNING id"
CHILD = "INSERT INTO proto_children (parent_id, n, note) VALUES ($1, $2, $3)"
GET = "SELECT id, name, created_at FROM proto_parents WHERE id = $1"
CTE = """
WITH p AS (INSERT INTO proto_parents (name) VALUES ($1) RETURNING id, name, created_at),
     c AS (INSERT INTO proto_children (parent_id, n, note)
           SELECT p.id, x.n, x.note FROM p, unnest($2::int[], $3::text[]) AS x(n, note)
           RETURNING 1)
SELECT p.id, p.name, p.created_at, (SELECT count(*) FROM c) AS children FROM p
"""
# psycopg: the same statements with %s placeholders; the reference kept in a setting.
PG_PARENT = ("WITH p AS (INSERT INTO proto_parents (name) VALUES (%s) RETURNING id) "
             "SELECT set_config('batch.ref_p', p.id::text, true) FROM p")
PG_CHILD = ("INSERT INTO proto_children (parent_id, n, note) "
            "VALUES (current_setting('batch.ref_p')::bigint, %s, %s)")
PG_GET = ("SELECT id, name, created_at FROM proto_parents "
          "WHERE id = current_setting('batch.ref_p')::bigint")


def asyncpg_statements(children: int) -> Callable[[Any], Awaitable[None]]:
    rows = [(n, f"child {n}") for n in range(children)]

    async def run(pool: Any) -> None:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN; " + LIMITS)
            try:
                parent = await conn.fetchval(PARENT, "parent")
                await conn.executemany(CHILD, [(parent, n, note) for n, note in rows])
                got = await conn.fetchrow(GET, parent)
                assert got["id"] == parent
                await conn.execute("COMMIT; " + RESET)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
    return run


def asyncpg_cte(children: int) -> Callable[[Any], Awaitable[None]]:
    ns, notes = list(range(children)), [f"child {n}" for n in range(children)]

    async def run(pool: Any) -> None:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN; " + LIMITS)
            try:
                got = await conn.fetchrow(CTE, "parent", ns, notes)
                assert got["children"] == children
                await conn.execute("COMMIT; " + RESET)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
    return run


def psycopg_pipeline(children: int) -> Callable[[Any], Awaitable[None]]:
    rows = [(n, f"child {n}") for n in range(children)]

    async def run(pool: Any) -> None:
        async with pool.connection() as conn:
            async with conn.pipeline():
                cur = conn.cursor()
                await cur.execute("BEGIN")
                for statement in LIMITS.split(";")[:-1]:
                    await cur.execute(statement)
                await cur.execute(PG_PARENT, ("parent",))
                await cur.executemany(PG_CHILD, rows)
                get = conn.cursor()
                await get.execute(PG_GET)
                await cur.execute("COMMIT")
            row = await get.fetchone()
            assert row is not None and row[1] == "parent"
    return run


DESIGNS = {
    "asyncpg, statement by statement (batchd today)": ("asyncpg", asyncpg_statements),
    "asyncpg, one CTE statement": ("asyncpg", asyncpg_cte),
    "psycopg 3, pipeline mode": ("psycopg", psycopg_pipeline),
}


async def open_pool(kind: str, dsn: str, size: int) -> Any:
    if kind == "asyncpg":
        import asyncpg

        async def reset_with_commit(conn: Any) -> None:
            """The pool's reset rides in the COMMIT message (RESET), as batchd's does."""

        return await asyncpg.create_pool(dsn, min_size=size, max_size=size,
                                         reset=reset_with_commit)
    from psycopg_pool import AsyncConnectionPool

    # autocommit: the pipeline's BEGIN / COMMIT are the transaction, as batchd's would be.
    pool = AsyncConnectionPool(dsn, min_size=size, max_size=size, open=False,
                               kwargs={"autocommit": True, "prepare_threshold": 0})
    await pool.open(wait=True)
    return pool


async def close_pool(pool: Any) -> None:
    await pool.close()


async def measure(pool: Any, unit: Callable[[Any], Awaitable[None]], callers: int,
                  seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    ends = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < ends:
            started = time.perf_counter()
            await unit(pool)
            latencies.append(time.perf_counter() - started)

    for _ in range(3):  # warm: statements prepared on the pool's connections
        await unit(pool)
    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"p50": latencies[len(latencies) // 2] * 1e3,
            "p99": latencies[int(len(latencies) * 0.99)] * 1e3,
            "tx_s": len(latencies) / elapsed}


async def round_trips(dsn: str, children: int, units: int = 50) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from tests.support.pgwire import WireCounter

    counter, counted = await WireCounter.for_dsn(dsn, Path(tempfile.mkdtemp(prefix="proto-")))
    found = {}
    try:
        for name, (kind, make) in DESIGNS.items():
            pool = await open_pool(kind, counted, 1)
            unit = make(children)
            try:
                for _ in range(3):
                    await unit(pool)
                before = counter.snapshot()
                for _ in range(units):
                    await unit(pool)
                found[name] = (counter.snapshot() - before).round_trips / units
            finally:
                await close_pool(pool)
    finally:
        await counter.close()
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=0.5, help="0: loopback")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--callers", default="1,16")
    parser.add_argument("--children", type=int, default=9)
    args = parser.parse_args()
    callers = [int(c) for c in args.callers.split(",")]

    dsn, embedded = start_postgres(None)
    proxy = None
    try:
        await sql(dsn, SETUP)
        settings = await postgres_line(dsn, embedded)
        trips = await round_trips(dsn, args.children)
        if args.delay_ms:
            import delay_proxy

            proxy, port = await delay_proxy.start(delay_proxy.target_of_dsn(dsn), args.delay_ms)
            dsn = delay_proxy.dsn_through(dsn, port)
        pools = {name: await open_pool(kind, dsn, 16) for name, (kind, _) in DESIGNS.items()}
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        try:
            for run in range(args.runs):
                for n in callers:
                    for name, (_, make) in DESIGNS.items():
                        sample = await measure(pools[name], make(args.children), n,
                                               args.seconds)
                        samples.setdefault((name, n), []).append(sample)
                        print(f"  run {run + 1}: {name}, {n} caller(s): p50 {sample['p50']:.2f}"
                              f" ms, p99 {sample['p99']:.2f} ms, {sample['tx_s']:,.0f} tx/s",
                              flush=True)
        finally:
            for pool in pools.values():
                await close_pool(pool)
        children = await sql(dsn, "SELECT count(*) FROM proto_children")
        parents = await sql(dsn, "SELECT count(*) FROM proto_parents")
        assert children == parents * args.children, (parents, children)
    finally:
        if proxy is not None:
            proxy.terminate()
            await proxy.wait()
        if embedded is not None:
            embedded.cleanup()

    net = (f"every connection through a proxy adding {args.delay_ms:g} ms each way"
           if args.delay_ms else "loopback")
    lines = [settings + ".", "", f"One parent and {args.children} children in one transaction "
             f"with SET LOCAL limits and a role; {net}; {args.runs} interleaved runs of "
             f"{args.seconds:g} s; median (min-max).", "",
             "| design | round trips | callers | p50 ms | p99 ms | tx/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for (name, n), runs in samples.items():
        def fmt(key: str, spec: str, runs: list[dict[str, float]] = runs) -> str:
            values = sorted(r[key] for r in runs)
            return f"{statistics.median(values):{spec}} ({values[0]:{spec}}-{values[-1]:{spec}})"
        lines.append(f"| {name} | {trips[name]:.2f} | {n} | {fmt('p50', '.2f')} | "
                     f"{fmt('p99', '.2f')} | {fmt('tx_s', ',.0f')} |")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
