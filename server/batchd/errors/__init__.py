"""Errors, as the server sees them: the shared vocabulary (``batchd.vocabulary``, in the
``batchd-client`` distribution: the error tree, codes, reasons, ``google.rpc.Status`` both ways),
and what only the server does with it, turning foreign exceptions into ours.

One function turns foreign exceptions into ours (``translate``: ours as they are, asyncpg's
through ``from_database``, most specific SQLSTATE first, then its class; anything else is a bug,
logged, and INTERNAL for the caller). ``database`` holds ``DatabaseError`` and
``from_database``, the one module here that imports asyncpg. Server code imports everything
from ``batchd.errors``; the tree itself is drawn in ``batchd.vocabulary``'s docstring.
"""

from __future__ import annotations

import logging

from batchd.errors.database import DatabaseError, from_database
from batchd.vocabulary import *  # noqa: F403
from batchd.vocabulary import BatchdError, Internal
from batchd.vocabulary import __all__ as _shared

__all__ = [*_shared, "DatabaseError", "from_database", "translate"]

log = logging.getLogger(__name__)


def translate(exc: BaseException, request_id: str) -> BatchdError:
    """Any exception as the error its caller sees: ours as they are, the database's mapped,
    anything else a bug (logged with its traceback; INTERNAL with the request id)."""
    if isinstance(exc, BatchdError):
        return exc
    mapped = from_database(exc)
    if mapped is not None:
        return mapped
    log.error("unexpected error in request %s", request_id, exc_info=exc)
    return Internal(request_id)
