"""``python -m batchd.healthcheck [HOST:PORT]``: exit 0 if batchd reports SERVING.

Used by the container's HEALTHCHECK; asks the standard gRPC health service, so it sees what a
load balancer sees (NOT_SERVING while draining). It follows the server's own environment: with
BATCHD_TLS_CERT_FILE set it speaks TLS, trusting BATCHD_HEALTHCHECK_CA_FILE (default: the
server's certificate itself, right for a self-signed one); with mTLS
(BATCHD_TLS_CLIENT_CA_FILE) it presents BATCHD_HEALTHCHECK_CERT_FILE / _KEY_FILE. Health needs
no token.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(target: str) -> grpc.Channel:
    env = os.environ
    server_cert = env.get("BATCHD_TLS_CERT_FILE")
    if not server_cert:
        return grpc.insecure_channel(target)

    def read(name: str) -> bytes | None:
        path = env.get(name)
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("BATCHD_HEALTHCHECK_CA_FILE") or Path(server_cert).read_bytes(),
        private_key=read("BATCHD_HEALTHCHECK_KEY_FILE"),
        certificate_chain=read("BATCHD_HEALTHCHECK_CERT_FILE"))
    return grpc.secure_channel(target, credentials)


def check(target: str, timeout: float = 3.0) -> bool:
    with _channel(target) as channel:
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
