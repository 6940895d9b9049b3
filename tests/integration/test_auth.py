"""Authentication and authorization: bearer tokens, scopes per table / kind / handler, TLS and
mTLS (client certificate CN as principal), for unary and bidirectional streaming RPCs alike.

Every server here is its own App with its own settings; the certificates are throwaway ones
made by a fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError

from batchd import cli
from batchd.app import App
from batchd.config import Settings
from batchd.principals import Principal, hash_token
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import (
    FAILED,
    NOT_RUN,
    SKIPPED,
    SUCCEEDED,
    BatchFailure,
    batch,
    count,
    fails,
)
from tests.support.servers import make_settings
from tests.support.streams import COMMIT, header, open_stream, ops_chunk, rows_chunk, send
from tests.support.tokens import ADMIN, CALLER, CLERK, READER, TOKENS

DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]



def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def customer(op_id: str, email: str) -> dict[str, Any]:
    return {"id": op_id, "insert": {"table": "customers",
                                    "rows": [{"name": op_id, "email": email}]}}


PRODUCT = {"id": "product", "insert": {"table": "products", "rows": [
    {"sku": "NEW-1", "name": "New", "price": "1.00", "stock": 1}]}}


@asynccontextmanager
async def serving(schema: str, **overrides: Any) -> AsyncIterator[App]:
    app = await App.start(make_settings(schema, **overrides))
    try:
        yield app
    finally:
        await app.stop(grace=1)


@pytest.fixture(scope="module")
async def secured(schema: str) -> AsyncIterator[App]:
    async with serving(schema, tokens=TOKENS) as app:
        yield app


@pytest.fixture(scope="module")
async def channel(secured: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> batch_pb2_grpc.BatchServiceStub:
    """The secured server's stub (shadows the open one of conftest)."""
    return batch_pb2_grpc.BatchServiceStub(channel)


