"""Who is calling, and what they may do: principals and their scopes.

A ``Principal`` is an authenticated caller (batchd.rpc.auth finds it from a bearer token or a
client certificate; None everywhere below means "authentication is off"). This module knows
nothing of gRPC: the planner (batchd.batch.plan), the stream session and GetSchema
(batchd.describe) ask it, before anything runs, whether a principal's scopes cover what a
request does.

Authorization (scopes), per operation:

    admin | *                     everything
    read:<schema.table pattern>   get, query
    write:<schema.table pattern>  insert, update, delete; BatchStream ingest into the table
    call:<handler pattern>        call operations of custom handlers with a matching name
    call:<schema.function pattern>  call operations of exposed SQL functions

Patterns are ``fnmatch`` patterns, case-sensitive like PostgreSQL identifiers, on the
qualified table name (``read:public.*``, ``write:public.orders``, ``read:*``), the handler
name (``call:reserve_*``) or the qualified function name (``call:api.*``). A handler's name
has no dot and a function's always has one (it is qualified before matching), so
``call:api.*`` covers no handler; ``call:*`` covers both. ``write`` does not imply ``read``. A
``call`` runs whatever SQL its handler or function runs: granting ``call:X`` trusts X. The
check uses the table or function name as written in the request, qualified with
``default_schema``, so an operation outside the caller's scopes is PERMISSION_DENIED whether or
not the table or function exists (scopes never reveal the catalog).
``plan_batch`` records the denial on the operation's step: an ATOMIC batch is refused before
anything runs, an INDEPENDENT one fails just that operation. GetSchema lists only the tables,
operation kinds, handlers and functions the caller's scopes cover.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from typing import Any

from batchd.catalog import qualified
from batchd.errors import PermissionDenied
from batchd.kinds.base import Kind
from batchd.kinds.registry import access_of


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a token's ``principal`` or a client certificate's CN."""

    name: str
    scopes: tuple[str, ...]
    via: str  # "token" or "certificate"
    role: str | None = None  # the database role its work runs as (None: batchd's own)

    def allows(self, access: str, target: str) -> bool:
        """Whether a scope grants ``access`` ("read", "write", "call") on ``target``
        ("schema.table", a handler name, or "schema.function"). ``admin`` and ``*`` grant
        everything."""
        for scope in self.scopes:
            if scope in ("admin", "*"):
                return True
            verb, _, pattern = scope.partition(":")
            if verb == access and fnmatch.fnmatchcase(target, pattern):
                return True
        return False

    def may(self, kind: str, target: str) -> bool:
        """Whether operation ``kind`` (insert, get, ...) is allowed on ``target``; kinds this
        module does not know need ``admin``."""
        return self.allows(access_of(kind), target)


def hash_token(token: str) -> str:
    """What ``tokens[].sha256`` holds: the hex SHA-256 of the token's UTF-8 bytes."""
    return hashlib.sha256(token.encode()).hexdigest()


def authorize_operation(principal: Principal, kind: Kind, message: Any,
                        default_schema: str) -> PermissionDenied | None:
    """The denial of one operation (``message``, of ``kind``), or None if the principal's
    scopes cover it."""
    target, what = kind.scope_target(message, default_schema)
    if principal.allows(kind.access, target):
        return None
    needed = f"{kind.access}:{target}" if kind.access != "admin" else "admin"
    return PermissionDenied(f'principal "{principal.name}" may not {kind.name} on {what} '
                            f"(needs scope {needed})",
                            metadata={"principal": principal.name, "scope": needed})


def authorize_ingest(principal: Principal, table: str,
                     default_schema: str) -> PermissionDenied | None:
    """BatchStream: an ingest stream needs ``write`` on its table, checked on the header
    before anything else of it (an operations feed is checked per operation by
    ``plan_batch``). The denial, or None."""
    target = qualified(table, default_schema)
    if principal.allows("write", target):
        return None
    return PermissionDenied(f'principal "{principal.name}" may not ingest into table '
                            f'"{target}" (needs scope write:{target})',
                            metadata={"principal": principal.name, "scope": f"write:{target}"})
