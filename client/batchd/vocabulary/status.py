"""``google.rpc.Status`` both ways: what the caller sees of an error (``to_rpc_status``), and
the error a status stands for (``from_rpc_status``: a stored answer replayed, or what a client
received; ``from_rpc_error``: a failed gRPC call, the clients' one translation of one)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from batchd.vocabulary import DOMAIN, BatchdError, FieldViolation
from batchd.vocabulary import reasons as _r

_S = grpc.StatusCode

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def code_of(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a ``google.rpc.Code`` number (UNKNOWN if there is none)."""
    return _CODES.get(number, _S.UNKNOWN)


def _pack(message: Message) -> any_pb2.Any:
    if isinstance(message, any_pb2.Any):  # packed already (from_rpc_status keeps it so)
        return message
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(err: BatchdError) -> status_pb2.Status:
    """The ``google.rpc.Status`` the caller sees: code, message, ErrorInfo, BadRequest, extras."""
    metadata = dict(err.metadata)
    if err.operation_id is not None:
        metadata["operation_id"] = err.operation_id
    details = [_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN,
                                                 metadata=metadata))]
    if err.violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in err.violations
        ])))
    details.extend(_pack(extra) for extra in err.extra_details)
    return status_pb2.Status(code=err.code.value[0], message=err.full_message, details=details)


class BatchdRpcError(BatchdError):
    """A ``google.rpc.Status`` as an error: what a client received, or a stored answer
    replayed. ``code`` is a ``grpc.StatusCode``; ``reason``, ``error_info`` and
    ``field_violations`` come from the status details, when the server sent any; other details
    stay in ``extra_details`` (see ``detail``). ``to_rpc_status`` gives the status back."""

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "",
                 error_info: dict[str, str] | None = None,
                 field_violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(message, code=code, reason=reason, violations=field_violations,
                         metadata=error_info)
        self.operation_id = self.metadata.get("operation_id")

    @property
    def full_message(self) -> str:
        return self.message  # as sent: it already names its operation

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def from_rpc_status(status: status_pb2.Status) -> BatchdRpcError:
    """The error a ``google.rpc.Status`` stands for (the inverse of ``to_rpc_status``)."""
    error = BatchdRpcError(code_of(status.code), status.message)
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            error.reason = info.reason
            error.metadata = dict(info.metadata)
            error.operation_id = error.metadata.get("operation_id")
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            error.violations = [FieldViolation(v.field, v.description)
                                for v in bad.field_violations]
        else:
            error.extra_details.append(packed)
    return error


def from_rpc_error(exc: grpc.RpcError) -> BatchdRpcError:
    """The error a failed gRPC call (sync or aio) stands for: its ``google.rpc.Status`` when the
    server sent one (rich details: reason, violations, RetryInfo, ...), else the call's own code
    and message (a status gRPC itself made: a connection refused, a deadline passed). grpc_status
    refuses a status whose code or message contradicts the call's; then the call's are kept."""
    try:
        status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    except ValueError:  # details that contradict the call's code or message: ignore them
        status = None
    if status is None:
        # An RpcError that is no call has no code: gRPC's own word for that is UNKNOWN.
        code = exc.code() if hasattr(exc, "code") else _S.UNKNOWN
        message = exc.details() if hasattr(exc, "details") else str(exc)
        status = status_pb2.Status(code=code.value[0], message=message or "")
    return from_rpc_status(status)


def broken_contract(message: str) -> BatchdRpcError:
    """A response that breaks the contract (a stream answered with something else than
    ``StreamOpened``, or ended without its summary): a bug in the server or in a proxy between,
    not the caller's, and not worth a retry. INTERNAL, reason ``UNEXPECTED_RESPONSE``."""
    return BatchdRpcError(_S.INTERNAL, message, reason=_r.UNEXPECTED_RESPONSE)


OK_STATUS = status_pb2.Status(code=0, message="")


def cancelled_code(expired: bool) -> grpc.StatusCode:
    """What a caller sees of a call that ended without an answer: DEADLINE_EXCEEDED if its
    deadline had passed, else CANCELLED (it went away, or the server stopped)."""
    return _S.DEADLINE_EXCEEDED if expired else _S.CANCELLED


def from_cut_stream(error: BatchdRpcError) -> BatchdRpcError:
    """grpc.aio may report a stream whose connection was lost while the client was writing as
    INTERNAL "Internal error from Core" (grpc/grpc#36066). batchd's own INTERNAL errors carry
    an ErrorInfo reason; one without is that, and is what it stands for: UNAVAILABLE."""
    if error.code == _S.INTERNAL and not error.reason:
        return BatchdRpcError(_S.UNAVAILABLE, f"the stream was cut ({error.message})")
    return error


def not_committed(message: str) -> status_pb2.Status:
    """The status of an operation of a failed atomic batch that did not fail itself (ROLLED_BACK
    or NOT_RUN): ABORTED, since the same batch may well succeed when run again."""
    return status_pb2.Status(code=_S.ABORTED.value[0], message=message)