async def rpc_error(awaitable: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value


async def write_racing_the_end(call: Any, request: Any) -> None:
    """Write to a stream the server may already have ended (authentication refuses it before
    reading anything): the write then fails, and the stream's status tells why."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call.write(request)


async def stream_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return caught.value


# --- authentication --------------------------------------------------------------------------

async def test_missing_token_is_unauthenticated_for_unary_bidi_and_schema(stub):
    err = await rpc_error(stub.BatchExecute(batch([customer("c", "c@x")])))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    failure = BatchFailure(err)
    assert failure.error_info["reason"] == "MISSING_TOKEN"
    assert "authorization: Bearer" in failure.message

    call = stub.BatchStream()
    await write_racing_the_end(call, header(table="events"))
    err = await stream_error(call)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    err = await rpc_error(stub.GetSchema(batch_pb2.GetSchemaRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("value", "reason"), [
    ("Bearer not-a-configured-token", "UNKNOWN_TOKEN"),
    ("Basic dXNlcjpwYXNz", "MALFORMED_TOKEN"),
    ("Bearer", "MALFORMED_TOKEN"),
    (f"{READER}", "MALFORMED_TOKEN"),
    (f"Bearer {READER} extra", "MALFORMED_TOKEN"),
])
async def test_wrong_or_malformed_token_is_unauthenticated(stub, value, reason):
    metadata = (("authorization", value),)
    err = await rpc_error(stub.BatchExecute(batch([customer("c", "c@x")]), metadata=metadata))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert BatchFailure(err).error_info["reason"] == reason

    call = stub.BatchStream(metadata=metadata)
    await write_racing_the_end(call, header(table="events"))
    assert (await stream_error(call)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_scheme_is_case_insensitive_and_token_works_for_unary_and_bidi(stub, db):
    response = await stub.BatchExecute(batch([customer("c", "c@x")]),
                                       metadata=(("authorization", f"bearer {CLERK}"),))
    assert response.committed
    call, _ = await open_stream(stub, header(table="events"), metadata=bearer(CLERK))
    ack = (await send(call, rows_chunk(1, [{"id": "1", "kind": "k"}]))).ack
    assert ack.rows_written == 1
    assert (await send(call, COMMIT)).summary.committed
    assert await count(db, "events") == 1


async def test_health_is_open_without_a_token(channel):
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="batchd.v1.BatchService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def list_services(channel: grpc.aio.Channel, **kwargs: Any) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), **kwargs)
    responses = [r async for r in call]
    return [s.name for s in responses[0].list_services_response.service]


async def test_reflection_is_public_by_default(channel):
    assert "batchd.v1.BatchService" in await list_services(channel)


async def test_reflection_can_require_a_token(schema):
    async with serving(schema, tokens=TOKENS, reflection_public=False) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        err = await rpc_error(list_services(ch))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "batchd.v1.BatchService" in await list_services(ch, metadata=bearer(READER))
        health = health_pb2_grpc.HealthStub(ch)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == \
            health_pb2.HealthCheckResponse.SERVING


# --- authorization ---------------------------------------------------------------------------

async def test_read_scope_allows_query_and_get(stub, db):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x')")
    response = await stub.BatchExecute(batch([
        {"id": "q", "query": {"table": "customers"}},
        {"id": "g", "get": {"table": "public.products", "key": {"id": 1}}},
    ]), metadata=bearer(READER))
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 2
    assert response.results[0].rows_affected == 1


async def test_atomic_batch_with_a_denied_operation_is_refused_before_anything_runs(stub, db):
    failure = await fails_with(stub, batch([customer("c", "c@x"), PRODUCT]), CLERK)
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.outcomes() == {"c": NOT_RUN, "product": FAILED}
    assert failure.error_info["operation_id"] == "product"
    assert failure.error_info["principal"] == "clerk"
    assert failure.error_info["scope"] == "write:public.products"
    assert 'principal "clerk" may not insert on table "public.products"' in failure.message
    assert await count(db, "customers") == 0
    assert await count(db, "products") == 2  # the fixture's rows only


async def test_independent_batch_fails_only_the_denied_operation(stub, db):
    response = await stub.BatchExecute(batch(
        [customer("c", "c@x"), PRODUCT,
         {"id": "after", "depends_on": ["product"], "query": {"table": "products"}}],
        mode="MODE_INDEPENDENT"), metadata=bearer(CLERK))
    c, product, after = response.results
    assert c.outcome == SUCCEEDED
    assert (product.outcome, product.status.code) == (FAILED, DENIED)
    assert after.outcome == SKIPPED
    assert await count(db, "customers") == 1
    assert await count(db, "products") == 2


async def test_read_only_token_cannot_write(stub, db):
    for op in ({"id": "u", "update": {"table": "customers", "key": {"id": 1},
                                      "set": {"name": "x"}}},
               {"id": "d", "delete": {"table": "customers", "key": {"id": 1}}},
               customer("i", "i@x")):
        failure = await fails_with(stub, batch([op]), READER)
        assert failure.code == grpc.StatusCode.PERMISSION_DENIED, op
    assert await count(db, "customers") == 0


async def test_denial_does_not_reveal_whether_a_table_exists(stub):
    unknown = {"id": "x", "query": {"table": "no_such_table"}}
    failure = await fails_with(stub, batch([unknown]), CALLER)
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    # Within the caller's scopes, an unknown table is what it always was.
    failure = await fails_with(stub, batch([unknown]), READER)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_call_scope_is_per_handler_name(stub, db):
    response = await stub.BatchExecute(batch([
        {"id": "r", "call": {"handler": "reserve_stock", "args": {"product_id": 1,
                                                                  "quantity": 2}}},
    ]), metadata=bearer(CALLER))
    assert response.committed
    assert await db.fetchval("SELECT stock FROM products WHERE id = 1") == 98
    failure = await fails_with(stub, batch([{"id": "t", "call": {"handler": "tx_info"}}]),
                               CALLER)
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.error_info["scope"] == "call:tx_info"
    # CRUD is not part of a call scope.
    failure = await fails_with(stub, batch([{"id": "q", "query": {"table": "products"}}]),
                               CALLER)
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED


async def test_admin_may_do_everything(stub, db):
    response = await stub.BatchExecute(batch([
        customer("c", "c@x"), PRODUCT, {"id": "t", "call": {"handler": "tx_info"}},
    ]), metadata=bearer(ADMIN))
    assert response.committed
    assert await count(db, "products") == 3


async def test_schema_shows_only_what_the_caller_may_use(stub):
    reader = await stub.GetSchema(batch_pb2.GetSchemaRequest(), metadata=bearer(READER))
    tables = {t.name: list(t.operations) for t in reader.tables}
    assert tables["public.customers"] == ["get", "query"]
    assert not reader.handlers
    caller = await stub.GetSchema(batch_pb2.GetSchemaRequest(), metadata=bearer(CALLER))
    assert not caller.tables
    assert list(caller.handlers) == ["reserve_stock"]
    admin = await stub.GetSchema(batch_pb2.GetSchemaRequest(), metadata=bearer(ADMIN))
    assert "insert" in {t.name: list(t.operations) for t in admin.tables}["public.customers"]
    assert "tx_info" in admin.handlers


async def fails_with(stub: batch_pb2_grpc.BatchServiceStub,
                     request: batch_pb2.BatchExecuteRequest, token: str) -> BatchFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(request, metadata=bearer(token))
    return BatchFailure(caught.value)


# --- BatchStream -----------------------------------------------------------------------------

async def test_stream_ingest_needs_write_scope_on_its_table(stub, db):
    call = stub.BatchStream(metadata=bearer(READER))
    await call.write(header(table="events"))
    err = await stream_error(call)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "write:public.events" in err.details()

    call = stub.BatchStream(metadata=bearer(CLERK))
    await call.write(header(table="products"))
    assert (await stream_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED

    call, _ = await open_stream(stub, header(table="public.events", mode="MODE_INDEPENDENT"),
                                metadata=bearer(CLERK))
    ack = (await send(call, rows_chunk(1, [{"id": "7", "kind": "k"}]))).ack
    assert ack.rows_written == 1
    await call.done_writing()
    assert (await call.read()).summary.committed
    assert await count(db, "events") == 1


async def test_operations_feed_checks_every_operation(stub, db):
    call, _ = await open_stream(stub, header(mode="MODE_INDEPENDENT"), metadata=bearer(CLERK))
    denied = (await send(call, ops_chunk(1, [customer("c", "c@x"), PRODUCT]))).ack
    assert [r.outcome for r in denied.results] == [NOT_RUN, FAILED]
    assert denied.results[1].status.code == DENIED
    allowed = (await send(call, ops_chunk(2, [customer("c", "c@x")]))).ack
    assert allowed.results[0].outcome == SUCCEEDED
    await call.done_writing()
    assert (await call.read()).summary.committed
    assert await count(db, "customers") == 1
    assert await count(db, "products") == 2


# --- settings and scopes (no server) ---------------------------------------------------------

def test_scopes_match_tables_kinds_and_handlers():
    p = Principal("p", ("read:public.*", "write:public.orders", "call:reserve_*"), "token")
    assert p.may("query", "public.customers") and p.may("get", "public.orders")
    assert p.may("insert", "public.orders") and p.may("delete", "public.orders")
    assert not p.may("insert", "public.customers")
    assert not p.may("query", "billing.invoices")
    assert not p.may("query", "Public.customers")  # identifiers are exact
    assert p.may("call", "reserve_stock") and not p.may("call", "tx_info")
    assert not p.may("unknown_kind", "public.orders")  # new kinds need admin
    assert Principal("root", ("*",), "token").may("unknown_kind", "x")
    assert Principal("none", (), "certificate").may("query", "public.orders") is False


@pytest.mark.parametrize("bad", [
    {"tokens": [{"sha256": "abc", "principal": "p"}]},
    {"tokens": [{"sha256": "0" * 64, "principal": "p", "scopes": ["write:orders"]}]},
    {"tokens": [{"sha256": "0" * 64, "principal": "p", "scopes": ["delete:public.x"]}]},
    {"tokens": [{"sha256": "0" * 64, "principal": "p"}, {"sha256": "0" * 64, "principal": "q"}]},
    {"tls_cert_file": "cert.pem"},
    {"tls_client_ca_file": "ca.pem"},
    {"client_cert_scopes": {"svc": ["admin"]}},
])
def test_bad_security_settings_are_refused_at_start(bad):
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_token_hash_is_normalized_and_auth_is_off_without_credentials():
    settings = Settings(tokens=[{"sha256": "AB" * 32, "principal": "p", "scopes": ["*"]}])
    assert settings.tokens[0].sha256 == "ab" * 32
    assert settings.auth_enabled
    assert not Settings().auth_enabled


# --- TLS and mTLS ----------------------------------------------------------------------------

@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN=svc-orders, signed by ca
    client_key: Path
    rogue_cert: Path  # CN=svc-orders, signed by another CA
    rogue_key: Path

    def read(self, name: str) -> bytes:
        return Path(getattr(self, name)).read_bytes()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *,
           server: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``cn``; issuer None: a self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer else (_name(cn), key)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                              critical=True))
    if issuer is None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    elif server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(folder: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca, ca_key = _issue("batchd test CA", None)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    issuer = (ca.subject, ca_key)
    server_cert, server_key = _write(folder, "server", *_issue("localhost", issuer, server=True))
    client_cert, client_key = _write(folder, "client", *_issue("svc-orders", issuer))
    rogue_ca, rogue_ca_key = _issue("rogue CA", None)
    rogue_cert, rogue_key = _write(folder, "rogue",
                                   *_issue("svc-orders", (rogue_ca.subject, rogue_ca_key)))
    return Certs(ca_path, server_cert, server_key, client_cert, client_key, rogue_cert,
                 rogue_key)


def tls_settings(certs: Certs, mtls: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {"tls_cert_file": certs.server_cert,
                              "tls_key_file": certs.server_key}
    if mtls:
        values["tls_client_ca_file"] = certs.ca
    return values


def secure_channel(app: App, certs: Certs, client: str | None = None,
                   ) -> grpc.aio.Channel:
    """A TLS channel trusting the test CA; ``client``: "client" or "rogue" certificate."""
    key = certs.read(f"{client}_key") if client else None
    chain = certs.read(f"{client}_cert") if client else None
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.read("ca"),
                                               private_key=key, certificate_chain=chain)
    return grpc.aio.secure_channel(f"127.0.0.1:{app.port}", credentials)


SHORT = 10.0  # a refused handshake fails fast; this only bounds a hang


async def test_tls_server_serves_clients_that_trust_its_ca(schema, certs):
    async with serving(schema, **tls_settings(certs)) as app:
        async with secure_channel(app, certs) as ch:
            stub = batch_pb2_grpc.BatchServiceStub(ch)
            response = await stub.BatchExecute(batch([{"id": "q", "query": {
                "table": "products"}}]), timeout=SHORT)
            assert response.results[0].outcome == SUCCEEDED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as plain:
            err = await rpc_error(batch_pb2_grpc.BatchServiceStub(plain).GetSchema(
                batch_pb2.GetSchemaRequest(), timeout=SHORT))
            assert err.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_with_tokens_as_call_credentials(schema, certs, db):
    async with serving(schema, tokens=TOKENS, **tls_settings(certs)) as app:
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=certs.read("ca")),
            grpc.access_token_call_credentials(CLERK))
        async with grpc.aio.secure_channel(f"127.0.0.1:{app.port}", credentials) as ch:
            stub = batch_pb2_grpc.BatchServiceStub(ch)
            assert (await stub.BatchExecute(batch([customer("c", "c@x")]),
                                            timeout=SHORT)).committed
            failure = await fails(stub, batch([PRODUCT]))
            assert failure.code == grpc.StatusCode.PERMISSION_DENIED
        async with secure_channel(app, certs) as ch:  # TLS alone is not a credential
            err = await rpc_error(batch_pb2_grpc.BatchServiceStub(ch).GetSchema(
                batch_pb2.GetSchemaRequest(), timeout=SHORT))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await count(db, "customers") == 1


async def test_mtls_refuses_clients_without_a_certificate_from_its_ca(schema, certs):
    async with serving(schema, **tls_settings(certs, mtls=True)) as app:
        for client in (None, "rogue"):
            async with secure_channel(app, certs, client) as ch:
                health = health_pb2_grpc.HealthStub(ch)
                err = await rpc_error(health.Check(health_pb2.HealthCheckRequest(),
                                                   timeout=SHORT))
                assert err.code() == grpc.StatusCode.UNAVAILABLE, client


async def test_mtls_certificate_cn_is_the_principal(schema, certs, db: asyncpg.Connection):
    await db.execute("INSERT INTO customers (id, name, email) VALUES (1, 'a', 'a@x')")
    scopes = {"svc-orders": ["read:public.*", "write:public.orders"]}
    async with serving(schema, client_cert_scopes=scopes, **tls_settings(certs, mtls=True)) \
            as app, secure_channel(app, certs, "client") as ch:
        stub = batch_pb2_grpc.BatchServiceStub(ch)
        response = await stub.BatchExecute(batch([
            {"id": "o", "insert": {"table": "orders", "rows": [{"customer_id": 1}]}}]),
            timeout=SHORT)
        assert response.committed
        failure = await fails(stub, batch([customer("c", "c@x")]))
        assert failure.code == grpc.StatusCode.PERMISSION_DENIED
        assert failure.error_info["principal"] == "svc-orders"
        # Bidirectional streams see the certificate's principal too.
        call = stub.BatchStream()
        await call.write(header(table="events"))
        assert (await stream_error(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert await count(db, "orders") == 1
    assert await count(db, "customers") == 1


async def test_mtls_with_tokens_a_presented_token_takes_precedence(schema, certs):
    async with serving(schema, tokens=TOKENS, **tls_settings(certs, mtls=True)) as app, \
            secure_channel(app, certs, "client") as ch:
        stub = batch_pb2_grpc.BatchServiceStub(ch)
        # The certificate alone: an authenticated principal without scopes.
        failure = await fails(stub, batch([{"id": "q", "query": {"table": "products"}}]))
        assert failure.code == grpc.StatusCode.PERMISSION_DENIED
        assert failure.error_info["principal"] == "svc-orders"
        response = await stub.BatchExecute(batch([{"id": "q", "query": {
            "table": "products"}}]), metadata=bearer(READER), timeout=SHORT)
        assert response.results[0].outcome == SUCCEEDED
        err = await rpc_error(stub.BatchExecute(batch([{"id": "q", "query": {
            "table": "products"}}]), metadata=bearer("wrong"), timeout=SHORT))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpcurl_with_mtls_and_a_token(schema, certs):
    """The docs' command (docs/how-to/security.md): reflection and a call over mTLS, with a
    bearer token."""
    grpcurl = Path(sys.executable).parent / "grpcurl"
    async with serving(schema, tokens=TOKENS, reflection_public=False,
                       **tls_settings(certs, mtls=True)) as app:
        async def run(*args: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                str(grpcurl), "-cacert", str(certs.ca), "-cert", str(certs.client_cert),
                "-key", str(certs.client_key), *args, f"127.0.0.1:{app.port}",
                "batchd.v1.BatchService/GetSchema", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
            return proc.returncode or 0, out.decode()

        code, out = await run("-H", f"authorization: Bearer {READER}")
        assert code == 0, out
        assert '"name": "public.customers"' in out
        code, out = await run()  # the certificate's principal, which has no scopes here
        assert code == 0, out
        assert "public.customers" not in out
        code, out = await run("-H", "authorization: Bearer wrong")
        assert code != 0 and "Unauthenticated" in out, out


def test_new_token_prints_a_token_and_settings_with_only_its_hash(capsys):
    assert cli.main(["new-token", "--principal", "reporting", "--scope", "read:public.*"]) == 0
    out = capsys.readouterr().out
    token = out.splitlines()[1].removeprefix("#").strip()
    stanza = tomllib.loads(out)["tokens"][0]
    assert stanza == {"principal": "reporting", "sha256": hash_token(token),
                      "scopes": ["read:public.*"]}
    assert token not in out.split("[[tokens]]")[1]
    Settings(tokens=[stanza])  # valid as it stands
    assert cli.main(["new-token", "--principal", "x", "--scope", "write:orders"]) == 2


async def test_container_healthcheck_follows_tls_and_mtls_settings(schema, certs):
    import sys

    app = await App.start(make_settings(schema, **tls_settings(certs, mtls=True)))
    try:
        async def healthcheck(**env: str) -> int:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "batchd.healthcheck", f"127.0.0.1:{app.port}",
                env={**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
                     "BATCHD_TLS_CERT_FILE": str(certs.server_cert),
                     "BATCHD_TLS_CLIENT_CA_FILE": str(certs.ca),
                     "BATCHD_HEALTHCHECK_CA_FILE": str(certs.ca), **env},
                stderr=asyncio.subprocess.DEVNULL)
            return await asyncio.wait_for(proc.wait(), 30)

        assert await healthcheck() == 1  # mTLS: no client certificate, no answer
        assert await healthcheck(BATCHD_HEALTHCHECK_CERT_FILE=str(certs.client_cert),
                                 BATCHD_HEALTHCHECK_KEY_FILE=str(certs.client_key)) == 0
    finally:
        await app.stop(grace=1)
