"""SQL functions as call operations (CallOperation.function): exposed by pattern, called with
named arguments coerced by their own types, overloads told apart by argument names, results
as rows, scopes call:SCHEMA.FUNCTION, EXECUTE grants and row-level security through roles.

The functions are tests/support/schema.sql's ``fn_*`` (the test server exposes ``public.fn_*``); the
secured server of this module adds roles, a row-level-security table and a guarded function.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from batchd.app import App
from batchd.client import AsyncClient, Batch
from batchd.config import TokenSettings
from batchd.principals import hash_token
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support import cli
from tests.support.batches import (
    FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    BatchFailure,
    batch,
    count,
    fails,
    rows,
)
from tests.support.servers import make_settings

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def call(function: str, op_id: str = "f", **args: Any) -> dict[str, Any]:
    return {"id": op_id, "call": {"function": function, "args": args}}


async def one(stub: batch_pb2_grpc.BatchServiceStub, op: dict[str, Any],
              **fields: Any) -> batch_pb2.OperationResult:
    response = await stub.BatchExecute(batch([op], **fields))
    return response.results[0]


# --- results ---------------------------------------------------------------------------------

async def test_a_scalar_function_gives_one_row_with_one_column_named_after_it(stub):
    result = await one(stub, call("fn_add", a=2, b=3))
    assert rows(result) == [{"fn_add": 5}]
    assert result.rows_affected == 1


async def test_an_omitted_argument_with_a_default_takes_it(stub):
    assert rows(await one(stub, call("fn_add", a=2))) == [{"fn_add": 12}]


async def test_a_schema_qualified_name_calls_the_same_function(stub):
    assert rows(await one(stub, call("public.fn_add", a=1, b=1))) == [{"fn_add": 2}]


async def test_a_set_returning_function_gives_its_rows(stub):
    result = await one(stub, call("fn_series", n=3, prefix="x"))
    assert rows(result) == [{"i": 1, "label": "x-1"}, {"i": 2, "label": "x-2"},
                            {"i": 3, "label": "x-3"}]
    assert result.rows_affected == 3
    assert rows(await one(stub, call("fn_series", n=0))) == []


async def test_a_function_returning_table_rows_renders_them_by_the_columns_types(stub):
    result = await one(stub, call("fn_products_under", max_price="30"))
    assert rows(result) == [{"id": "2", "sku": "MS-01", "name": "Mouse", "price": "19.99",
                             "stock": 250}]


async def test_a_void_function_writes_and_returns_no_rows(stub, db):
    result = await one(stub, call("fn_log_event", id="7", kind="logged"))
    assert result.outcome == SUCCEEDED
    assert rows(result) == [] and result.rows_affected == 0
    assert await db.fetchval("SELECT kind FROM events WHERE id = 7") == "logged"


async def test_arguments_are_coerced_by_their_own_types_and_results_come_back_exact(stub):
    result = await one(stub, call("fn_exact", amount="0.1000000000000000055511151231257827",
                                  big="9007199254740993", doc={"k": [1, "x"], "n": None}))
    assert rows(result) == [{"doubled": "0.2000000000000000111022302462515654",
                             "next_big": "9007199254740994",
                             "doc_back": {"k": [1.0, "x"], "n": None},
                             "amount_type": "numeric"}]


# --- overloads -------------------------------------------------------------------------------

async def test_overloads_are_told_apart_by_the_argument_names(stub):
    assert rows(await one(stub, call("fn_area", side="3"))) == [{"fn_area": "9"}]
    assert rows(await one(stub, call("fn_area", width="2", height="2.5"))) == [
        {"fn_area": "5.0"}]


async def test_overloads_with_the_same_argument_names_are_refused_listing_them(stub):
    failure = await fails(stub, batch([call("fn_points", a=1, b=2)]))
    assert failure.code == INVALID
    expected = ("function public.fn_points is overloaded: fn_points(a integer, b integer), "
                "fn_points(a numeric, b numeric); name the arguments of exactly one")
    assert failure.violations == [("operations[0].call.function", expected)]


async def test_names_no_overload_accepts_are_refused_listing_the_overloads(stub):
    failure = await fails(stub, batch([call("fn_area", side="1", width="2")]))
    assert failure.code == INVALID
    assert failure.violations[0][0] == "operations[0].call.function"
    assert "fn_area(side numeric), fn_area(width numeric, height numeric)" in failure.message


# --- invalid calls ---------------------------------------------------------------------------

async def test_an_unknown_function_is_invalid_with_did_you_mean(stub):
    failure = await fails(stub, batch([call("fn_ad", a=1)]))
    assert failure.code == INVALID
    assert failure.violations == [("operations[0].call.function",
                                   'unknown or not exposed function "fn_ad"')]
    assert 'function "fn_ad"; did you mean "fn_add"?' in failure.message


@pytest.mark.parametrize("name", ["secret_double", "fn_variadic", "fn_polymorphic",
                                  "fn_records", "hidden.fn_add", "pg_catalog.now"])
async def test_functions_not_matched_or_not_callable_are_not_exposed(stub, name):
    failure = await fails(stub, batch([call(name, x=1)]))
    assert failure.code == INVALID
    assert f'unknown or not exposed function "{name}"' in failure.message


async def test_unknown_and_missing_arguments_are_field_violations(stub):
    failure = await fails(stub, batch([call("fn_series", prefx="x")]))
    assert failure.code == INVALID
    assert dict(failure.violations) == {
        "operations[0].call.args.prefx":
            'function fn_series(n integer, prefix text) has no argument "prefx"; '
            'did you mean "prefix"?',
        "operations[0].call.args.n":
            "missing: function fn_series(n integer, prefix text) needs it (no default)",
    }


async def test_a_value_that_does_not_fit_its_argument_type_is_a_field_violation(stub):
    failure = await fails(stub, batch([call("fn_add", a="two", b=1.5)]))
    assert failure.code == INVALID
    assert dict(failure.violations) == {
        "operations[0].call.args.a": "expected an integer (number or decimal string), got str "
                                     "(argument a, integer)",
        "operations[0].call.args.b": "expected an integer, got 1.5 (argument b, integer)",
    }


@pytest.mark.parametrize("operation", [
    {"handler": "echo", "function": "fn_add"},
    {"args": {"a": 1}},
])
async def test_a_call_names_exactly_one_of_handler_and_function(stub, operation):
    failure = await fails(stub, batch([{"id": "c", "call": operation}]))
    assert failure.code == INVALID
    assert failure.violations == [("operations[0].call",
                                   "exactly one of handler and function must be set")]


# --- references, modes -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
async def test_references_into_and_out_of_function_calls(stub, db, mode):
    response = await stub.BatchExecute(batch([
        call("fn_add", "sum", a=1, b=2),
        call("fn_series", "series", n={"$ref": "sum.fn_add"}, prefix="kind"),
        {"id": "event", "insert": {"table": "events", "rows": [
            {"id": {"$ref": "series.2.i"}, "kind": {"$ref": "series.2.label"}}],
            "returning": ["id", "kind"]}},
    ], mode=mode))
    assert [r.outcome for r in response.results] == [SUCCEEDED] * 3
    assert len(rows(response.results[1])) == 3
    assert rows(response.results[2]) == [{"id": "3", "kind": "kind-3"}]
    assert await db.fetchval("SELECT kind FROM events WHERE id = 3") == "kind-3"


async def test_a_reference_to_a_column_a_function_does_not_return_is_invalid(stub):
    failure = await fails(stub, batch([
        call("fn_add", "sum", a=1),
        call("fn_add", "again", a={"$ref": "sum.total"}),
    ]))
    assert failure.code == INVALID
    assert "returns only ['fn_add']" in failure.message


async def test_an_atomic_batch_rolls_back_a_functions_writes_when_a_later_operation_fails(
        stub, db):
    failure = await fails(stub, batch([
        call("fn_log_event", "log", id="1", kind="rolled back"),
        {"id": "ghost", "get": {"table": "customers", "key": {"id": "404"}}},
    ]))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.outcomes() == {"log": ROLLED_BACK, "ghost": FAILED}
    assert await count(db, "events") == 0


async def test_independent_calls_and_groups_commit_or_roll_back_on_their_own(stub, db):
    response = await stub.BatchExecute(batch([
        call("fn_log_event", "alone", id="1", kind="alone"),
        {**call("fn_log_event", "g1", id="2", kind="group"), "group": "g"},
        {**call("fn_log_event", "g2", id="1", kind="duplicate"), "group": "g"},
    ], mode="MODE_INDEPENDENT"))
    assert [r.outcome for r in response.results] == [
        SUCCEEDED, ROLLED_BACK, FAILED]
    assert response.results[2].status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert await db.fetchval("SELECT array_agg(kind) FROM events") == ["alone"]


async def test_validate_only_runs_a_function_and_keeps_nothing(stub, db):
    response = await stub.BatchExecute(batch([
        call("fn_log_event", "log", id="1", kind="dry"),
        call("fn_add", "sum", a=1),
    ], validate_only=True))
    assert not response.committed
    assert rows(response.results[1]) == [{"fn_add": 11}]
    assert await count(db, "events") == 0


# --- GetSchema and reloads -------------------------------------------------------------------

def functions_of(schema: batch_pb2.GetSchemaResponse) -> dict[str, list[batch_pb2.FunctionInfo]]:
    listed: dict[str, list[batch_pb2.FunctionInfo]] = {}
    for f in schema.functions:
        listed.setdefault(f.name, []).append(f)
    return listed


async def test_get_schema_lists_the_exposed_functions(stub):
    listed = functions_of(await stub.GetSchema(batch_pb2.GetSchemaRequest()))
    assert {"public.fn_add", "public.fn_series", "public.fn_log_event"} <= set(listed)
    assert not {"public.secret_double", "public.fn_variadic", "public.fn_polymorphic",
                "public.fn_records"} & set(listed)
    assert len(listed["public.fn_points"]) == 2
    add = listed["public.fn_add"][0]
    assert [(a.name, a.type, a.has_default) for a in add.arguments] == [
        ("a", "integer", False), ("b", "integer", True)]
    assert (add.returns, add.returns_set) == ("integer", False)
    assert [(c.name, c.type) for c in add.result_columns] == [("fn_add", "integer")]
    series = listed["public.fn_series"][0]
    assert (series.returns, series.returns_set) == ("SETOF record", True)
    assert [(c.name, c.type) for c in series.result_columns] == [("i", "integer"),
                                                                 ("label", "text")]
    log = listed["public.fn_log_event"][0]
    assert (log.returns, list(log.result_columns)) == ("void", [])
    products = listed["public.fn_products_under"][0]
    assert products.returns == "SETOF products"
    assert [c.name for c in products.result_columns] == ["id", "sku", "name", "price", "stock"]


@pytest.fixture
async def new_function(db: asyncpg.Connection) -> AsyncIterator[str]:
    name = f"fn_new_{uuid.uuid4().hex[:8]}"
    yield name
    await db.execute(f'DROP FUNCTION IF EXISTS "{name}"')


async def until_function_listed(stub: batch_pb2_grpc.BatchServiceStub, name: str) -> None:
    """Wait until GetSchema lists ``name``: the reload a NOTIFY asks for has happened."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + 30
    while loop.time() < ends:
        if name in functions_of(await stub.GetSchema(batch_pb2.GetSchemaRequest())):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never appeared in GetSchema")


