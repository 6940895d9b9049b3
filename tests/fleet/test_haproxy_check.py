"""HAProxy's gRPC health check (deploy/haproxy/haproxy.cfg) against a real grpc.aio health
service in this process: the hand-written HTTP/2 bytes are understood by a gRPC server, and the
answer decides — NOT_SERVING takes the server out at once, SERVING brings it back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.fleet.conftest import DRAIN_DELAY_SECONDS, require_tools
from tests.fleet.processes import SERVICE, HAProxy, free_port

pytestmark = pytest.mark.fleet
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def health_service() -> AsyncIterator[tuple[str, health.aio.HealthServicer]]:
    """Only the standard health service, on a free port: SERVING for batchd's service name."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set(SERVICE, SERVING)
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


@pytest.fixture
async def haproxy(health_service: tuple[str, health.aio.HealthServicer],
                  tmp_path: Path) -> AsyncIterator[HAProxy]:
    """HAProxy with the health service as replica1; replica2 and 3 are ports nobody serves."""
    require_tools()
    nobody = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    lb = HAProxy.create(tmp_path, [health_service[0], *nobody])
    try:
        await lb.start()
        yield lb
    finally:
        await lb.stop()


async def test_haproxy_takes_a_not_serving_replica_out_at_once_and_a_serving_one_back_in(
        health_service: tuple[str, health.aio.HealthServicer], haproxy: HAProxy):
    _, servicer = health_service
    await haproxy.wait_status({"replica1": "UP", "replica2": "DOWN", "replica3": "DOWN"})
    down = (await haproxy.servers())["replica2"]
    assert down["check_status"].lstrip("* ") == "L4CON", down  # refused: nothing listens

    # The overall entry does not matter: HAProxy asks for the batch service.
    await servicer.set("", NOT_SERVING)
    await servicer.set(SERVICE, NOT_SERVING)
    changed = time.monotonic()
    await haproxy.wait_status({"replica1": "DOWN"}, patience=5)
    taken_out = time.monotonic() - changed
    server = (await haproxy.servers())["replica1"]
    # L7RSP: the check read an answer and it was not SERVING (not a timeout: L7TOUT).
    assert server["check_status"].lstrip("* ") == "L7RSP", server
    assert taken_out < min(1.5, DRAIN_DELAY_SECONDS), f"taken out after {taken_out:.2f}s"

    await servicer.set(SERVICE, SERVING)
    await haproxy.wait_status({"replica1": "UP"}, patience=5)  # rise 2: two good checks
    assert (await haproxy.servers())["replica1"]["check_status"].lstrip("* ") == "L7OK"
