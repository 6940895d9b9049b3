"""What every HTTP call shares with gRPC's: who is calling (the same ``Authenticator``, from
the same ``authorization: Bearer`` header), the call as batchd.rpc.calls sees it (``HttpCall``),
and errors on the wire: the ``google.rpc.Status`` that ``to_rpc_status`` makes for gRPC, as a
Connect error (same code, message and details: ErrorInfo, BadRequest, RetryInfo...) or as the
JSON of the curl ingest.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf import descriptor_pool, json_format, message_factory
from protobuf.wkt import Any as WireAny

from batchd.errors import BatchdError, code_of, to_rpc_status
from batchd.principals import Principal
from batchd.rpc.auth import Authenticator
from batchd.rpc.calls import REQUEST_ID_HEADER, request_id_from


class HttpCall:
    """One HTTP call as batchd.rpc.calls sees it."""

    __slots__ = ("_ends", "context", "principal", "request_id")

    def __init__(self, request_id: str, principal: Principal | None,
                 timeout_ms: float | None = None) -> None:
        self.request_id = request_id
        self.principal = principal
        self.context = None
        self._ends = (None if timeout_ms is None
                      else asyncio.get_running_loop().time() + timeout_ms / 1000)

    def time_remaining(self) -> float | None:
        if self._ends is None:
            return None
        return self._ends - asyncio.get_running_loop().time()

    async def admitted(self) -> None:
        """Nothing to do: an HTTP answer's status line goes with its body."""


class Gatekeeper:
    """Authentication of HTTP calls, as gRPC's interceptor does it (batchd.rpc.auth): off
    without tokens and client CA; a presented token always checked. Over HTTP the principal
    comes from a bearer token; a client certificate's CN is used where the ASGI server reports
    it (the ``tls`` extension)."""

    def __init__(self, enabled: bool, authenticator: Authenticator) -> None:
        self.enabled = enabled
        self.authenticator = authenticator

    def principal(self, headers: Iterable[tuple[str, str]], scope: dict[str, Any],
                  ) -> Principal | None:
        """The caller, or None when authentication is off; ``Unauthenticated`` if refused."""
        if not self.enabled:
            return None
        return self.authenticator.authenticate(
            [(key.lower(), value) for key, value in headers], _auth_context(scope))


def _auth_context(scope: dict[str, Any]) -> dict[str, list[bytes]]:
    tls = (scope.get("extensions") or {}).get("tls") or {}
    name = tls.get("client_cert_name") or ""
    for part in name.split(","):  # RFC 4514: "CN=alice,O=..."
        key, _, value = part.strip().partition("=")
        if key.upper() == "CN" and value:
            return {"x509_common_name": [value.encode()]}
    return {}


def call_of(headers: Iterable[tuple[str, str]], principal: Principal | None,
            timeout_ms: float | None = None) -> HttpCall:
    pairs = [(key.lower(), value) for key, value in headers]
    return HttpCall(request_id_from(pairs), principal, timeout_ms)


def connect_error(error: BatchdError) -> ConnectError:
    """The Connect error of ``error``: the same Status gRPC sends."""
    status = to_rpc_status(error)
    details = [WireAny(type_url=d.type_url, value=d.value) for d in status.details]
    return ConnectError(Code[code_of(status.code).name.replace("CANCELLED", "CANCELED")],
                        status.message, details)


def error_json(error: BatchdError) -> dict[str, Any]:
    """``error`` as JSON for the plain HTTP routes: Connect's error shape (code, message,
    details with type and base64 value) plus each detail decoded (``debug``), as Connect's
    own servers do, so that curl users read it at once."""
    status = to_rpc_status(error)
    details = []
    for detail in status.details:
        entry: dict[str, Any] = {"type": detail.type_url.rpartition("/")[2],
                                 "value": base64.b64encode(detail.value).decode().rstrip("=")}
        decoded = _decoded(detail)
        if decoded is not None:
            entry["debug"] = decoded
        details.append(entry)
    return {"code": code_of(status.code).name.lower().replace("cancelled", "canceled"),
            "message": status.message, "details": details}


def _decoded(detail: Any) -> Any:
    """A detail as JSON, if its type is known here (batchd's and google.rpc's are)."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(
            detail.type_url.rpartition("/")[2])
        message = message_factory.GetMessageClass(descriptor)()
        detail.Unpack(message)
        return json_format.MessageToDict(message)
    except Exception:  # a detail type this process does not know: its bytes suffice
        return None


async def send_json(send: Any, status: int, body: Any,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole JSON answer on an ASGI ``send``."""
    data = json.dumps(body, indent=1).encode() + b"\n"
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


HTTP_STATUS = {  # Connect's mapping of codes to HTTP statuses
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
    "not_found": 404, "already_exists": 409, "permission_denied": 403,
    "resource_exhausted": 429, "failed_precondition": 400, "aborted": 409,
    "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}

__all__ = ["HTTP_STATUS", "REQUEST_ID_HEADER", "Gatekeeper", "HttpCall", "call_of",
           "connect_error", "error_json", "send_json"]