async def test_a_catalog_reload_exposes_a_new_function(stub, db, new_function):
    await db.execute(f'CREATE FUNCTION "{new_function}"(x integer) RETURNS integer '
                     "LANGUAGE sql AS 'SELECT x * 3'")
    failure = await fails(stub, batch([call(new_function, x=2)]))  # not before a reload
    assert failure.code == INVALID
    await db.execute("NOTIFY batchd, 'reload'")
    await until_function_listed(stub, f"public.{new_function}")
    assert rows(await one(stub, call(new_function, x=2))) == [{new_function: 6}]


# --- the Python client and `batchd schema` --------------------------------------------------

async def test_the_python_client_calls_functions_and_lists_them(app):
    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=30) as client:
        b = Batch()
        total = b.function("fn_add", {"a": 1, "b": 2})
        series = b.function("public.fn_series", {"n": total.ref("fn_add")})
        result = await client.execute(b)
        assert result[series].rows == [{"i": i, "label": f"row-{i}"} for i in (1, 2, 3)]
        schema = await client.schema()
    [add] = [f for f in schema.functions if f.name == "public.fn_add"]
    assert add.signature == "public.fn_add(a integer, b integer)"
    assert [a.has_default for a in add.arguments] == [False, True]
    assert [c.name for c in add.result_columns] == ["fn_add"]


