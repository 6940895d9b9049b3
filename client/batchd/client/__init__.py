"""The Python client of batchd: ``AsyncClient``, ``Client``, the ``Batch`` builder, typed
results and errors (``batchd.client.api``), and the ``batchd`` command (``cli``: ``exec_cli``,
``ingest_cli``; install the ``batchd-client[cli]`` extra for their progress bar and YAML).

Part of the ``batchd-client`` distribution (client/pyproject.toml says why the layout), which
imports nothing of the server: what it shares with it is the generated contract
(``batchd.v1``) and the error vocabulary (``batchd.vocabulary``).

The names above are loaded when first used (PEP 562): ``import batchd.client`` loads neither
grpc nor protobuf (together ~90 ms, more than a command-line tool such as ``batchd --help``
should wait), and ``from batchd.client import Client`` loads them then. The same holds for the
submodules, as attributes of this package."""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (mypy reads any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from batchd.client.api import (
        AckedChunk,
        ArgumentSchema,
        AsyncClient,
        AtomicBatchError,
        Batch,
        BatchdError,
        BatchdRpcError,
        BatchResult,
        Client,
        ColumnSchema,
        FieldViolation,
        FunctionSchema,
        IngestResult,
        OperationOutcome,
        OpRef,
        RejectedRow,
        RetryEvent,
        RetryPolicy,
        Schema,
        TableSchema,
        all_of,
        any_of,
        not_,
        rpc_error,
    )

# batchd.client.api's public names (tests/unit/test_client_distribution.py keeps them equal).
__all__ = ["AckedChunk", "ArgumentSchema", "AsyncClient", "AtomicBatchError", "Batch",
           "BatchResult", "BatchdError", "BatchdRpcError", "Client", "ColumnSchema",
           "FieldViolation", "FunctionSchema", "IngestResult", "OpRef", "OperationOutcome",
           "RejectedRow", "RetryEvent", "RetryPolicy", "Schema", "TableSchema", "all_of", "any_of",
           "not_", "rpc_error"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("batchd.client.api"), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
