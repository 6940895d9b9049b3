#!/usr/bin/env python3
"""Fleet benchmark: 10-operation atomic batches through HAProxy to 1 and to 3 batchd replicas.

    .venv/bin/python scripts/bench_fleet.py [--seconds 10] [--runs 3] [--callers 64]
                                            [--channels 8] [--client-procs 2]
                                            [--markdown-out FILE]

The fleet of the fleet tests (tests/fleet/processes.py), as real processes on 127.0.0.1: an
embedded PostgreSQL, pgbouncer in transaction mode (deploy/pgbouncer/pgbouncer.ini), three
`batchd serve` replicas behind it, and HAProxy from deploy/haproxy/haproxy.cfg (HTTP/2, every
call balanced round robin). --callers concurrent callers, split over --client-procs client
processes (this script with --client) and spread over --channels channels (each its own HTTP/2
connection to HAProxy), send 10-operation atomic batches (10 one-row inserts into `events`,
unique ids) for --seconds after a 2 s warm-up. Runs alternate 3 replicas, 1 replica, 3, 1, ...
(--runs of each): for 1 replica, replicas 2 and 3 are stopped (SIGTERM) and HAProxy has marked
them DOWN; for 3, they are started again and HAProxy has them UP.

Measured per run: batches (and operations = 10 x batches) completed within the timed window
per second, the latency of each batch (p50, p99) and the errors, and the CPU time each
component used in that window (utime + stime from /proc/PID/stat), as cores (CPU-seconds per
wall second): each batchd replica, pgbouncer, HAProxy, PostgreSQL (every process of its tree,
reaped backends included), the client processes, every other process (this script, kernel
threads, whatever else runs: a shared machine shows here); and the whole machine's busy time
from /proc/stat, against its core count. Figures are medians of the runs with min-max; the 3-vs-1
ratio is taken within this run. --markdown-out writes the tables (scripts/bench puts them into
BENCHMARKS.md). The replicas and clients run a copy of server/batchd and client/batchd taken at
the start (the report names its commit, and a digest of any uncommitted change), so that edits
to the tree during the run reach none of them. Every process started is stopped on exit, on
failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))  # tests.fleet.processes: the fleet harness of the fleet tests
sys.path.insert(0, str(SCRIPT.parent))

from bench_common import postgres_line, sql, write_markdown  # noqa: E402

from tests.fleet.processes import Fleet, find_tool, start_fleet  # noqa: E402

WARMUP = 2.0
COMPONENTS = ("pgbouncer", "HAProxy", "PostgreSQL", "client")  # besides the replicas
TIMEOUT = 30.0  # per call; a deadline also lowers the batch's statement_timeout
OPS_PER_BATCH = 10
REPLICA_ENV = {
    "BATCHD_POOLER": "transaction",
    # Longer than HAProxy's check interval (500 ms), so a stopped replica is taken out on its
    # NOT_SERVING answer, as in a deployment; short, since nothing runs while we stop one.
    "BATCHD_DRAIN_DELAY_SECONDS": "0.6",
    "BATCHD_METRICS_PORT": "0",
    "BATCHD_HTTP_PORT": "0",
    "BATCHD_DEMO_SCHEMA": "false",  # the harness made the tables, once
    "BATCHD_POOL_MIN_SIZE": "2",
    "BATCHD_POOL_MAX_SIZE": "16",
    "BATCHD_LOG_FORMAT": "json",
    "BATCHD_LOG_LEVEL": "WARNING",
}
GRACE_SECONDS = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


# --- client processes (this script with --client) ------------------------------------------

async def client_main(target: str, callers: int, channels: int, index: int) -> None:
    """Callers of one client process. Reads one JSON command per line on stdin
    ({"start": T, "end": T}: time.monotonic() values, a clock every process shares), runs
    the callers from receipt until "end", and answers one JSON line: the batches completed
    within [start, end], their latencies (µs) and the errors. Exits on end of input, or after
    10 minutes without a command."""
    import grpc

    from batchd.client.builder import Batch
    from batchd.v1 import batch_pb2_grpc

    options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
    chans = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in chans)), 30)
    make_stub: Callable[[Any], Any] = batch_pb2_grpc.BatchServiceStub
    stubs = [make_stub(ch) for ch in chans]

    def template() -> Any:
        b = Batch()
        for k in range(OPS_PER_BATCH):
            b.insert("events", {"id": "0", "kind": "bench", "score": k}, id=f"e{k}")
        return b.to_request(mode="atomic")

    requests = [template() for _ in range(callers)]
    next_id = (index + 1) * 10**12  # ids of one client process never meet another's

    async def run(start: float, end: float) -> dict[str, Any]:
        nonlocal next_id
        latencies: list[int] = []
        errors: Counter[str] = Counter()
        details: dict[str, str] = {}  # the first message of each kind of error

        async def caller(i: int) -> None:
            nonlocal next_id
            stub, request = stubs[i % len(stubs)], requests[i]
            rows = [op.insert.rows[0] for op in request.operations]
            while time.monotonic() < end:
                for row in rows:
                    row["id"] = str(next_id)
                    next_id += 1
                began = time.monotonic()
                try:
                    reply = await stub.BatchExecute(request, timeout=TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    details.setdefault(exc.code().name, str(exc.details())[:300])
                    await asyncio.sleep(0.01)
                    continue
                done = time.monotonic()
                if not reply.committed:
                    errors["not committed"] += 1
                elif start <= done <= end:
                    latencies.append(round((done - began) * 1e6))

        await asyncio.gather(*(caller(i) for i in range(callers)))
        return {"batches": len(latencies), "latencies_us": latencies, "errors": dict(errors),
                "details": details}

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    try:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), 600)
            except TimeoutError:
                break
            if not line:
                break
            command = json.loads(line)
            start, end = float(command["start"]), float(command["end"])
            if end - time.monotonic() > 3600:
                raise SystemExit("refusing a window longer than an hour")
            print(json.dumps(await run(start, end)), flush=True)
    finally:
        for ch in chans:
            await ch.close()


@dataclass
class ClientProc:
    """One client process and its pipes."""

    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, target: str, callers: int, channels: int, index: int,
                    pythonpath: str) -> ClientProc:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--client", "--target", target,
            "--callers", str(callers), "--channels", str(channels), "--index", str(index),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": pythonpath})
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def read(self, patience: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), patience)
        if not line:
            raise RuntimeError(f"client process {self.pid} exited "
                               f"(code {await self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, command: dict[str, float]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    async def stop(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.close()  # end of input: it closes its channels and exits
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


# --- CPU accounting --------------------------------------------------------------------------

def stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat: [1] ppid, [11] utime, [12] stime, [13] cutime,
    [14] cstime (clock ticks; utime/stime cover every thread of the process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


@dataclass
class ProcCpu:
    ppid: int
    comm: str
    own: float  # CPU seconds: utime + stime
    reaped: float  # CPU seconds of the children it has waited for: cutime + cstime
    started: int  # start time (clock ticks after boot): with the pid, one process for good


def process_table() -> dict[int, ProcCpu]:
    """Every process of the machine now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        comm, fields = text[text.find("(") + 1:text.rfind(")")], text.rsplit(")", 1)[1].split()
        table[int(entry.name)] = ProcCpu(
            int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            (int(fields[13]) + int(fields[14])) / CLOCK_TICKS, int(fields[19]))
    return table


