#!/usr/bin/env python3
"""Ingest benchmark: each BatchStream encoding against the raw COPY of its own form.

    .venv/bin/python scripts/bench_ingest.py [--table narrow|realistic|both] [--rows 1000000]
                                             [--chunk 10000] [--runs 3]
                                             [--memory-rows 10000000] [--peer-rows 100000]
                                             [--peer-clients 4] [--dsn DSN] [--note TEXT]
                                             [--markdown-out FILE] [--json-out FILE]
                                             [--upsert]

Every contender beside the baseline of its own form, in one run, on the same rows
(scripts/bench_tables.py: the narrow table, a realistic one with keys, an index and types
that need work):

- ROWS and COLUMNAR -> asyncpg ``copy_records_to_table`` of the same Python records, one call
  (it encodes every value in Python, as batchd does for these two encodings);
- CSV -> asyncpg ``copy_to_table`` of the exact same CSV bytes, built before timing;
- ARROW -> raw ``COPY ... FROM STDIN (FORMAT binary)`` of the same pyarrow table pre-encoded by
  pgpq: nothing left to do but one PostgreSQL backend parsing COPY, the physical limit of
  binary input. The ARROW contender runs once batchd's protocol has ENCODING_ARROW (one Arrow
  IPC stream per chunk); until then it is skipped, saying so.

Also, for context: each raw baseline cut as batchd cuts a stream (one COPY per --chunk rows,
each under a savepoint, in one transaction), and on the narrow table the FastAPI peer
(scripts/peer_app.py; --peer-rows 0: none).

One PostgreSQL (embedded by default; with --dsn the tables are dropped and re-made), one
batchd server, each in its own process. Each BatchStream contender is first used once,
untimed, on one chunk. Before each measurement the table is truncated and a CHECKPOINT taken;
runs are interleaved (every contender once, then again; each BatchStream contender right after
its baseline) so that the machine's drift hits all alike. Each figure is the median of --runs
with min-max; a ratio is the median of the per-run ratios (contender ÷ its baseline of the
same run, measured moments apart), with their range. BatchStream requests are serialized
before timing, so what is timed is transport, batchd and PostgreSQL. CPU: cores used during
each measurement by this client, batchd and PostgreSQL's processes. On the first run each
contender's table contents (all columns but the generated key) are checked against the first
baseline's. A contender that fails is reported with its gRPC status and not run again.
Memory: batchd's peak RSS (VmHWM) on a fresh server for a COLUMNAR stream of --rows and of
~--memory-rows rows (narrow table; 0: skipped). --json-out writes every sample
(scripts/bench_chart.py draws it); --markdown-out the tables (scripts/bench splices them into
BENCHMARKS.md).

--upsert runs the upsert workload instead (scripts/bench_upsert.py): each encoding's merging
stream against its plain append of the same rows, and against the same upserts as 1,000-row
BatchExecute batches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bench_common import (
    CpuMeter,
    peak_rss_mib,
    postgres_line,
    postmaster,
    sql,
    start_peer,
    start_postgres,
    start_server,
    stop_server,
    write_markdown,
)
from bench_report import (
    BINARY,
    CSV_BYTES,
    ENCODINGS,
    PEER_CORE,
    PEER_ORM,
    RECORDS,
    figures,
    peer_lines,
    summary_lines,
    table_lines,
)
from bench_tables import (
    SPECS,
    Spec,
    arrow_ipc_chunks,
    arrow_table,
    columnar_columns,
    copy_binary_pieces,
    csv_chunks,
    slices,
)

TIMEOUT = 900.0  # seconds, per stream or COPY: every wait is bounded
ARROW_MISSING = "not run: batchd's protocol has no ENCODING_ARROW yet (being added)"


@dataclass
class Contender:
    name: str
    run: Callable[[], Awaitable[float]]  # seconds
    rows: int
    baseline: str | None = None  # its form's baseline (None: it is one, or context only)
    target: float | None = None
    seconds: list[float] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)
    status: str = "ok"  # or "fails: ...", "not run: ..."
    warm: Callable[[], Awaitable[float]] | None = None  # an untimed first use, before run 1


# --- the contenders --------------------------------------------------------------------------

async def connect(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn, command_timeout=TIMEOUT)


async def copy_records(conn: Any, spec: Spec, rows: list[tuple[Any, ...]], step: int | None
                       ) -> float:
    """One transaction: one copy_records_to_table call, or (step) one per `step` rows, each
    under a savepoint, as batchd writes a chunk."""
    started = time.perf_counter()
    async with conn.transaction():
        if step is None:
            await conn.copy_records_to_table(spec.name, columns=spec.columns, records=rows)
        else:
            for start, end in slices(len(rows), step):
                async with conn.transaction():
                    await conn.copy_records_to_table(spec.name, columns=spec.columns,
                                                     records=rows[start:end])
    return time.perf_counter() - started


async def copy_bytes(conn: Any, spec: Spec, pieces: list[bytes], form: str,
                     per_piece: bool = False) -> float:
    """COPY FROM STDIN of pre-built bytes (csv or binary) in one transaction: one COPY fed one
    piece after another, or (per_piece) one COPY per piece under a savepoint, as batchd."""
    async def source(parts: list[bytes]) -> Any:
        for part in parts:
            yield part

    started = time.perf_counter()
    async with conn.transaction():
        for group in ([p] for p in pieces) if per_piece else [pieces]:
            async with conn.transaction() if per_piece else contextlib.nullcontext():
                await conn.copy_to_table(spec.name, columns=spec.columns,
                                         source=source(group), format=form)
    return time.perf_counter() - started


def stream_requests(spec: Spec, encoding: str, rows: list[tuple[Any, ...]], chunk: int,
                    arrow: list[bytes] | None = None, csv: list[bytes] | None = None,
                    ) -> list[bytes]:
    """Header, chunks and commit of an atomic stream, serialized."""
    from google.protobuf import struct_pb2

    from batchd.v1 import batch_pb2

    out = [batch_pb2.BatchStreamRequest(header=batch_pb2.StreamHeader(
        table=spec.name, columns=spec.columns,
        encoding=batch_pb2.Encoding.Value(f"ENCODING_{encoding}"))).SerializeToString()]
    for seq, (start, end) in enumerate(slices(len(rows), chunk), 1):
        message = batch_pb2.StreamChunk(sequence=seq)
        if encoding == "ROWS":
            for row in rows[start:end]:
                struct = struct_pb2.Struct()
                struct.update(spec.struct(row))
                message.rows.append(struct)
        elif encoding == "COLUMNAR":
            columnar_columns(spec, rows[start:end], message.columnar)
        elif encoding == "CSV":
            assert csv is not None
            message.csv = csv[seq - 1]
        else:
            assert arrow is not None
            message.arrow = arrow[seq - 1]  # type: ignore[attr-defined]
        out.append(batch_pb2.BatchStreamRequest(chunk=message).SerializeToString())
    out.append(batch_pb2.BatchStreamRequest(commit=batch_pb2.StreamCommit()).SerializeToString())
    return out


class StreamFailed(Exception):
    pass


async def stream(target: str, requests: Iterable[bytes], total: int,
                 metadata: tuple[tuple[str, str], ...] = ()) -> float:
    """Send serialized requests as one BatchStream (with call ``metadata``); seconds until the
    summary. Raises StreamFailed with the status, or if a row was not written."""
    import grpc

    from batchd.v1 import batch_pb2

    async with grpc.aio.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]) as channel:
        method = channel.stream_stream("/batchd.v1.BatchService/BatchStream",
                                       request_serializer=None,  # already bytes
                                       response_deserializer=batch_pb2.BatchStreamResponse.FromString)
        started = time.perf_counter()
        call = method(timeout=TIMEOUT, metadata=metadata or None)

        async def send() -> None:
            for request in requests:
                await call.write(request)

        sender = asyncio.create_task(send())
        summary = None
        try:
            async for response in call:
                if response.WhichOneof("kind") == "ack" and response.ack.rejected:
                    bad = response.ack.rejected[0]
                    raise StreamFailed(f"row {bad.index} rejected: "
                                       f"{grpc.StatusCode(bad.status.code)}: {bad.status.message}")
                if response.WhichOneof("kind") == "summary":
                    summary = response.summary
                    break
            await sender
        except grpc.aio.AioRpcError as exc:
            raise StreamFailed(f"{exc.code().name}: {exc.details()}") from None
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        elapsed = time.perf_counter() - started
    # A merging stream's rows are written (inserted, updated) or left unchanged.
    if summary is None or not summary.committed \
            or summary.rows_written + summary.rows_unchanged != total:
        raise StreamFailed(f"summary {summary}".replace("\n", " "))
    return elapsed


async def post_bulk(url: str, path: str, payloads: list[bytes], clients: int) -> float:
    """POST every payload, `clients` at a time; seconds. One httpx client (one keep-alive
    connection) per concurrent client: a shared client's connection pool costs client CPU."""
    import httpx

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    bodies = iter(payloads)

    async def worker(client: httpx.AsyncClient) -> None:
        for body in bodies:  # shared: each body is posted once
            response = await client.post(path, content=body,
                                         headers={"content-type": "application/json"})
            response.raise_for_status()

    http = [httpx.AsyncClient(base_url=url, limits=limits, timeout=300) for _ in range(clients)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in http))
        return time.perf_counter() - started
    finally:
        for client in http:
            await client.aclose()


