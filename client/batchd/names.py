"""Short names of the contract's enum values, for people rather than protobuf.

The proto's enum values carry their enum's prefix (``OUTCOME_SUCCEEDED``, as buf's STANDARD
lint and the C++ namespace rules want); the Python client's results, the server's JSON logs
and its Prometheus labels say ``SUCCEEDED``, as they did before the prefixes, so that
dashboards and scripts written against them keep working.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor
from google.protobuf.message import Message

from batchd.v1 import batch_pb2


def outcome_name(outcome: int) -> str:
    """``"SUCCEEDED"`` for ``OUTCOME_SUCCEEDED`` (ValueError for an unknown number)."""
    return str(batch_pb2.Outcome.Name(outcome)).removeprefix("OUTCOME_")


# --- names from 0.1.0 ------------------------------------------------------------------------
# 0.2.0 gave every enum value its enum's prefix (CHANGELOG.md): "EQ" became "OPERATOR_EQ",
# "SUCCEEDED" "OUTCOME_SUCCEEDED", "INDEPENDENT" "MODE_INDEPENDENT", "DO_NOTHING"
# "ACTION_DO_NOTHING". The binary wire kept its numbers; JSON, which carries names, did not.


def _prefix(enum: EnumDescriptor) -> str:
    """OPERATOR_ for Filter.Operator, ISOLATION_LEVEL_ for IsolationLevel."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def current_name(enum: EnumDescriptor, old: str) -> str | None:
    """The name since 0.2.0 of ``old``, a value's name without its enum's prefix as 0.1.0 wrote
    it (any case): ``"OPERATOR_EQ"`` for ``"EQ"``; None if ``old`` is no such name."""
    new = _prefix(enum) + old.upper()
    return new if old not in enum.values_by_name and new in enum.values_by_name else None


def renamed_enum_values(document: Any, message: type[Message]) -> list[tuple[str, str, str]]:
    """Every enum value in ``document`` (the JSON form of a ``message``, as grpcurl and
    ``batchd exec`` take it) spelled as in 0.1.0: (field path, old name, new name)."""
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]  # upb or python
    return _renamed(document, descriptor, "")


def _renamed(document: Any, message: Descriptor, path: str) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    if not isinstance(document, dict):
        return found
    for key, value in document.items():
        field = message.fields_by_name.get(key) or next(
            (f for f in message.fields if f.json_name == key), None)
        if field is None:
            continue
        where = f"{path}.{field.name}" if path else field.name
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            at = where if index is None else f"{where}[{index}]"
            if field.enum_type is not None and isinstance(item, str):
                new = current_name(field.enum_type, item)
                if new is not None:
                    found.append((at, item, new))
            elif field.message_type is not None and \
                    field.message_type.full_name.startswith("batchd."):
                found.extend(_renamed(item, field.message_type, at))
    return found


def renamed_message(found: list[tuple[str, str, str]]) -> str:
    """One sentence naming each 0.1.0 name and its replacement."""
    listed = ", ".join(f'{path} "{old}" is now "{new}"' for path, old, new in found[:5])
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    return f"enum names from 0.1.0, renamed in 0.2.0 (see CHANGELOG.md): {listed}{more}"