def descendants(table: dict[int, ProcCpu], roots: Iterable[int]) -> set[int]:
    """``roots`` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    seen: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def machine_seconds() -> dict[str, float]:
    """From /proc/stat: the machine's busy CPU seconds (all cores: user, nice, system, irq,
    softirq), its irq + softirq seconds alone, and the seconds stolen by the hypervisor."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return {"machine": (user + nice + system + irq + softirq) / CLOCK_TICKS,
            "irq": (irq + softirq) / CLOCK_TICKS, "steal": steal / CLOCK_TICKS}


# --- the fleet ---------------------------------------------------------------------------------

@dataclass
class Sample:
    replicas: int
    batches: int
    seconds: float
    latencies_us: list[int]
    errors: dict[str, int]
    cpu: dict[str, float]  # cores used in the window, by component

    @property
    def batches_s(self) -> float:
        return self.batches / self.seconds

    @property
    def ops_s(self) -> float:
        return self.batches_s * OPS_PER_BATCH

    def quantile_ms(self, q: int) -> float:
        if len(self.latencies_us) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_us, n=100, method="inclusive")[q - 1] / 1e3


@dataclass
class Snapshot:
    components: dict[str, float]  # CPU seconds by component, and the machine's
    # CPU seconds of every other process by (pid, start time), and its name (a kernel
    # worker's name changes with its work: not part of the key)
    others: dict[tuple[int, int], tuple[str, float]]


