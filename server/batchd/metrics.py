"""Prometheus metrics: what they are, how they are counted, and the scrape endpoint.

Every ``App`` owns one ``Metrics`` with its own ``CollectorRegistry`` (never the process-wide
default one), so several servers in one process — the tests start a few — never collide.

    batchd_rpcs_total{method,code}              RPCs finished, by full method name and status
    batchd_rpc_duration_seconds{method}         RPC latency (histogram, 1 ms .. 30 s)
    batchd_operations_total{kind,outcome}       BatchExecute operations by kind and outcome
    batchd_rows_ingested_total{table}           rows BatchStream committed, by table
    batchd_in_flight{rpc}                       BatchExecute / BatchStream calls in progress
    batchd_pool_connections{state}              pool connections in_use / idle (read at scrape)

RPCs are counted by ``batchd.rpc.interceptors.MetricsInterceptor``; operations, rows and in-flight
calls by the servicer (``batchd.rpc.service``), which knows what a request and its answer hold.
The endpoint is prometheus_client's WSGI server in a daemon thread, so scraping never runs on
the event loop; ``stop`` shuts it down.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from batchd.names import outcome_name
from batchd.v1 import batch_pb2

log = logging.getLogger(__name__)

# From a 1 ms get to a 30 s statement timeout; streams that last longer land in +Inf.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
# A batch refused whole (no per-operation results: a malformed request, an internal error).
REFUSED = "NOT_RUN"
# A batch whose caller went away (or whose deadline passed) before it answered.
CANCELLED = "CANCELLED"
_OUTCOME_NAMES = {number: outcome_name(number) for number in batch_pb2.Outcome.values()}
SUCCEEDED = _OUTCOME_NAMES[batch_pb2.OUTCOME_SUCCEEDED]


class PoolCollector(Collector):
    """``batchd_pool_connections{state}``, read from the pool when scraped (never stale)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterable[GaugeMetricFamily]:
        # Two plain attribute reads on the pool: safe from the scrape thread.
        size, idle = self.pool.get_size(), self.pool.get_idle_size()
        family = GaugeMetricFamily("batchd_pool_connections",
                                   "Database pool connections by state.", labels=["state"])
        family.add_metric(["in_use"], size - idle)
        family.add_metric(["idle"], idle)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter("batchd_rpcs", "RPCs finished, by full method name and status code.",
                            ["method", "code"], registry=self.registry)
        self.rpc_duration = Histogram("batchd_rpc_duration_seconds", "RPC latency.",
                                      ["method"], buckets=LATENCY_BUCKETS,
                                      registry=self.registry)
        self.operations = Counter("batchd_operations",
                                  "BatchExecute operations, by kind and outcome.",
                                  ["kind", "outcome"], registry=self.registry)
        self.rows_ingested = Counter("batchd_rows_ingested",
                                     "Rows committed by BatchStream, by table.", ["table"],
                                     registry=self.registry)
        self.in_flight = Gauge("batchd_in_flight", "BatchExecute / BatchStream calls in "
                               "progress.", ["rpc"], registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        # Labelled children by (metric, label values), as ``child`` hands them out.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, kept: prometheus_client validates and locks on every
        ``labels`` call, which costs more than the increment it is for, several times per
        call. For bounded label values (methods, codes, kinds, outcomes, RPC names); and
        prometheus_client keeps every child it made anyway."""
        key = (id(metric), values)  # the metrics live as long as this object
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        self.registry.register(PoolCollector(pool))

    def count_operations(self, request: batch_pb2.BatchExecuteRequest,
                         response: batch_pb2.BatchExecuteResponse | None,
                         outcome: str = REFUSED) -> dict[str, int]:
        """Count every operation of ``request`` by kind, with its outcome from ``response``
        (the answer, or the one packed in a failed atomic batch's details), or ``outcome``
        when there is none. Returns how many operations had each outcome."""
        if (response is not None and response.committed
                and request.mode != batch_pb2.MODE_INDEPENDENT):
            # A committed atomic batch: all or nothing, so every operation SUCCEEDED (no need
            # to read each result).
            kinds: Tally[str] = Tally(operation.WhichOneof("kind") or "unspecified"
                                      for operation in request.operations)
            for kind, count in kinds.items():
                self.child(self.operations, kind, SUCCEEDED).inc(count)
            return {SUCCEEDED: len(request.operations)} if request.operations else {}
        outcomes = {r.id: _OUTCOME_NAMES[r.outcome] for r in response.results} \
            if response is not None else {}
        # Tallied first, then one increment per (kind, outcome): looking a labelled child up
        # costs more than counting, and a batch's operations share a few of them.
        pairs: Tally[tuple[str, str]] = Tally(
            (operation.WhichOneof("kind") or "unspecified", outcomes.get(operation.id, outcome))
            for operation in request.operations)
        tally: Tally[str] = Tally()
        for (kind, result), count in pairs.items():
            self.child(self.operations, kind, result).inc(count)
            tally[result] += count
        return dict(tally)

    # --- the scrape endpoint ------------------------------------------------------------------

    def serve(self, host: str, port: int, *, required: bool = True) -> None:
        """Serve ``/metrics`` on host:port from a daemon thread (port 0: don't).

        When the port is taken, a ``required`` endpoint (one the operator configured) fails the
        start; the default one only logs a warning, so that the zero-configuration server never
        refuses to start over a port nobody asked it for."""
        if port == 0:
            return
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            if required:
                raise OSError(f"metrics endpoint: cannot listen on {host}:{port}: {exc}") \
                    from exc
            log.warning("no metrics endpoint: cannot listen on %s:%d (%s); set metrics_port "
                        "(0: none)", host, port, exc)
            return
        log.info("metrics on http://%s:%d/metrics", host, port)

    @property
    def serving(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        """Stop the endpoint (blocks up to the end of a scrape in progress: call it off the
        event loop)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
