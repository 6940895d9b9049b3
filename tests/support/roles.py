"""A login role for batchd that is neither superuser nor owner of anything it serves, and
servers started with it: security tests run as such a role, as a hardened deployment would.

Roles are cluster-wide: the names here are fixed and made idempotently, and everything a test
grants it drops again (``DROP OWNED``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import grpc

from batchd.app import App
from batchd.batch.idempotency import SCHEMA_SQL as REQUESTS_SQL
from batchd.config import TokenSettings
from batchd.principals import hash_token
from batchd.stream.ledger import INTERNAL_SCHEMA_SQL
from batchd.v1 import batch_pb2_grpc
from tests.support.servers import make_settings

LOGIN = "batchd_app"
PASSWORD = "batchd-app-password"  # a throwaway role of the test database


def dsn_as(dsn: str, user: str, password: str) -> str:
    """``dsn`` with another user and password (a URL DSN, as the fixtures give)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("user", "password")]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, urlencode(query),
                       parts.fragment))


async def make_login_role(admin: asyncpg.Connection, tenants: list[str]) -> None:
    """``LOGIN`` (NOSUPERUSER, NOBYPASSRLS, owning nothing), a member of each tenant role,
    allowed to connect, to use the public schema and batchd's own tables. Grants on the
    tables and functions a test serves are the test's."""
    await admin.execute(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LOGIN}') THEN
            CREATE ROLE {LOGIN} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{PASSWORD}';
          END IF;
        END $$;
    """)
    # batchd's own tables, made by their owner as a deployment's migration would: the login
    # role only uses them.
    await admin.execute(INTERNAL_SCHEMA_SQL + REQUESTS_SQL)
    await admin.execute(f"""
        GRANT USAGE ON SCHEMA public, batchd TO {LOGIN};
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA batchd TO {LOGIN};
    """)
    for tenant in tenants:
        await admin.execute(f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{tenant}') THEN
                CREATE ROLE {tenant};
              END IF;
            END $$;
            GRANT {tenant} TO {LOGIN};
            GRANT USAGE ON SCHEMA public TO {tenant};
        """)


async def drop_grants(admin: asyncpg.Connection, roles: list[str]) -> None:
    """Undo every grant to ``roles`` in this database (the roles stay: cluster-wide)."""
    for role in roles:
        await admin.execute(f"DROP OWNED BY {role}")


def token(secret: str, principal: str, role: str | None, scopes: list[str]) -> TokenSettings:
    return TokenSettings(sha256=hash_token(secret), principal=principal, role=role,
                         scopes=scopes)


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


@asynccontextmanager
async def server_as_login_role(dsn: str, tokens: list[TokenSettings],
                               **settings: Any) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    """A batchd server connected as ``LOGIN`` (not the superuser of the test database)."""
    app = await App.start(make_settings(dsn_as(dsn, LOGIN, PASSWORD), tokens=tokens,
                                        **settings))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield batch_pb2_grpc.BatchServiceStub(channel)
    finally:
        await app.stop(grace=1)
