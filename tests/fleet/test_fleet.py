"""batchd as a fleet: three replicas behind HAProxy (HTTP/2), one PostgreSQL behind pgbouncer in
transaction mode, all real processes (see conftest.py). What a deployment relies on: the
timeouts hold behind pgbouncer, calls spread over the replicas, a request id runs once across
replicas, a stream resumes on another replica, and draining a replica fails no call.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import time
import uuid
from typing import Any

import asyncpg
import grpc
import pytest

from batchd.db.pool import detect_pooler
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.fleet.conftest import (
    DRAIN_DELAY_SECONDS,
    GRACE_SECONDS,
    IDLE_IN_TRANSACTION_TIMEOUT_MS,
    LOCK_TIMEOUT_MS,
    STATEMENT_TIMEOUT_MS,
)
from tests.fleet.load import BatchLoad
from tests.fleet.processes import DEPLOY, Fleet, wait_until
from tests.support.batches import BatchFailure, batch, rows
from tests.support.streams import INDEPENDENT, events, header, open_stream, rows_chunk, send

pytestmark = pytest.mark.fleet

# The published client configuration: retry UNAVAILABLE on another attempt (which HAProxy
# sends to another replica).
SERVICE_CONFIG = json.loads((DEPLOY / "grpc-service-config.json").read_text())


def channel(target: str, *, retries: bool = False) -> grpc.aio.Channel:
    """A channel with its own TCP connection: by default, channels of one process to the
    same target with the same options share one (grpc's global subchannel pool)."""
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if retries:
        options += [("grpc.service_config", json.dumps(SERVICE_CONFIG)),
                    ("grpc.enable_retries", 1)]
    return grpc.aio.insecure_channel(target, options=options)


async def whoami(stub: batch_pb2_grpc.BatchServiceStub) -> dict[str, Any]:
    """No gRPC deadline on purpose: a deadline would become the transaction's
    statement_timeout; asyncio bounds the wait instead."""
    response = await asyncio.wait_for(
        stub.BatchExecute(batch([{"id": "me", "call": {"handler": "whoami"}}])), 30)
    me = rows(response.results[0])[0]
    return {**me, "pid": int(me["pid"])}


async def test_replicas_start_behind_pgbouncer_with_timeouts_in_force(fleet: Fleet):
    pids = {r.proc.pid for r in fleet.replicas}
    seen: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    async with channel(fleet.address) as ch:
        stub = batch_pb2_grpc.BatchServiceStub(ch)
        for _ in range(30):
            me = await whoami(stub)
            seen[me["pid"]].append(me)
    assert set(seen) == pids, "every replica started behind pgbouncer and answers"
    expected = (f"{STATEMENT_TIMEOUT_MS}ms", f"{LOCK_TIMEOUT_MS}ms",
                f"{IDLE_IN_TRANSACTION_TIMEOUT_MS}ms")
    for answers in seen.values():
        for me in answers:  # every transaction, whichever backend pgbouncer gave it
            assert (me["statement_timeout"], me["lock_timeout"],
                    me["idle_in_transaction_session_timeout"]) == expected, me


async def test_pooler_auto_detection_finds_pgbouncer_in_transaction_mode(fleet: Fleet):
    assert await detect_pooler(fleet.pooled_dsn, 10) == "transaction"
    assert await detect_pooler(fleet.db_dsn, 10) == "none"


async def test_a_serialization_failure_is_retried_whole_behind_pgbouncer(
        fleet: Fleet, fleet_db: asyncpg.Connection):
    key = uuid.uuid4().hex
    async with channel(fleet.address) as ch:
        response = await batch_pb2_grpc.BatchServiceStub(ch).BatchExecute(batch([
            {"id": "e", "insert": {"table": "events", "rows": [
                {"id": "1", "kind": "retried", "score": 1}]}},
            {"id": "conflict", "call": {"handler": "fail_serialization",
                                        "args": {"key": key, "times": 2}}},
        ], isolation="ISOLATION_LEVEL_SERIALIZABLE", request_id=f"retry-{key}"), timeout=30)
    assert response.committed and response.attempts == 3
    assert await fleet_db.fetchval("SELECT count(*) FROM events") == 1


async def test_calls_spread_over_all_replicas(fleet: Fleet):
    """HAProxy in `mode http` balances every HTTP/2 stream, i.e. every call, round robin: one
    channel (one TCP connection to HAProxy) reaches all replicas. A TCP balancer, or a
    Kubernetes ClusterIP Service, would pin each channel to one replica."""
    pids = {r.proc.pid for r in fleet.replicas}
    before = await fleet.haproxy.frontend()
    channels = [channel(fleet.address) for _ in range(4)]
    try:
        async def calls(ch: grpc.aio.Channel) -> list[int]:
            stub = batch_pb2_grpc.BatchServiceStub(ch)
            return [(await whoami(stub))["pid"] for _ in range(15)]

        per_channel = await asyncio.gather(*(calls(ch) for ch in channels))
    finally:
        for ch in channels:
            await ch.close()
    after = await fleet.haproxy.frontend()
    assert int(after["conn_tot"]) - int(before["conn_tot"]) == len(channels)
    for served in per_channel:
        assert set(served) == pids, "each connection's calls went to every replica"
    counts = collections.Counter(pid for served in per_channel for pid in served)
    assert max(counts.values()) - min(counts.values()) <= 3, counts  # round robin: 20 each


async def test_one_request_id_sent_20_times_concurrently_runs_once(fleet: Fleet,
                                                                  fleet_db: asyncpg.Connection):
    request = batch([
        {"id": "customer", "insert": {"table": "customers",
                                      "rows": [{"name": "Once", "email": "once@example.com"}]}},
        {"id": "hold", "call": {"handler": "pause", "args": {"seconds": 0.3}}},
    ], request_id=f"fleet-once-{uuid.uuid4()}")
    in_progress = 0
    channels = [channel(fleet.address) for _ in range(4)]

    async def until_answered(stub: batch_pb2_grpc.BatchServiceStub,
                             ) -> batch_pb2.BatchExecuteResponse:
        nonlocal in_progress
        for attempt in range(60):  # at most ~10 s of backoff
            try:
                return await stub.BatchExecute(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                if BatchFailure(exc).error_info.get("reason") != "REQUEST_IN_PROGRESS":
                    raise
                assert exc.code() == grpc.StatusCode.ABORTED
                in_progress += 1
                await asyncio.sleep(min(0.2, 0.02 * 1.5 ** attempt))
        raise AssertionError("still REQUEST_IN_PROGRESS after 60 tries")

    try:
        stubs = [batch_pb2_grpc.BatchServiceStub(ch) for ch in channels]
        answers = await asyncio.gather(*(until_answered(stubs[i % len(stubs)])
                                         for i in range(20)))
    finally:
        for ch in channels:
            await ch.close()
    assert await fleet_db.fetchval("SELECT count(*) FROM customers") == 1
    assert in_progress > 0, "the 20 calls did overlap"
    assert sum(not a.replayed for a in answers) == 1, "one call ran; the others were replayed"
    stripped = set()
    for answer in answers:
        copy = batch_pb2.BatchExecuteResponse()
        copy.CopyFrom(answer)
        copy.replayed = False
        stripped.add(copy.SerializeToString(deterministic=True))
    assert len(stripped) == 1, "every replay is the first answer"


async def test_independent_stream_resumes_on_another_replica_after_sigkill(
        fleet: Fleet, fleet_db: asyncpg.Connection):
    victim = fleet.replicas[0]
    stream_id = f"fleet-resume-{uuid.uuid4().hex[:12]}"
    first = header(table="events", stream_id=stream_id, **INDEPENDENT)
    chunks = [events(i * 100, 100) for i in range(8)]
    # The first part straight to one replica, so that we know which one to kill.
    async with channel(victim.address) as direct:
        call, opened = await open_stream(batch_pb2_grpc.BatchServiceStub(direct), first)
        assert opened.last_committed_sequence == 0
        for seq in (1, 2, 3):
            ack = (await asyncio.wait_for(send(call, rows_chunk(seq, chunks[seq - 1])), 30)).ack
            assert (ack.sequence, ack.rows_written, ack.duplicate) == (seq, 100, False)
        victim.proc.send(signal.SIGKILL)
        assert await victim.proc.wait(10) == -signal.SIGKILL
        assert await asyncio.wait_for(call.code(), 30) == grpc.StatusCode.UNAVAILABLE
    # The rest through HAProxy, which can only send it to another replica.
    async with channel(fleet.address) as lb:
        call, opened = await asyncio.wait_for(
            open_stream(batch_pb2_grpc.BatchServiceStub(lb), first), 30)
        assert (opened.last_committed_sequence, opened.next_row_index) == (3, 300)
        again = (await asyncio.wait_for(send(call, rows_chunk(3, chunks[2])), 30)).ack
        assert again.duplicate and again.sequence == 3, "an acked chunk is not written twice"
        for seq in range(4, 9):
            ack = (await asyncio.wait_for(send(call, rows_chunk(seq, chunks[seq - 1])), 30)).ack
            assert (ack.sequence, ack.rows_written, ack.duplicate) == (seq, 100, False)
        await call.done_writing()
        summary = (await asyncio.wait_for(call.read(), 30)).summary
        assert summary.last_committed_sequence == 8
    ids = [r["id"] for r in await fleet_db.fetch("SELECT id FROM events ORDER BY id")]
    assert ids == list(range(800)), "rows 0..799, each once"


async def test_draining_one_replica_under_load_fails_no_call(fleet: Fleet,
                                                            fleet_db: asyncpg.Connection):
    """A rolling restart's step: SIGTERM one replica while 64 callers send 10-operation atomic
    batches through HAProxy with the published retry policy. Health goes NOT_SERVING, HAProxy
    takes the replica out, the replica keeps serving for its drain delay, refuses what still
    arrives with UNAVAILABLE before any header (so the client's retry policy sends it to
    another replica), finishes what it has and exits 0. No caller sees an error."""
    victim = fleet.replicas[1]
    callers = 64
    channels = [channel(fleet.address, retries=True) for _ in range(8)]
    load = BatchLoad([batch_pb2_grpc.BatchServiceStub(ch) for ch in channels], callers,
                     "drain", per_caller=400)
    try:
        await wait_until(load.answered_at_least(300), 60, "300 answers before the drain")
        signalled = time.monotonic()
        victim.proc.send(signal.SIGTERM)
        await fleet.haproxy.wait_status({victim.name: "DOWN"}, patience=10)
        taken_out = time.monotonic() - signalled
        down = (await fleet.haproxy.servers())[victim.name]
        code = await victim.proc.wait(DRAIN_DELAY_SECONDS + GRACE_SECONDS + 15)
        await wait_until(load.answered_at_least(load.answered + 300), 60,
                         "300 answers after the drain")
    finally:
        await load.stop()
        for ch in channels:
            await ch.close()
    answered, failures = load.answered, load.failures
    print(f"\ndrain of {victim.name} under {callers} callers: {len(failures)} failed of "
          f"{answered + len(failures)} calls; taken out after {taken_out:.2f}s on "
          f"{down['check_status']}; exit code {code}")
    problems = []
    if failures:
        problems.append(f"{len(failures)} of {answered + len(failures)} calls failed: "
                        f"{dict(collections.Counter(failures))}")
    # HAProxy must have taken the replica out on its NOT_SERVING answer (layer 7), before it
    # refuses work: not on a closed port (L4CON), and within the drain delay.
    check = down["check_status"].lstrip("* ")
    if check != "L7RSP" or taken_out >= DRAIN_DELAY_SECONDS:
        problems.append(f"HAProxy took {victim.name} out after {taken_out:.2f}s on {check} "
                        f"({down['check_desc']}), not on NOT_SERVING within the drain delay "
                        f"({DRAIN_DELAY_SECONDS}s)")
    if code != 0:
        problems.append(f"{victim.name} exited with {code}, not 0")
    assert not problems, "\n".join(problems)
    assert await fleet_db.fetchval("SELECT count(*) FROM events") == answered * 10
