"""How the Python clients open their channel: targets, keepalive, and the service config.

``service_config.json`` (next to this module, shipped in the wheel) is the published gRPC
service config of batchd, for callers in any language: round-robin over the resolved
addresses, and for BatchExecute and GetSchema a 30 s timeout and grpc's retry policy on
UNAVAILABLE (5 attempts, backoff 0.05 s doubling to 2 s). BatchStream has none: a stream is
resumed by its stream id, by the application (``batchd.client.ingest``). The Python clients use
the same file with ``grpc.enable_retries``, minus its timeouts (they set a deadline on every
call themselves, and a service-config timeout would cap a longer one) and minus the retry
policy of BatchExecute (see ``NOT_RETRIED_BY_GRPC``): their own retries (``batchd.client.retry``)
cover it, knowing which requests are replayed rather than run twice.

Keepalive: a ping after ``keepalive_seconds`` (default 30) without reads, only while calls
are open, as often as needed (``grpc.http2.max_pings_without_data`` 0), and the connection is
dropped when the ping gets no answer within 20 s: a call on a dead connection fails (and is
retried) within a minute instead of hanging. batchd accepts pings every 20 s
(``grpc.http2.min_ping_interval_without_data_ms`` in batchd.app); a gRPC server with default
settings accepts them only every 5 minutes and answers more frequent ones with GOAWAY
"too_many_pings", failing the calls in flight: against such a server (a proxy terminating
HTTP/2 with default settings), pass ``keepalive_seconds=300``.

Why 30 s and not the 5 minutes a default server tolerates: batchd's calls hold things a dead
connection must not keep waiting on — a stream whose acks resume it, a batch whose deadline
may be minutes away, a replica that was SIGKILLed or a NAT that dropped the flow without a
FIN. At 5 minutes such a call hangs until its deadline; at 30 s it fails within a minute and
is retried or resumed. A ping every 30 s costs nothing next to that, and batchd is configured
to accept it (tried against ``batchd serve``: a stream idle for 75 s with pings every 30 s
stays open; pings every 5 s get GOAWAY "too_many_pings").
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import grpc

__all__ = ["KEEPALIVE_SECONDS", "balances_itself", "channel_options", "resolve_target",
           "service_config"]

SERVICE_CONFIG_FILE = "service_config.json"
KEEPALIVE_SECONDS = 30.0
KEEPALIVE_TIMEOUT_MS = 20_000
MAX_MESSAGE_BYTES = 64 << 20
# grpc re-sends a call that failed UNAVAILABLE before response headers arrived. That includes a
# BatchExecute that ran and committed, when its response headers were lost with the connection
# (tests/integration/test_client_retries.py shows it): safe only for a request that is replayed,
# not run again, which grpc cannot tell. The Python client leaves BatchExecute to
# batchd.client.retry.
NOT_RETRIED_BY_GRPC = frozenset({"BatchExecute"})


# gRPC's client-side health checking, for clients that balance over the replicas themselves:
# a replica whose batchd.v1.BatchService entry says NOT_SERVING (draining, or its PostgreSQL
# away) leaves the round-robin pick before it refuses work, as HAProxy's gRPC check takes it out
# of its own. Not for a client behind a load balancer (one address: HAProxy, a Kubernetes
# Service): its health stream would reach one replica through the balancer, and that replica's
# drain would mark the whole balancer unhealthy (every call failing UNAVAILABLE "backend
# unhealthy" for a moment: tests/fleet/test_fleet.py saw 44 of ~2,000 calls fail so).
HEALTH_CHECK_CONFIG = {"serviceName": "batchd.v1.BatchService"}


def service_config(*, balancing: bool = False) -> dict[str, Any]:
    """The published service config (``batchd/client/service_config.json``); ``balancing``:
    for a client that balances over the replicas itself, with health checking
    (``HEALTH_CHECK_CONFIG``; deploy/grpc-service-config-client-balancing.json)."""
    # Imported here: importlib.resources brings pathlib, tempfile and zipfile, ~10 ms that
    # ``import batchd.client`` need not pay before a channel is opened.
    from importlib import resources

    text = resources.files("batchd.client").joinpath(SERVICE_CONFIG_FILE).read_text("utf-8")
    config: dict[str, Any] = json.loads(text)
    if balancing:
        config["healthCheckConfig"] = dict(HEALTH_CHECK_CONFIG)
    return config


def balances_itself(target: str) -> bool:
    """Whether a target names several replicas for the client to balance over (a static
    ``ipv4:`` / ``ipv6:`` list, what ``resolve_target`` makes of several addresses). A DNS name
    may be a load balancer's: pass ``client_health_check=True`` for a headless one."""
    return target.startswith(("ipv4:", "ipv6:")) and "," in target