def peer_payloads(spec: Spec, rows: list[tuple[Any, ...]], per_request: int = 1000
                  ) -> list[bytes]:
    """The peer's request bodies: JSON lists of row objects, exact values as strings."""
    return [json.dumps([spec.struct(r) for r in rows[i:i + per_request]]).encode()
            for i in range(0, len(rows), per_request)]


# --- one table -------------------------------------------------------------------------------

async def bench_table(spec: Spec, args: argparse.Namespace, dsn: str, target: str,
                      meter: CpuMeter, peer_url: str) -> list[Contender]:
    from batchd.v1 import batch_pb2

    print(f"{spec.key}: building {args.rows:,} rows in every form", flush=True)
    rows = spec.make(args.rows)
    csv = csv_chunks(spec, rows, args.chunk)
    table = arrow_table(spec, rows)
    binary = copy_binary_pieces(table, args.chunk)
    has_arrow = hasattr(batch_pb2, "ENCODING_ARROW")
    requests = {enc: stream_requests(spec, enc, rows, args.chunk, csv=csv,
                                     arrow=arrow_ipc_chunks(table, args.chunk)
                                     if enc == "ARROW" else None)
                for enc in ENCODINGS if enc != "ARROW" or has_arrow}
    n = args.rows

    def batchstream(enc: str) -> Contender:
        baseline, goal = ENCODINGS[enc]
        contender = Contender(f"BatchStream {enc}",
                              lambda: stream(target, requests[enc], n), n, baseline, goal)
        # The warm-up: header, first chunk, commit (the server's first use of an encoding may
        # import or cache things).
        contender.warm = lambda: stream(
            target, [requests[enc][0], requests[enc][1], requests[enc][-1]], min(n, args.chunk))
        if enc not in requests:
            contender.status = ARROW_MISSING
        return contender

    contenders = [
        # Each BatchStream contender right after its baseline: a pair shares the moment.
        Contender(RECORDS, lambda: copy_records(conn, spec, rows, None), n),
        batchstream("COLUMNAR"), batchstream("ROWS"),
        Contender(f"asyncpg copy_records_to_table, one call per {args.chunk:,}-row chunk "
                  f"under a savepoint (as batchd)",
                  lambda: copy_records(conn, spec, rows, args.chunk), n, RECORDS),
        Contender(CSV_BYTES, lambda: copy_bytes(conn, spec, csv, "csv"), n),
        batchstream("CSV"),
        Contender(f"asyncpg copy_to_table of the same CSV bytes, one COPY per "
                  f"{args.chunk:,}-row chunk under a savepoint (as batchd)",
                  lambda: copy_bytes(conn, spec, csv, "csv", per_piece=True), n, CSV_BYTES),
        Contender(BINARY, lambda: copy_bytes(conn, spec, binary, "binary"), n),
        batchstream("ARROW"),
    ]
    if peer_url and spec.key == "narrow":
        payloads = peer_payloads(spec, rows[:args.peer_rows])
        contenders += [Contender(name, (lambda path=path: post_bulk(
            peer_url, path, payloads, args.peer_clients)), len(rows[:args.peer_rows]))
            for name, path in ((PEER_ORM, "/bulk/orm"), (PEER_CORE, "/bulk/core"))]
    # The baselines' connection lives as long as the table's runs: its backend's CPU is counted
    # (the meter sees the postmaster's children at both ends of a window).
    conn = await connect(dsn)
    try:
        await run_interleaved(spec, contenders, args.runs, dsn, meter)
    finally:
        await conn.close()
    return contenders


