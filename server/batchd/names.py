"""Short names of the contract's enum values, for people rather than protobuf.

The proto's enum values carry their enum's prefix (``OUTCOME_SUCCEEDED``, as buf's STANDARD
lint and the C++ namespace rules want); the Python client's results, the server's JSON logs
and its Prometheus labels say ``SUCCEEDED``, as they did before the prefixes, so that
dashboards and scripts written against them keep working.
"""

from __future__ import annotations

from batchd.v1 import batch_pb2


def outcome_name(outcome: int) -> str:
    """``"SUCCEEDED"`` for ``OUTCOME_SUCCEEDED`` (ValueError for an unknown number)."""
    return str(batch_pb2.Outcome.Name(outcome)).removeprefix("OUTCOME_")