@dataclass
class Meter:
    """CPU seconds of every component at one instant (pids looked up at that instant)."""

    fleet: Fleet
    postgres_roots: list[int]
    clients: list[ClientProc]

    def snapshot(self) -> Snapshot:
        table = process_table()
        groups = {f"batchd {r.name}": {r.proc.pid} for r in self.fleet.replicas
                  if r.proc.running}
        groups["pgbouncer"] = {self.fleet.pgbouncer.pid}
        groups["HAProxy"] = {self.fleet.haproxy.proc.pid}
        groups["client"] = {c.pid for c in self.clients}
        seconds = {name: sum(table[p].own for p in pids if p in table)
                   for name, pids in groups.items()}
        # PostgreSQL: with the backends it has reaped, so that one exiting mid-window counts.
        postgres = descendants(table, self.postgres_roots)
        seconds["PostgreSQL"] = sum(table[p].own + table[p].reaped for p in postgres)
        seconds.update(machine_seconds())
        mine = postgres.union(*groups.values())
        others = {(pid, proc.started): (proc.comm, proc.own) for pid, proc in table.items()
                  if pid not in mine}
        return Snapshot(seconds, others)

    @staticmethod
    def cores(before: Snapshot, after: Snapshot,
              elapsed: float) -> tuple[dict[str, float], dict[str, float]]:
        """Cores used by each component between the snapshots, "other processes" among
        them, and the other processes' cores by name, busiest first."""
        cpu = {name: (value - before.components.get(name, value)) / elapsed
               for name, value in after.components.items()}
        others: dict[str, float] = {}
        for key, (comm, value) in after.others.items():
            used = (value - before.others.get(key, (comm, 0.0))[1]) / elapsed
            name = ("bench_fleet.py" if key[0] == os.getpid() else
                    comm.split("/")[0] if comm.startswith("kworker/") else comm)
            others[name] = others.get(name, 0.0) + used
        cpu["other processes"] = sum(others.values())
        return cpu, dict(sorted(others.items(), key=lambda item: -item[1]))


async def set_replicas(fleet: Fleet, count: int) -> None:
    """Replicas 1..count running and UP in HAProxy, the others stopped and DOWN."""
    keep, drop = fleet.replicas[:count], fleet.replicas[count:]
    await asyncio.gather(*(r.proc.stop(patience=GRACE_SECONDS + 10) for r in drop
                           if r.proc.running))
    if drop:
        await fleet.haproxy.wait_status({r.name: "DOWN" for r in drop}, patience=30)
    dead = [r for r in keep if not r.proc.running]
    for r in dead:
        await r.proc.stop()  # closes its log file
        await r.start()
    await asyncio.gather(*(r.wait_serving(60) for r in dead))
    await fleet.haproxy.wait_status({r.name: "UP" for r in keep}, patience=60)


async def measure(replicas: int, seconds: float, clients: list[ClientProc],
                  meter: Meter) -> Sample:
    start = time.monotonic() + WARMUP
    end = start + seconds
    for c in clients:
        c.send({"start": start, "end": end})
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    before, began = meter.snapshot(), time.monotonic()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    after, elapsed = meter.snapshot(), time.monotonic() - began
    answers = await asyncio.gather(*(c.read(seconds + TIMEOUT + 30) for c in clients))
    cpu, others = meter.cores(before, after, elapsed)
    busiest = ", ".join(f"{comm} {cores:.2f}" for comm, cores in list(others.items())[:4])
    print(f"    other processes, busiest: {busiest}", flush=True)
    errors: Counter[str] = Counter()
    details: dict[str, str] = {}
    latencies: list[int] = []
    for answer in answers:
        errors.update(answer["errors"])
        details.update(answer["details"])
        latencies.extend(answer["latencies_us"])
    if len(latencies) < 2:
        raise RuntimeError(f"no batches committed in the window, errors {dict(errors)}: "
                           f"{details}")
    if errors:
        print(f"    errors: {dict(errors)}: {details}", flush=True)
    return Sample(replicas, len(latencies), end - start, latencies, dict(errors), cpu)