async def run_interleaved(spec: Spec, contenders: list[Contender], runs: int, dsn: str,
                          meter: CpuMeter) -> None:
    expected = None
    n = contenders[0].rows
    for c in contenders:
        if c.warm is not None and c.status == "ok":
            try:
                await c.warm()
            except StreamFailed as exc:
                c.status = f"fails: {exc}"
                print(f"  warm-up: {spec.key}: {c.name}: {c.status}", flush=True)
            await sql(dsn, f"TRUNCATE {spec.name} RESTART IDENTITY")
    for run in range(runs):
        for c in contenders:
            if c.status != "ok":
                continue
            await sql(dsn, f"TRUNCATE {spec.name} RESTART IDENTITY")
            await sql(dsn, "CHECKPOINT")
            before, started = meter.snapshot(), time.perf_counter()
            try:
                seconds = await c.run()
            except StreamFailed as exc:
                c.status = f"fails: {exc}"
                print(f"  run {run + 1}: {spec.key}: {c.name}: {c.status}", flush=True)
                continue
            cpu = meter.cores(before, time.perf_counter() - started)
            count = await sql(dsn, f"SELECT count(*) FROM {spec.name}")
            assert count == c.rows, (c.name, count)
            if run == 0 and c.rows == n:  # the same contents as the first baseline's?
                fingerprint = await sql(dsn, spec.fingerprint_sql)
                expected = expected or fingerprint
                if fingerprint != expected:
                    c.status = "fails: wrong contents (fingerprint differs from the baseline's)"
            c.seconds.append(seconds)
            c.cpu.append(cpu)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            print(f"  run {run + 1}: {spec.key}: {c.name}: {c.rows / seconds:,.0f} rows/s; "
                  f"CPU cores: {shown}" + ("" if c.status == "ok" else f"; {c.status}"),
                  flush=True)