async def test_schema_text_shows_each_functions_signature_and_result(app):
    done = await cli.batchd("schema", *cli.target(app))
    assert done.code == 0, done.stderr
    out = done.stdout
    block = out.split("function public.fn_series(n integer, prefix text)\n")[1]
    assert block.split("\n\n")[0].splitlines() == [
        "  returns:      SETOF record (i integer, label text)",
        "  defaults:     prefix"]
    assert out.splitlines()[-1].startswith("handlers: ")


# --- scopes, roles, limits: a secured server -------------------------------------------------

ADD_ONLY, FUNCTIONS, ECHO, TENANT_A, TENANT_B, ADMIN = (
    "add-only", "functions", "echo", "tenant-a", "tenant-b", "admin")
LIMIT = 5
ROLES_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fn_tenant_a') THEN
    CREATE ROLE fn_tenant_a; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fn_tenant_b') THEN
    CREATE ROLE fn_tenant_b; END IF;
END $$;
GRANT fn_tenant_a, fn_tenant_b TO current_user;
DROP FUNCTION IF EXISTS fn_my_notes();
DROP FUNCTION IF EXISTS fn_guarded(integer);
DROP TABLE IF EXISTS fn_notes;
CREATE TABLE fn_notes (id bigserial PRIMARY KEY, tenant text NOT NULL, note text);
ALTER TABLE fn_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON fn_notes USING (tenant = current_user);
GRANT SELECT ON fn_notes TO fn_tenant_a, fn_tenant_b;
INSERT INTO fn_notes (tenant, note) VALUES
    ('fn_tenant_a', 'a1'), ('fn_tenant_a', 'a2'), ('fn_tenant_b', 'b1');
