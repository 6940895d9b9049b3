"""OpenTelemetry for the tests of batchd's tracing: spans kept in memory."""

from __future__ import annotations

from typing import Any

import pytest


def span_exporter(instrumentation: str) -> Any:
    """An in-memory exporter behind this process's tracer provider, for a test of
    ``otel_enabled``; skips the test without the otel extra (``instrumentation``: the module
    batchd's tracing imports, e.g. opentelemetry.instrumentation.grpc), or when another
    provider was set earlier in the process (batchd keeps a provider already set)."""
    pytest.importorskip(instrumentation, reason="the otel extra is not installed")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another tracer provider was set earlier in this process")
    return exporter