async def memory(dsn: str, args: argparse.Namespace, merging: bool = False) -> list[str]:
    """batchd's peak RSS for a stream of --rows and of ~--memory-rows narrow rows, in every
    encoding: the same chunks sent again and again with new sequence numbers, each stream to a
    freshly started server (peak RSS is a high-water mark). ``merging``: the streams merge
    (``on_conflict`` UPDATE on the key): the first pass inserts, every later one finds each key
    there (staged, then INSERT ... ON CONFLICT)."""
    from batchd.v1 import batch_pb2

    spec = SPECS["narrow"]
    rows = spec.make(args.rows)
    csv = csv_chunks(spec, rows, args.chunk)
    table = arrow_table(spec, rows)
    arrow = arrow_ipc_chunks(table, args.chunk)
    what = "encoding (narrow, merging)" if merging else "encoding (narrow)"
    lines = ["", f"| {what} | rows | batchd peak RSS | rows/s | RSS ratio, longer / "
                 "shorter (target <= 1.2x) |", "| --- | ---: | ---: | ---: | ---: |"]
    for encoding in args.encodings or ENCODINGS:
        serialized = stream_requests(spec, encoding, rows, args.chunk, csv=csv, arrow=arrow)
        if merging:
            from bench_upsert import UNIQUE_KEY, narrow_key_sql
            await sql(dsn, narrow_key_sql())
            header = batch_pb2.BatchStreamRequest.FromString(serialized[0])
            header.header.on_conflict.action = batch_pb2.OnConflict.ACTION_UPDATE
            header.header.on_conflict.conflict_columns.append(UNIQUE_KEY[spec.key])
            serialized = [header.SerializeToString(), *serialized[1:]]
        chunks = [batch_pb2.BatchStreamRequest.FromString(b) for b in serialized[1:-1]]

        def requests(repeat: int, chunks: list[Any] = chunks,
                     serialized: list[bytes] = serialized) -> Iterable[bytes]:
            yield serialized[0]
            seq = 0
            for _ in range(repeat):
                for request in chunks:
                    seq += 1
                    request.chunk.sequence = seq
                    yield request.SerializeToString()
            yield serialized[-1]

        peaks = []
        for repeat in (1, max(1, args.memory_rows // args.rows)):
            await sql(dsn, f"TRUNCATE {spec.name}")
            server, target = await start_server(dsn)
            try:
                total = repeat * args.rows
                seconds = await stream(target, requests(repeat), total)
                peaks.append(peak_rss_mib(server.pid))
            finally:
                await stop_server(server)
            ratio = f"{peaks[1] / peaks[0]:.2f}x" if len(peaks) == 2 else ""
            lines.append(f"| {encoding} | {total:,} | {peaks[-1]:.0f} MiB | "
                         f"{total / seconds:,.0f} | {ratio} |")
            print(f"  memory: {encoding} {total:,} rows: peak RSS {peaks[-1]:.0f} MiB",
                  flush=True)
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", choices=["narrow", "realistic", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-rows", type=int, default=10_000_000, help="0: skipped")
    parser.add_argument("--peer-rows", type=int, default=100_000,
                        help="rows ingested through the FastAPI peer (0: no peer)")
    parser.add_argument("--peer-clients", type=int, default=4,
                        help="concurrent clients posting to the peer")
    parser.add_argument("--encodings", type=lambda s: s.upper().split(","),
                        help="the memory measurement's encodings, e.g. ARROW,CSV (default: all)")
    parser.add_argument("--dsn")
    parser.add_argument("--note", help="a sentence for the report (e.g. the machine was busy)")
    parser.add_argument("--markdown-out", help="also write the tables to this file")
    parser.add_argument("--json-out", help="write every sample and ratio to this file (JSON)")
    parser.add_argument("--upsert", action="store_true",
                        help="the upsert workload instead (scripts/bench_upsert.py)")
    parser.add_argument("--memory-upsert", action="store_true",
                        help="only the memory measurement, of streams that merge "
                             "(on_conflict UPDATE: every key after the first pass is there)")
    args = parser.parse_args()
    args.peer_rows = min(args.peer_rows, args.rows)
    keys = ["narrow", "realistic"] if args.table == "both" else [args.table]

    dsn, embedded = start_postgres(args.dsn)
    try:
        for key in SPECS:  # both exist before batchd starts: it reads its catalog then
            await sql(dsn, SPECS[key].create_sql)
        settings = await postgres_line(dsn, embedded)
        if args.memory_upsert:
            lines = [settings + ".", "", *await memory(dsn, args, merging=True)]
            print("\n" + "\n".join(lines))
            write_markdown(args.markdown_out, "\n".join(lines))
            return
        if args.upsert:
            lines = [settings + ".", "", *await upsert_workload(dsn, args, keys)]
            print("\n" + "\n".join(lines))
            write_markdown(args.markdown_out, "\n".join(lines))
            return
        print(f"{settings}; tables={','.join(keys)} rows={args.rows:,} chunk={args.chunk:,} "
              f"runs={args.runs}", flush=True)
        tables, peer_info = await measure_all(dsn, args, keys)
        lines = [settings + ".", "",
                 f"{args.rows:,} rows per table, {args.runs} interleaved run"
                 f"{'s' * (args.runs != 1)}, BatchStream chunks of {args.chunk:,} rows in one "
                 f"atomic stream, requests serialized before timing; baselines' data (records, "
                 f"CSV bytes, binary COPY bytes) built before timing."
                 + (f" {args.note}" if args.note else ""), "",
                 "Each BatchStream encoding against the raw COPY of its own form (ratio: the "
                 "median of the per-run ratios, each contender ÷ its baseline in the same run; "
                 "range in the tables below):", "", *summary_lines(tables)]
        for key in keys:
            lines += ["", *table_lines(SPECS[key], tables[key])]
        if "narrow" in tables and args.peer_rows:
            lines += peer_lines(tables["narrow"], args, peer_info)
        if args.memory_rows:
            lines += await memory(dsn, args)
    finally:
        if embedded is not None:
            embedded.cleanup()
    print("\n" + "\n".join(lines))
    write_markdown(args.markdown_out, "\n".join(lines))
    if args.json_out:
        write_markdown(args.json_out, json.dumps({
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["scripts/bench_ingest.py", *sys.argv[1:]]),
            "settings": settings, "rows": args.rows, "chunk": args.chunk, "runs": args.runs,
            "note": args.note, "targets": {enc: goal for enc, (_, goal) in ENCODINGS.items()},
            "tables": tables}, indent=1))


