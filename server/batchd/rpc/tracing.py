"""OpenTelemetry tracing of the gRPC server and of the HTTP one (batchd.http): optional
(``pip install 'batchd[otel]'``).

With ``otel_enabled`` the server gets OpenTelemetry's grpc.aio server interceptor: one span
per RPC, continuing the caller's trace from its ``traceparent`` metadata. It is passed to this
server only (``aio_server_interceptor``), not patched into every ``grpc.aio.server`` of the
process as ``GrpcAioInstrumentorServer().instrument()`` would.

Where spans go: if the process already set a tracer provider (an embedding program, or
``opentelemetry-instrument``), that one. Otherwise batchd sets the SDK's, named by
``OTEL_SERVICE_NAME`` (default ``batchd``), exporting as ``OTEL_TRACES_EXPORTER`` says:
``otlp`` (the default; the OTLP exporter, configured by the usual ``OTEL_EXPORTER_OTLP_*``
variables) or ``console``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def server_interceptors(enabled: bool) -> list[Any]:
    """The tracing interceptor, or nothing (disabled, or the extra is not installed)."""
    if not enabled:
        return []
    try:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        log.warning("otel_enabled is set but OpenTelemetry is not installed "
                    "(pip install 'batchd[otel]'): no tracing")
        return []
    _ensure_provider()
    return [aio_server_interceptor()]  # type: ignore[no-untyped-call,unused-ignore]


def asgi_app(app: Any, enabled: bool) -> Any:
    """The HTTP server's ASGI application, traced (OpenTelemetry's ASGI middleware: one span per
    request, continuing the caller's ``traceparent`` header) when ``enabled`` and installed."""
    if not enabled:
        return app
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        log.warning("otel_enabled is set but opentelemetry-instrumentation-asgi is not "
                    "installed (pip install 'batchd[otel]'): no tracing of HTTP calls")
        return app
    _ensure_provider()
    return OpenTelemetryMiddleware(app)


def _ensure_provider() -> None:
    from opentelemetry import trace  # type: ignore[attr-defined,unused-ignore]
    from opentelemetry.sdk.resources import Resource  # type: ignore[import-not-found,unused-ignore]
    from opentelemetry.sdk.trace import TracerProvider  # type: ignore[import-not-found,unused-ignore]
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter  # type: ignore[import-not-found,unused-ignore]

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # someone configured tracing already: theirs
    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "batchd")}))
    exporter: Any = None
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # type: ignore[import-not-found,unused-ignore]
            exporter = OTLPSpanExporter()
        except ImportError:
            log.warning("no OTLP exporter installed (opentelemetry-exporter-otlp-proto-grpc): "
                        "spans are made but not exported")
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
