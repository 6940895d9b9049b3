"""``python -m batchd.healthcheck [HOST:PORT]``: exit 0 if batchd reports SERVING.

Used by the container's HEALTHCHECK; asks the standard gRPC health service, so it sees what a
load balancer sees (NOT_SERVING while draining).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, timeout: float = 3.0) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service="batchd.v1.BatchService"),
                               timeout=timeout)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else \
        f"127.0.0.1:{os.environ.get('BATCHD_PORT', '50051')}"
    return 0 if check(target) else 1


if __name__ == "__main__":
    sys.exit(main())
