"""Log output: one JSON object per line for machines, plain text for a person at a terminal.

``log_format`` (setting ``BATCHD_LOG_FORMAT``): ``json``, ``text``, or ``auto`` (the default:
text when standard error is a terminal, JSON otherwise — a container, a service manager, a
pipe). A JSON line has ``timestamp`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, every
field passed with ``extra=`` (request_id, principal, method, operations, duration_ms, code,
...), and ``exception`` when there is a traceback:

    {"timestamp": "2026-11-22T10:15:02.120Z", "level": "INFO", "logger": "batchd.service",
     "message": "BatchExecute OK", "request_id": "5f0c...", "principal": "anonymous",
     "method": "/batchd.v1.BatchService/BatchExecute", "operations": 4, "duration_ms": 3.1,
     "code": "OK", "outcomes": {"SUCCEEDED": 4}}
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["auto", "json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def wants_json(log_format: LogFormat) -> bool:
    if log_format == "auto":
        return not sys.stderr.isatty()
    return log_format == "json"


def configure(log_format: LogFormat) -> None:
    """Give the root logger's handlers the formatter ``log_format`` asks for."""
    formatter = JsonFormatter() if wants_json(log_format) else logging.Formatter(TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