async def postmaster_pid(admin_dsn: str) -> int | None:
    """The postmaster: the checkpointer's parent."""
    pid = await sql(admin_dsn, "SELECT pid FROM pg_stat_activity "
                               "WHERE backend_type = 'checkpointer'")
    fields = stat_fields(int(pid)) if pid else None
    return int(fields[1]) if fields else None


def tool_version(argv: Sequence[str]) -> str:
    """The first version number the command prints (HAProxy -v, pgbouncer --version)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(r"\d+\.\d+(?:\.\d+)?", out.stdout + out.stderr)
    return found.group(0) if found else "?"


def source_version() -> str:
    """The commit the replicas' code is at, and whether server/ or client/ differs from it."""
    def git(*argv: str) -> str:
        try:
            out = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True,
                                 text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "batchd (not a git checkout)"
    changed = git("diff", "HEAD", "--", "server", "client")
    digest = hashlib.sha1(changed.encode()).hexdigest()[:8]
    return f"batchd at {commit}" + (f" with uncommitted changes in server/ or client/ "
                                     f"(diff {digest})"
                                     if changed else "")


def freeze_package(workdir: Path) -> Path:
    """A copy of server/batchd and client/batchd (generated code included) in one folder under
    ``workdir``, as one site-packages holds both distributions: the folder to put first on
    PYTHONPATH, ahead of the editable installs' server/ and client/."""
    src = workdir / "src"
    for part in ("server", "client"):
        shutil.copytree(ROOT / part / "batchd", src / "batchd", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return src


# --- report ------------------------------------------------------------------------------------

def fmt(values: Sequence[float], spec: str) -> str:
    ordered = sorted(values)
    return (f"{statistics.median(ordered):{spec}} "
            f"({ordered[0]:{spec}}-{ordered[-1]:{spec}})")


def report(header: str, setup: str, samples: dict[int, list[Sample]],
           client_procs: int) -> list[str]:
    counts = sorted(samples)
    lines = [header, "", setup, "",
             "| replicas | operations/s | batches/s | p50 ms | p99 ms | errors |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n in counts:
        runs = samples[n]
        errors = sum(sum(s.errors.values()) for s in runs)
        lines.append(f"| {n} | {fmt([s.ops_s for s in runs], ',.0f')} | "
                     f"{fmt([s.batches_s for s in runs], ',.0f')} | "
                     f"{fmt([s.quantile_ms(50) for s in runs], '.1f')} | "
                     f"{fmt([s.quantile_ms(99) for s in runs], '.1f')} | {errors} |")
    if 1 in samples and 3 in samples:
        def ratio(value: Callable[[Sample], float]) -> float:
            return (statistics.median(value(s) for s in samples[3])
                    / statistics.median(value(s) for s in samples[1]))

        pairs = sorted(a.ops_s / b.ops_s for a, b in zip(samples[3], samples[1], strict=False))
        lines.append(f"| 3 vs 1 | {ratio(lambda s: s.ops_s):.2f}x "
                     f"(per pair {pairs[0]:.2f}-{pairs[-1]:.2f}x) | "
                     f"{ratio(lambda s: s.batches_s):.2f}x | "
                     f"{ratio(lambda s: s.quantile_ms(50)):.2f}x | "
                     f"{ratio(lambda s: s.quantile_ms(99)):.2f}x | |")

    for s in (s for runs in samples.values() for s in runs):
        batchd = sum(v for k, v in s.cpu.items() if k.startswith("batchd "))
        s.cpu["batchd, all replicas"] = batchd
        s.cpu["sum"] = batchd + sum(s.cpu[k] for k in COMPONENTS)
        s.cpu["unattributed"] = s.cpu["machine"] - s.cpu["sum"] - s.cpu["other processes"]
    replicas = sorted({k for runs in samples.values() for s in runs for k in s.cpu
                       if k.startswith("batchd replica")})
    labels = {"PostgreSQL": "PostgreSQL (all its processes)",
              "client": f"client ({client_procs} processes)",
              "sum": "sum of the above",
              "machine": f"machine busy, all processes (of {CORES} cores)",
              "other processes": "other processes (this script, kernel threads, any other)",
              "unattributed": "unattributed (machine - all processes)",
              "irq": "of the machine's busy time: irq + softirq",
              "steal": "stolen by the hypervisor"}
    names = [*replicas, "batchd, all replicas", *COMPONENTS, "sum", "other processes",
             "unattributed", "machine", "irq", "steal"]
    plural = {n: f"{n} replica{'s' * (n != 1)}" for n in counts}
    lines += ["", "| CPU, cores used (median) | "
              + " | ".join(plural[n] for n in counts) + " | "
              + " | ".join(f"CPU ms per batch, {plural[n]}" for n in counts) + " |",
              "| --- |" + " ---: |" * (2 * len(counts))]
    for name in names:
        cores, per_batch = [], []
        for n in counts:
            runs = [s for s in samples[n] if name in s.cpu]
            used = statistics.median(s.cpu[name] for s in runs) if runs else None
            ms = statistics.median(s.cpu[name] / s.batches_s * 1e3 for s in runs) if runs else None
            cores.append("-" if used is None else f"{used:.2f}")
            per_batch.append("-" if ms is None else f"{ms:.2f}")
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cores + per_batch) + " |")
    return lines


