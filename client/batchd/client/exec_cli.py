"""``batchd exec`` and ``batchd schema``: a batchd server from the command line.

    batchd exec FILE [--target HOST:PORT] [--json] [--mode atomic|independent] [--validate-only]
    batchd schema [--target HOST:PORT] [--json]

FILE (``-``: standard input) is JSON or YAML in the shape of grpcurl's request body,
``{"operations": [...], "mode": "MODE_INDEPENDENT", ...}``; a bare list is taken as the
operations. YAML is read with PyYAML: by the file's extension (``.yaml``/``.yml``), or when the
text is not JSON. Integers beyond ±(2**53-1) and YAML dates are sent as strings, as the
server expects exact values (a JSON double would silently round them). ``--mode`` and
``--validate-only`` override the file. Enum values go by their names since 0.2.0
(``"MODE_INDEPENDENT"``, ``"OPERATOR_EQ"``); a file still using 0.1.0's (``INDEPENDENT``,
``EQ``) is refused with every such name and its replacement (``batchd.names``).

``exec`` prints a table (id, outcome, code, rows affected, first row or message: the client's
decoded values written back as text, ISO 8601 and base64 included), or with ``--json`` the
response as grpcurl would: the wire's JSON (bigint and numeric as strings, each result's
``columns`` with their types), not Python values rendered back, so that what a script reads
is the contract itself, the same from every client. Exit status: 0 when the RPC succeeded and every
operation SUCCEEDED; 1 when the batch failed or any operation did not succeed (the error and
the outcome table go to standard error; ``--json`` still prints the JSON, with an ``"error"``
member when the RPC failed); 2 for usage errors such as an unreadable or invalid FILE.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from google.protobuf import json_format

from batchd import names
from batchd.client import connect
from batchd.client.api import (
    AtomicBatchError,
    BatchdRpcError,
    BatchResult,
    Client,
    OperationOutcome,
    Schema,
)
from batchd.client.builder import mode_name
from batchd.client.proto_values import MAX_SAFE_INTEGER, iso_duration
from batchd.v1 import batch_pb2

COMMANDS: tuple[str, ...] = ("exec", "schema")
DEFAULT_TARGET = "127.0.0.1:50051"
_DETAIL_WIDTH = 80


class UsageError(Exception):
    """The command line or its input file is wrong (exit status 2)."""


def add_commands(commands: Any) -> None:
    """Adds ``exec`` and ``schema`` to the ``batchd`` subcommands."""
    p = commands.add_parser("exec", help="send a batch from a JSON or YAML file")
    p.add_argument("file", metavar="FILE", help="JSON or YAML request; - for standard input")
    p.add_argument("--mode", choices=["atomic", "independent"], help="override the file's mode")
    p.add_argument("--validate-only", action="store_true",
                   help="run everything, then roll back")
    p.add_argument("--request-id", help="idempotency key: a retry with the same id gets the "
                                        "stored answer instead of running again")
    _common(p, "print the response as JSON")
    p = commands.add_parser("schema", help="show the tables and handlers a caller may use")
    _common(p, "print the GetSchema response as JSON")


def _common(parser: argparse.ArgumentParser, json_help: str) -> None:
    connect.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="deadline of the call, seconds (default 60)")


def _client(args: argparse.Namespace) -> Client:
    connection = connect.from_arguments(args)
    return Client(connection.target, timeout=args.timeout, metadata=connection.metadata,
                  credentials=connection.credentials)


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "exec":
            return run_exec(args)
        return run_schema(args)
    except UsageError as exc:
        print(f"batchd {args.command}: {exc}", file=sys.stderr)
        return 2


# --- exec ----------------------------------------------------------------------------------

def run_exec(args: argparse.Namespace) -> int:
    request = load_request(args.file)
    if args.mode:
        request.mode = cast(batch_pb2.Mode, batch_pb2.Mode.Value(mode_name(args.mode)))
    if args.validate_only:
        request.validate_only = True
    if args.request_id:
        request.request_id = args.request_id
    try:
        with _client(args) as client:
            result = client.execute_request(request)
    except BatchdRpcError as err:
        outcomes = err.outcomes if isinstance(err, AtomicBatchError) else None
        if args.json:
            _print_json({"error": _error_dict(err)} | (outcomes.to_dict() if outcomes else {}))
        print(f"batchd exec: {err.code.name}: {err.message}", file=sys.stderr)
        for violation in err.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        if outcomes is not None:
            print(outcome_table(outcomes), file=sys.stderr)
        return 1
    if args.json:
        _print_json(result.to_dict())
    if result.ok:
        if not args.json:
            print(outcome_table(result))
        return 0
    failed = sum(not outcome.succeeded for outcome in result)
    print(f"batchd exec: {failed} of {len(result)} operations did not succeed", file=sys.stderr)
    if not args.json:
        print(outcome_table(result), file=sys.stderr)
    return 1


def load_request(path: str) -> batch_pb2.BatchExecuteRequest:
    """The request in FILE (``-``: stdin); UsageError naming the file and the problem."""
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 text ({exc.reason})") from None
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        document = _parse_yaml(name, text)
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            if suffix == ".json":
                raise UsageError(f"{name}: invalid JSON: {exc}") from None
            document = _parse_yaml(name, text, json_error=exc)
    if isinstance(document, list):
        document = {"operations": document}
    if not isinstance(document, dict):
        raise UsageError(f'{name}: expected an object with "operations", '
                         f"got {type(document).__name__}")
    try:
        request = json_format.ParseDict(_exact(document), batch_pb2.BatchExecuteRequest())
    except json_format.ParseError as exc:
        renamed = names.renamed_enum_values(document, batch_pb2.BatchExecuteRequest)
        if renamed:
            raise UsageError(f"{name}: {names.renamed_message(renamed)}") from None
        raise UsageError(f"{name}: not a BatchExecuteRequest: {exc}") from None
    if not request.operations:
        raise UsageError(f"{name}: no operations")
    return request


def _parse_yaml(name: str, text: str, json_error: Exception | None = None) -> Any:
    try:
        # Imported by name: PyYAML is a dependency, but its type stubs are not.
        yaml = importlib.import_module("yaml")
    except ImportError:
        if json_error is not None:
            raise UsageError(f"{name}: invalid JSON: {json_error}") from None
        raise UsageError(f"{name}: reading YAML needs the cli extra: pip install "
                         "'batchd-client[cli]'") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = "neither JSON nor YAML" if json_error is not None else "invalid YAML"
        raise UsageError(f"{name}: {problem}: {exc}") from None


def _exact(value: Any) -> Any:
    """What JSON/YAML parsers give, made safe for ``ParseDict``: large integers as decimal
    strings (bigint and numeric take them exactly), dates as ISO strings, binary as base64."""
    if isinstance(value, dict):
        return {str(key): _exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_exact(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _error_dict(err: BatchdRpcError) -> dict[str, Any]:
    out: dict[str, Any] = {"code": err.code.name, "message": err.message}
    if err.reason:
        out["reason"] = err.reason
    if err.error_info:
        out["errorInfo"] = err.error_info
    if err.field_violations:
        out["fieldViolations"] = [{"field": v.field, "description": v.description}
                                  for v in err.field_violations]
    return out


def outcome_table(result: BatchResult) -> str:
    """One line per operation: id, outcome, code, rows affected, first row or message."""
    rows = [("id", "outcome", "code", "rows", "detail")]
    rows += [(o.id, o.outcome, o.code.name, str(o.rows_affected), _detail(o)) for o in result]
    footer = f"committed: {'yes' if result.committed else 'no'}, attempts: {result.attempts}"
    return "\n".join([*_align(rows), footer])


def _detail(outcome: OperationOutcome) -> str:
    """A failure's whole message (it is what the reader needs); otherwise the first row,
    cut to fit, and how many more rows there are."""
    if not outcome.succeeded:
        return outcome.message
    # Sorted: a Struct keeps no column order, and the table should be stable.
    text = " ".join(f"{key}={_scalar(value)}" for key, value in sorted((outcome.row or {}).items()))
    if len(text) > _DETAIL_WIDTH:
        text = text[:_DETAIL_WIDTH - 3] + "..."
    if len(outcome.rows) > 1:
        text += f" (+{len(outcome.rows) - 1} more)"
    if outcome.total_count is not None:
        text += f" total_count={outcome.total_count}"
    if outcome.next_page_token:
        text += f" next_page_token={outcome.next_page_token}"
    return text.strip()


def _scalar(value: Any) -> str:
    """A decoded value (int, Decimal, datetime, UUID, bytes, ...) as the table shows it: as
    text, in the forms the server takes them back (ISO 8601, base64)."""
    value = _jsonable(value)
    if isinstance(value, str) and value and not any(c.isspace() or c == "=" for c in value):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    """A Python value of a decoded row as JSON can show it (``json.dumps``' ``default``)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.timedelta):
        return iso_duration(value)
    if value is None or isinstance(value, str | int | float | list | dict):
        return value
    return str(value)  # Decimal, UUID, an IP address: their own text


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# --- schema --------------------------------------------------------------------------------

def run_schema(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            schema = client.schema()
    except BatchdRpcError as err:
        print(f"batchd schema: {err.code.name}: {err.message}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(schema.to_dict())
    else:
        print(schema_text(schema))
    return 0


def schema_text(schema: Schema) -> str:
    """Each table (key, version and soft-delete columns, operations, columns), each SQL
    function (signature, what it returns), then handlers."""
    blocks = []
    for table in schema.tables:
        lines = [
            f"table {table.name}",
            f"  primary key:  {', '.join(table.primary_key)}",
            f"  operations:   {', '.join(table.operations)}",
            f"  version:      {table.version_column or '-'}",
            f"  soft delete:  {table.soft_delete_column or '-'}",
        ]
        columns = [("column", "type", "null", "default")]
        columns += [(c.name, c.type, "yes" if c.nullable else "no",
                     "yes" if c.has_default else "no") for c in table.columns]
        lines += [f"  {line}" for line in _align(columns)]
        blocks.append("\n".join(lines))
    for function in schema.functions:
        columns_text = ", ".join(f"{c.name} {c.type}" for c in function.result_columns)
        defaults = [a.name for a in function.arguments if a.has_default]
        lines = [f"function {function.signature}",
                 f"  returns:      {function.returns}"
                 + (f" ({columns_text})" if columns_text and function.returns != "void"
                    else "")]
        if defaults:
            lines.append(f"  defaults:     {', '.join(defaults)}")
        blocks.append("\n".join(lines))
    blocks.append(f"handlers: {', '.join(schema.handlers) or '(none)'}")
    return "\n\n".join(blocks)
