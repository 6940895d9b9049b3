#!/usr/bin/env python3
"""A network in a box: a TCP proxy that delays every byte by --delay-ms each way, for the
benchmarks' "over a network" case (scripts/bench_execute.py --delay-ms).

    .venv/bin/python scripts/delay_proxy.py --target HOST:PORT|/unix/socket --delay-ms 0.5

It listens on a free port of 127.0.0.1, prints ``listening on 127.0.0.1:PORT`` and forwards
every connection to the target (a TCP address, or a unix socket path: embedded PostgreSQL's),
each direction on its own: data read at time t is written at t + delay, in order, so a round
trip through it costs 2 x delay on top of the rest, and a pipeline of messages pays the delay
once, as on a real link (sleeps are time.sleep's, accurate to some 0.1 ms; a round trip
through a 0.5 ms proxy measured 1.2-1.6 ms on the shared 2-core machine). It runs in a process
of its own, so that its CPU is not the benchmark client's or the server's. Only loopback:
nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import socket
import threading
import time


def pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    """Forward src to dst, each piece ``delay`` seconds after it was read: a reader thread
    stamps what it reads, this one sends it when due. Threads and blocking sockets, not an
    event loop: epoll waits in whole milliseconds, and time.sleep keeps a 0.5 ms delay."""
    pieces: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def read() -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                pieces.put((time.monotonic() + delay, data))
        pieces.put((time.monotonic() + delay, b""))

    threading.Thread(target=read, daemon=True).start()
    with contextlib.suppress(OSError):
        while True:
            due, data = pieces.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                break
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def serve(target: str, delay: float) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        try:
            if target.startswith("/"):
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(target)
            else:
                host, _, port = target.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
        except OSError:
            client.close()
            continue
        for sock in (client, upstream):
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, upstream, delay), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, delay), daemon=True).start()


def target_of_dsn(dsn: str) -> str:
    """The PostgreSQL address of a URL DSN, as --target takes it (a unix socket's path)."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    port = parts.port or int(query.get("port", 5432))
    socket_dir = query.get("host") or (parts.hostname if (parts.hostname or "").startswith("/")
                                       else None)
    if socket_dir:
        return f"{socket_dir}/.s.PGSQL.{port}"
    return f"{parts.hostname or '127.0.0.1'}:{port}"


def dsn_through(dsn: str, port: int) -> str:
    """``dsn`` reaching PostgreSQL through the proxy on 127.0.0.1:``port``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(dsn)
    query = {k: v for k, v in parse_qsl(parts.query) if k not in ("host", "port")}
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{userinfo}127.0.0.1:{port}", parts.path,
                       urlencode(query), ""))


async def start(target: str, delay_ms: float) -> tuple[asyncio.subprocess.Process, int]:
    """This proxy in its own process: it, and its port."""
    import sys
    from pathlib import Path

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__)), "--target", target, "--delay-ms", str(delay_ms),
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    if not line.startswith("listening on "):
        raise RuntimeError("delay_proxy.py did not start")
    return proc, int(line.rsplit(":", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.5)
    args = parser.parse_args()
    serve(args.target, args.delay_ms / 1000)


if __name__ == "__main__":
    main()
