"""Clients that balance on their own (round_robin over the replicas' addresses, no HAProxy) see
a draining replica: the published service config turns on gRPC's client-side health checking
(``healthCheckConfig`` naming batchd's health entry), so a replica that answers NOT_SERVING is
taken out of the pick before it refuses work, as HAProxy's gRPC check takes it out of its
own."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
from collections.abc import AsyncIterator

import grpc
import pytest

from batchd.client.channel import service_config
from batchd.v1 import batch_pb2_grpc
from tests.fleet.conftest import DRAIN_DELAY_SECONDS, GRACE_SECONDS, REPLICA_ENV
from tests.fleet.load import BatchLoad
from tests.fleet.processes import Fleet, Replica, replica, wait_until

pytestmark = pytest.mark.fleet


@pytest.fixture
async def replicas(fleet: Fleet) -> AsyncIterator[list[Replica]]:
    """Three replicas of their own (not behind HAProxy), through the fleet's pgbouncer."""
    env = {"BATCHD_DSN": fleet.pooled_dsn, **REPLICA_ENV}
    members = [replica(fleet.workdir, 10 + i, env, GRACE_SECONDS) for i in range(3)]
    for member in members:
        await member.start()
    try:
        await asyncio.gather(*(m.wait_serving() for m in members))
        yield members
    finally:
        for member in members:
            await member.proc.stop()


async def test_a_draining_replica_is_left_out_by_clients_balancing_on_their_own(
        replicas: list[Replica]) -> None:
    """A rolling restart's step with client-side balancing: SIGTERM one of three replicas
    while 32 callers send 10-operation batches over round_robin with the published service
    config for client-side balancing (deploy/grpc-service-config-client-balancing.json: its
    retry policy and health checking). No call fails."""
    target = "ipv4:" + ",".join(r.address for r in replicas)
    options = [("grpc.service_config", json.dumps(service_config(balancing=True))),
               ("grpc.enable_retries", 1), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(4)]
    load = BatchLoad([batch_pb2_grpc.BatchServiceStub(ch) for ch in channels], 32, "balance")
    victim = replicas[0]
    try:
        await wait_until(load.answered_at_least(300), 60, "300 answers before the drain")
        victim.proc.send(signal.SIGTERM)
        code = await victim.proc.wait(DRAIN_DELAY_SECONDS + GRACE_SECONDS + 15)
        await wait_until(load.answered_at_least(load.answered + 300), 60,
                         "300 answers after the drain")
    finally:
        await load.stop()
        for ch in channels:
            await ch.close()
    answered, failures = load.answered, load.failures
    print(f"\nclient-side balancing, drain of {victim.name}: {len(failures)} failed of "
          f"{answered + len(failures)} calls; exit code {code}")
    assert code == 0
    assert not failures, dict(collections.Counter(failures))