# --- main --------------------------------------------------------------------------------------

async def bench(args: argparse.Namespace) -> None:
    missing = [t for t in ("pgbouncer", "haproxy") if find_tool(t) is None]
    if missing:
        raise SystemExit(f"bench_fleet: {' and '.join(missing)} not found (apt-get install "
                         "pgbouncer haproxy)")
    procs = max(1, min(args.client_procs, args.callers))
    workdir = Path(tempfile.mkdtemp(prefix="batchd-bench-fleet-"))
    started: list[Any] = []
    fleet: Fleet | None = None
    clients: list[ClientProc] = []
    ok = False
    try:
        # The replicas and clients run a copy of the package taken now: replicas 2 and 3
        # restart in every round, and must not pick up edits made to the tree meanwhile.
        version = source_version()
        pythonpath = os.pathsep.join([str(freeze_package(workdir)), str(ROOT)])
        fleet = await start_fleet(workdir, {**REPLICA_ENV, "PYTHONPATH": pythonpath},
                                  GRACE_SECONDS, started)
        admin = fleet.postgres.admin_dsn
        # pg_ctl daemonizes the postmaster (its parent is then init, not pg_process.py):
        # found through the checkpointer.
        postmaster = await postmaster_pid(admin)
        if postmaster is None:
            raise RuntimeError("PostgreSQL's postmaster not found in /proc")
        roots = [fleet.postgres.proc.pid, postmaster]
        header = (await postgres_line(admin, fleet.postgres)).replace(
            "shared by client, servers and PostgreSQL",
            "shared by the clients, HAProxy, the replicas, pgbouncer and PostgreSQL")
        for i in range(procs):
            callers = args.callers // procs + (i < args.callers % procs)
            chans = max(1, args.channels // procs + (i < args.channels % procs))
            clients.append(await ClientProc.start(fleet.address, callers, chans, i,
                                                  pythonpath))
        for c in clients:
            await c.read(60)  # ready: its channels are connected
        meter = Meter(fleet, roots, clients)
        print(f"{header}; seconds={args.seconds:g} runs={args.runs} callers={args.callers} "
              f"channels={args.channels} client-procs={procs}; logs in {workdir}", flush=True)
        samples: dict[int, list[Sample]] = {3: [], 1: []}
        for run in range(args.runs):
            for n in (3, 1):
                await set_replicas(fleet, n)
                await sql(admin, "CHECKPOINT")
                s = await measure(n, args.seconds, clients, meter)
                samples[n].append(s)
                cpu = ", ".join(f"{k} {v:.2f}" for k, v in s.cpu.items())
                print(f"  run {run + 1}, {n} replica{'s' * (n != 1)}: {s.ops_s:,.0f} ops/s, "
                      f"{s.batches_s:,.0f} batches/s, p50 {s.quantile_ms(50):.1f} ms, "
                      f"p99 {s.quantile_ms(99):.1f} ms, errors {s.errors or 0}; "
                      f"CPU cores: {cpu}", flush=True)
        rows = await sql(fleet.db_dsn, "SELECT count(*) FROM events")
        expected = sum(s.batches for runs in samples.values() for s in runs) * OPS_PER_BATCH
        ok = True
    finally:
        for c in clients:
            await c.stop()
        if fleet is not None:
            await fleet.stop()
        else:
            for thing in reversed(started):
                await thing.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench_fleet: failed; logs kept in {workdir}", file=sys.stderr)

    haproxy = tool_version([find_tool("haproxy") or "haproxy", "-v"])
    pgbouncer = tool_version([find_tool("pgbouncer") or "pgbouncer", "--version"])
    per_proc = ", ".join(str(args.callers // procs + (i < args.callers % procs))
                         for i in range(procs))
    setup = " ".join([
        f"{args.runs} interleaved run{'s' * (args.runs != 1)} of each (3 replicas, 1 replica,",
        "3, 1, ...),",
        f"{args.seconds:g} s each after a {WARMUP:g} s warm-up. {args.callers} callers in",
        f"{procs} client processes ({per_proc} callers; grpc.aio, {args.channels} channels",
        "in all, one HTTP/2 connection to HAProxy each) loop on 10-operation atomic batches",
        "(10 one-row inserts into `events`, unique ids; request templates built before",
        f"timing), through HAProxy {haproxy} (deploy/haproxy/haproxy.cfg: mode http, every",
        "call balanced round robin, one log line per call) to `batchd serve` replicas (one",
        f"process each, pool of 16, BATCHD_POOLER=transaction; {version}), through PgBouncer",
        f"{pgbouncer} in transaction mode (deploy/pgbouncer/pgbouncer.ini: default_pool_size",
        "20) to PostgreSQL, all on 127.0.0.1. For 1 replica, replicas 2 and 3 are stopped",
        "and DOWN in HAProxy. Throughput and latency count the batches completed within the",
        "timed window; operations/s = 10 x batches/s. CPU: CPU-seconds per wall second of",
        "each component in the window (/proc/PID/stat; PostgreSQL: all its processes;",
        "client: all client processes); CPU ms per batch = cores / (batches/s) x 1000, per",
        "batch of the whole fleet (a replica of three serves a third of them).",
        "Machine: busy time of all cores from /proc/stat; 'unattributed' is the part of it",
        "in no process's figure (processes that exited in the window, interrupts on an idle",
        "core, and the difference between /proc/stat's tick sampling and the processes'",
        "own accounting)."])
    lines = report(header + ".", setup, samples, procs)
    lines += ["", f"Rows in events at the end: {rows:,} (batches counted x 10: {expected:,}; "
              "the rest committed during warm-ups and at the windows' edges)."]
    print("\n" + "\n".join(lines))
    write_markdown(args.markdown_out, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each replica count")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers in all")
    parser.add_argument("--channels", type=int, default=8,
                        help="gRPC channels (HTTP/2 connections to HAProxy) in all")
    parser.add_argument("--client-procs", type=int, default=2,
                        help="client processes the callers and channels are split over")
    parser.add_argument("--markdown-out", help="also write the tables to this file")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_main(args.target, args.callers, args.channels, args.index))
        return
    if args.runs < 1 or args.callers < 1 or args.seconds <= 0:
        parser.error("--runs and --callers must be at least 1, --seconds positive")

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM (or SIGINT) cancels the bench, so that its finally stops every process.
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        await bench(args)

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        sys.exit("bench_fleet: interrupted")


if __name__ == "__main__":
    main()
