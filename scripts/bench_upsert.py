"""The ingest benchmark's upsert workload (scripts/bench_ingest.py --upsert): a merging stream
against a plain append of the same rows, and against the same upserts as BatchExecute batches.

For each table and encoding, in one run, interleaved: an ATOMIC BatchStream appending the rows
into the empty table, then one merging them (``on_conflict`` UPDATE on a unique key: narrow
``name``, given a unique index for this workload; realistic ``ext_id``) into the table holding
10 % of the keys already (every tenth row, its ``qty`` different, so each is a real update;
seeded before timing). Then, once per table, the same upserts as 1,000-row BatchExecute
batches (one insert operation with on_conflict UPDATE each, sent one after another, serialized
before timing). Ratios: upsert ÷ append of the same encoding in the same run (target
≥ 0.7x), and the fastest upsert stream ÷ BatchExecute (target ≥ 5x).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench_tables import Spec, arrow_ipc_chunks, arrow_table, csv_chunks

UNIQUE_KEY = {"narrow": "name", "realistic": "ext_id"}
BATCH_ROWS = 1000
SEED_EVERY = 10  # 10 % of the keys present before an upsert


def narrow_key_sql() -> str:
    return "CREATE UNIQUE INDEX IF NOT EXISTS bench_rows_name ON bench_rows (name)"


def on_conflict(spec: Spec) -> Any:
    from batchd.v1 import batch_pb2

    return batch_pb2.OnConflict(action=batch_pb2.OnConflict.ACTION_UPDATE,
                                conflict_columns=[UNIQUE_KEY[spec.key]])


def seeded(spec: Spec, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Every tenth row, its qty changed (so that the upsert updates it)."""
    qty = spec.columns.index("qty")
    return [(*r[:qty], r[qty] + 1, *r[qty + 1:]) for r in rows[::SEED_EVERY]]


def batch_requests(spec: Spec, rows: list[tuple[Any, ...]]) -> list[bytes]:
    from google.protobuf import struct_pb2

    from batchd.v1 import batch_pb2

    out = []
    for start in range(0, len(rows), BATCH_ROWS):
        op = batch_pb2.InsertOperation(table=spec.name, on_conflict=on_conflict(spec))
        for row in rows[start:start + BATCH_ROWS]:
            struct = struct_pb2.Struct()
            struct.update(spec.struct(row))
            op.rows.append(struct)
        out.append(batch_pb2.BatchExecuteRequest(operations=[
            batch_pb2.Operation(id="upsert", insert=op)]).SerializeToString())
    return out


async def batch_execute(target: str, requests: list[bytes]) -> float:
    import grpc

    from batchd.v1 import batch_pb2

    async with grpc.aio.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        method = channel.unary_unary("/batchd.v1.BatchService/BatchExecute",
                                     request_serializer=None,
                                     response_deserializer=batch_pb2.BatchExecuteResponse
                                     .FromString)
        started = time.perf_counter()
        for request in requests:
            await method(request, timeout=900)
        return time.perf_counter() - started


async def bench(spec: Spec, args: Any, dsn: str, target: str,
                stream_requests: Callable[..., list[bytes]],
                stream: Callable[..., Awaitable[float]], connect: Callable[..., Any],
                sql: Callable[..., Awaitable[Any]]) -> list[dict[str, Any]]:
    """Every contender of one table, --runs interleaved runs; each one's figures."""
    from batchd.v1 import batch_pb2

    print(f"{spec.key} (upsert): building {args.rows:,} rows", flush=True)
    rows = spec.make(args.rows)
    csv = csv_chunks(spec, rows, args.chunk)
    arrow = arrow_ipc_chunks(arrow_table(spec, rows), args.chunk)
    seed = seeded(spec, rows)
    n = len(rows)
    contenders: list[tuple[str, str, Callable[[], Awaitable[float]], bool]] = []
    for enc in ("ROWS", "COLUMNAR", "CSV", "ARROW"):
        append = stream_requests(spec, enc, rows, args.chunk, csv=csv, arrow=arrow)
        head = batch_pb2.BatchStreamRequest.FromString(append[0])
        head.header.on_conflict.CopyFrom(on_conflict(spec))
        merge = [head.SerializeToString(), *append[1:]]
        contenders.append((f"BatchStream {enc} append", enc,
                           lambda r=append: stream(target, r, n), False))
        contenders.append((f"BatchStream {enc} upsert", enc,
                           lambda r=merge: stream(target, r, n), True))
    batches = batch_requests(spec, rows)
    contenders.append((f"BatchExecute upsert, {BATCH_ROWS:,}-row batches", "",
                       lambda: batch_execute(target, batches), True))
    conn = await connect(dsn)
    seconds: dict[str, list[float]] = {name: [] for name, *_ in contenders}
    try:
        for run in range(args.runs):
            for name, _, go, merging in contenders:
                await sql(dsn, f"TRUNCATE {spec.name} RESTART IDENTITY")
                if merging:
                    await conn.copy_records_to_table(spec.name, columns=spec.columns,
                                                     records=seed)
                await sql(dsn, "CHECKPOINT")
                took = await go()
                count = await sql(dsn, f"SELECT count(*) FROM {spec.name}")
                assert count == n, (name, count)
                seconds[name].append(took)
                print(f"  run {run + 1}: {spec.key}: {name}: {n / took:,.0f} rows/s", flush=True)
    finally:
        await conn.close()
    out = []
    for name, enc, _, merging in contenders:
        rates = [n / s for s in seconds[name]]
        figure: dict[str, Any] = {"name": name, "encoding": enc, "upsert": merging,
                                  "rows_per_s": statistics.median(rates),
                                  "min": min(rates), "max": max(rates)}
        if merging and enc:
            per_run = [a / u for u, a in zip(seconds[name], seconds[f"BatchStream {enc} append"],
                                             strict=True)]
            figure.update(ratio=statistics.median(per_run), ratio_min=min(per_run),
                          ratio_max=max(per_run))
        out.append(figure)
    batch = out[-1]["rows_per_s"]
    for figure in out[:-1]:
        if figure["upsert"]:
            figure["over_batches"] = figure["rows_per_s"] / batch
    return out


def lines(spec: Spec, figures: list[dict[str, Any]]) -> list[str]:
    table = (spec.describe.replace("no key, no index", "here a unique index on name")
             if spec.key == "narrow" else spec.describe)
    out = [f"**{spec.key}, upsert** — {table}; conflict key `{UNIQUE_KEY[spec.key]}`, 10 % of "
           "the keys present before each upsert (append and upsert into the same table).",
           "", "| contender | rows/s (median) | min-max | upsert ÷ append (per-run range; "
           "target ≥ 0.7x) | ÷ BatchExecute batches (target ≥ 5x) |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for f in figures:
        ratio = (f"{f['ratio']:.2f}x ({f['ratio_min']:.2f}-{f['ratio_max']:.2f})"
                 if "ratio" in f else "")
        over = f"{f['over_batches']:.1f}x" if "over_batches" in f else ""
        out.append(f"| {f['name']} | {f['rows_per_s']:,.0f} | {f['min']:,.0f}-{f['max']:,.0f} "
                   f"| {ratio} | {over} |")
    return out