async def upsert_workload(dsn: str, args: argparse.Namespace, keys: list[str]) -> list[str]:
    """The upsert workload's report (scripts/bench_upsert.py)."""
    import bench_upsert

    await sql(dsn, bench_upsert.narrow_key_sql())
    server, target = await start_server(dsn)
    out = [f"{args.rows:,} rows per table, {args.runs} interleaved run"
           f"{'s' * (args.runs != 1)}, chunks of {args.chunk:,} rows in one atomic stream."
           + (f" {args.note}" if args.note else "")]
    try:
        for key in keys:
            figures = await bench_upsert.bench(SPECS[key], args, dsn, target,
                                               stream_requests, stream, connect, sql)
            out += ["", *bench_upsert.lines(SPECS[key], figures)]
    finally:
        await stop_server(server)
    return out


async def measure_all(dsn: str, args: argparse.Namespace, keys: list[str]
                      ) -> tuple[dict[str, list[dict[str, Any]]], str]:
    server, target = await start_server(dsn)
    peer, peer_url, peer_info = None, "", ""
    try:
        if args.peer_rows and "narrow" in keys:
            peer, peer_url, peer_info = await start_peer(dsn)
        pids = {"client": os.getpid(), "batchd": server.pid}
        meter = CpuMeter(pids, await postmaster(dsn))
        tables = {}
        for key in keys:
            contenders = await bench_table(SPECS[key], args, dsn, target, meter, peer_url)
            by_name = {c.name: c for c in contenders}
            tables[key] = [figures(c, by_name) for c in contenders]
    finally:
        await stop_server(server)
        if peer is not None:
            await stop_server(peer)
    return tables, peer_info


if __name__ == "__main__":
    asyncio.run(main())