-- SECURITY INVOKER (the default): it reads as its caller, so the policy applies.
CREATE FUNCTION fn_my_notes() RETURNS TABLE (tenant text, note text) SECURITY INVOKER
    LANGUAGE sql STABLE AS 'SELECT tenant, note FROM fn_notes ORDER BY id';
-- Only fn_tenant_a may run it.
CREATE FUNCTION fn_guarded(x integer) RETURNS integer LANGUAGE sql AS 'SELECT x';
REVOKE EXECUTE ON FUNCTION fn_guarded(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_guarded(integer) TO fn_tenant_a;
"""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def run_sql(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def secured(schema: str) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    await run_sql(schema, ROLES_SQL)
    tokens = [TokenSettings(sha256=hash_token(token), principal=token, scopes=scopes,
                            role=role) for token, scopes, role in (
        (ADD_ONLY, ["call:public.fn_add"], None),
        (FUNCTIONS, ["call:public.*"], None),
        (ECHO, ["call:echo"], None),
        (TENANT_A, ["call:public.fn_*"], "fn_tenant_a"),
        (TENANT_B, ["call:public.fn_*"], "fn_tenant_b"),
        (ADMIN, ["admin"], None),
    )]
    app = await App.start(make_settings(schema, tokens=tokens, max_page_size=LIMIT))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield batch_pb2_grpc.BatchServiceStub(channel)
    finally:
        await app.stop(grace=1)
        await run_sql(schema, "DROP FUNCTION fn_my_notes(), fn_guarded(integer); "
                              "DROP TABLE fn_notes")


async def secured_fails(stub: batch_pb2_grpc.BatchServiceStub, token: str,
                        *ops: dict[str, Any]) -> BatchFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(batch(list(ops)), metadata=bearer(token))
    return BatchFailure(caught.value)


async def test_a_call_scope_names_the_qualified_function(secured):
    response = await secured.BatchExecute(batch([call("fn_add", a=1)]), metadata=bearer(ADD_ONLY))
    assert rows(response.results[0]) == [{"fn_add": 11}]
    failure = await secured_fails(secured, ADD_ONLY, call("fn_series", n=1))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.error_info["scope"] == "call:public.fn_series"
    assert 'may not call on function "public.fn_series"' in failure.message
    # Denied whether or not the function exists: scopes reveal nothing of the catalog.
    failure = await secured_fails(secured, ADD_ONLY, call("no_such_fn"))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED


async def test_function_scopes_and_handler_scopes_do_not_cover_each_other(secured):
    failure = await secured_fails(secured, FUNCTIONS,
                                  {"id": "h", "call": {"handler": "echo", "args": {}}})
    assert failure.error_info["scope"] == "call:echo"
    response = await secured.BatchExecute(batch([{"id": "h", "call": {"handler": "echo"}}]),
                                          metadata=bearer(ECHO))
    assert response.committed
    failure = await secured_fails(secured, ECHO, call("fn_add", a=1))
    assert failure.error_info["scope"] == "call:public.fn_add"


async def test_get_schema_lists_only_the_functions_the_scopes_cover(secured):
    schema = await secured.GetSchema(batch_pb2.GetSchemaRequest(), metadata=bearer(ADD_ONLY))
    assert [f.name for f in schema.functions] == ["public.fn_add"]
    assert not schema.tables and not schema.handlers
    schema = await secured.GetSchema(batch_pb2.GetSchemaRequest(), metadata=bearer(ECHO))
    assert not schema.functions and list(schema.handlers) == ["echo"]


async def test_a_function_returning_more_rows_than_max_page_size_fails_out_of_range(secured):
    response = await secured.BatchExecute(batch([call("fn_series", n=LIMIT)]),
                                          metadata=bearer(ADMIN))
    assert len(rows(response.results[0])) == LIMIT
    failure = await secured_fails(secured, ADMIN, call("fn_series", n=LIMIT + 1))
    assert failure.code == grpc.StatusCode.OUT_OF_RANGE
    assert failure.error_info["reason"] == "TOO_MANY_ROWS"
    assert f"returned more than {LIMIT} rows" in failure.message


async def test_a_role_without_execute_is_permission_denied_naming_the_operation(secured):
    response = await secured.BatchExecute(batch([call("fn_guarded", x=4)]),
                                          metadata=bearer(TENANT_A))
    assert rows(response.results[0]) == [{"fn_guarded": 4}]
    failure = await secured_fails(secured, TENANT_B, call("fn_guarded", "guarded", x=4))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.error_info["sqlstate"] == "42501"
    assert failure.message.startswith('operation "guarded": permission denied for function')


@pytest.mark.parametrize("mode", ["MODE_ATOMIC", "MODE_INDEPENDENT"])
async def test_a_security_invoker_function_sees_only_the_roles_rows(secured, mode):
    for token, notes in ((TENANT_A, ["a1", "a2"]), (TENANT_B, ["b1"])):
        response = await secured.BatchExecute(batch([call("fn_my_notes")], mode=mode),
                                              metadata=bearer(token))
        assert [r["note"] for r in rows(response.results[0])] == notes
