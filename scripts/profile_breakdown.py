#!/usr/bin/env python3
"""Where the server's samples went, by part of the request path, from py-spy's raw output.

    .venv/bin/python scripts/profile_breakdown.py FILE.txt [--per-unit-us CPU_US]

FILE.txt is ``scripts/profile WORKLOAD --format raw --out FILE.txt`` (collapsed stacks: one line
per stack, frames separated by ";", then its sample count). Each stack is charged to the first
part (in the order below) one of its frames belongs to, reading from the innermost frame out;
idle stacks (the event loop waiting, gRPC's poller blocked) are counted apart. With
--per-unit-us (the server's CPU per batch, from bench_execute: cores x 1e6 / batches per s),
each part's share is also given in microseconds per batch.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

# (part, pattern on a frame), tried innermost frame first.
PARTS: list[tuple[str, re.Pattern[str]]] = [
    # Without --native, C code is charged to the Python frame that runs it: the event loop's
    # own frame is uvloop and grpc.aio's completion queue (socket I/O, HTTP/2, callbacks); a
    # thread's bare run() is gRPC core's poller thread.
    ("gRPC core's poller thread", re.compile(r"^Thread\.run \(threading")),
    ("event loop: uvloop and grpc.aio's I/O and callbacks (C)",
     re.compile(r"^Runner\.run \(asyncio")),
    ("gRPC call setup (send_initial_metadata)", re.compile(r"batchd/rpc/service\.py:75\)")),
    ("driver (asyncpg)", re.compile(r"asyncpg/")),
    ("protobuf", re.compile(r"google/protobuf|_message|upb")),
    ("planning (plan, kinds' plan, values)", re.compile(
        r"batchd/batch/plan\.py|batchd/values\.py|batchd/kinds/.*\(plan|\bplan \(batchd/kinds")),
    ("results (results, rendering)", re.compile(
        r"batchd/batch/results\.py|batchd/rendering\.py|write_rows|add_result")),
    ("running (executor, steps, chain, kinds' run, pool)", re.compile(
        r"batchd/batch/|batchd/kinds/|batchd/db/")),
    ("edge (rpc/, decode, auth, metrics)", re.compile(r"batchd/rpc/|batchd/metrics")),
    ("gRPC runtime (grpc.aio, cygrpc)", re.compile(r"grpc/|cygrpc|_cython")),
    ("event loop (asyncio, uvloop)", re.compile(r"asyncio/|uvloop")),
]
IDLE = re.compile(r"select|epoll|poll \(|_poll|wait \(threading|run_forever.*idle|"
                  r"_run_once.*select")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--per-unit-us", type=float)
    args = parser.parse_args()
    parts: Counter[str] = Counter()
    idle = 0
    with open(args.file) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            if IDLE.search(frames[-1]):
                idle += n
                continue
            for frame in reversed(frames):
                if frame is not frames[-1] and frame.startswith(("Runner.run", "Thread.run")):
                    continue  # only as the innermost frame
                part = next((name for name, p in PARTS if p.search(frame)), None)
                if part is not None:
                    parts[part] += n
                    break
            else:
                parts["other"] += n
    busy = sum(parts.values())
    print(f"samples: {busy} busy, {idle} idle")
    print("| part | share of busy samples |" + (" µs per batch |" if args.per_unit_us else ""))
    print("| --- | ---: |" + (" ---: |" if args.per_unit_us else ""))
    for name, n in parts.most_common():
        share = n / busy
        extra = f" {share * args.per_unit_us:.0f} |" if args.per_unit_us else ""
        print(f"| {name} | {share:.1%} |{extra}")


if __name__ == "__main__":
    main()