def python_service_config(*, balancing: bool = False) -> dict[str, Any]:
    """The service config the Python clients use: the published one without its timeouts and
    without grpc's retry policy for BatchExecute (``batchd.client.retry`` decides, per request,
    what is safe to send again)."""
    config = service_config(balancing=balancing)
    methods: list[dict[str, Any]] = []
    for method in config.get("methodConfig", []):
        method.pop("timeout", None)
        names = method.get("name", [])
        ours = [n for n in names if n.get("method") in NOT_RETRIED_BY_GRPC]
        if ours and "retryPolicy" in method:
            rest = [n for n in names if n not in ours]
            if rest:
                methods.append(method | {"name": rest})
            methods.append({k: v for k, v in method.items() if k != "retryPolicy"}
                           | {"name": ours})
        else:
            methods.append(method)
    config["methodConfig"] = methods
    return config


def resolve_target(target: str | Sequence[str]) -> str:
    """The gRPC target for one address or several.

    One string is used as it is (``"host:port"``, ``"dns:///name:port"``, ``"unix:path"``,
    ``"ipv4:a:p,b:p"``, ...). Several addresses must be IP literals (``"10.0.0.1:50051"``,
    ``"[::1]:50051"``): they become one static ``ipv4:`` / ``ipv6:`` target, which the service
    config's ``round_robin`` spreads calls over. For a host name with several addresses, give
    ``"dns:///name:port"``: round_robin applies to what DNS returns.
    """
    if isinstance(target, str):
        return target
    targets = list(target)
    if not targets:
        raise ValueError("no target given")
    if len(targets) == 1:
        return targets[0]
    families = {_family(t) for t in targets}
    if len(families) != 1:
        raise ValueError(f"targets mix IPv4 and IPv6 addresses: {targets}")
    return f"{families.pop()}:{','.join(targets)}"


def _family(target: str) -> str:
    """``"ipv4"`` or ``"ipv6"`` for an IP literal with a port (IPv6 in brackets)."""
    host, sep, port = target.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        address = None
    if address is None or not sep or not port.isdigit() or bracketed != (address.version == 6):
        raise ValueError(
            f"{target!r}: several targets must each be an IP address and port ('10.0.0.1:50051', "
            "'[::1]:50051'); for a host name with several addresses give one target "
            "'dns:///name:port' (calls are spread round-robin over its addresses)")
    return f"ipv{address.version}"


def channel_options(options: Sequence[tuple[str, Any]] = (),
                    keepalive_seconds: float | None = KEEPALIVE_SECONDS, *,
                    balancing: bool = False) -> list[tuple[str, Any]]:
    """The clients' channel options: the service config with retries on (and, ``balancing``
    over the replicas itself, client-side health checking), keepalive (None: none), 64 MiB
    messages; any of them overridden by ``options`` (a ``("grpc.service_config", json)`` of
    your own, ``("grpc.enable_retries", 0)``, ...)."""
    chosen: dict[str, Any] = {
        "grpc.enable_retries": 1,
        "grpc.service_config": json.dumps(python_service_config(balancing=balancing)),
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    }
    if keepalive_seconds is not None:
        chosen.update({
            "grpc.keepalive_time_ms": int(keepalive_seconds * 1000),
            "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
            "grpc.keepalive_permit_without_calls": 0,
            "grpc.http2.max_pings_without_data": 0,
        })
    chosen.update(dict(options))
    return list(chosen.items())


def aio_channel(target: str, credentials: grpc.ChannelCredentials | None,
                options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options)
    return grpc.aio.insecure_channel(target, options)


def sync_channel(target: str, credentials: grpc.ChannelCredentials | None,
                 options: list[tuple[str, Any]]) -> grpc.Channel:
    if credentials is not None:
        return grpc.secure_channel(target, credentials, options)
    return grpc.insecure_channel(target, options)
