"""`batchd exec` and `batchd schema` as a user runs them: the real command in a subprocess
(asynchronous, since the test server shares this event loop), against the real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support.cli import BATCHD, target

ORDER_JSON = {"operations": [
    {"id": "customer", "insert": {"table": "customers",
                                  "rows": [{"name": "Ada", "email": "ada@example.com"}]}},
    {"id": "order", "insert": {"table": "orders",
                               "rows": [{"customer_id": {"$ref": "customer.id"},
                                         "total": "69.89"}],
                               "returning": ["id", "version"]}},
]}

ORDER_YAML = """\
# The same batch as a person would write it in YAML.
operations:
  - id: customer
    insert:
      table: customers
      rows: [{name: Grace, email: grace@example.com}]
  - id: stock
    call: {handler: reserve_stock, args: {product_id: 1, quantity: 2}}
  - id: item
    depends_on: [customer]
    insert:
      table: all_types
      rows: [{id: 7, i8: 9223372036854775807, day: 2024-02-29}]
      returning: [i8, day]
"""


async def batchd(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def write(tmp_path: Path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def table_lines(text: str) -> dict[str, list[str]]:
    """The outcome table: operation id -> its cells (id, outcome, code, rows, detail...)."""
    return {line.split()[0]: line.split() for line in text.splitlines()
            if line.strip() and not line.startswith(("id ", "committed:", "batchd exec:"))}


async def test_exec_json_file_prints_a_table_and_commits(app, db, tmp_path):
    code, out, err = await batchd("exec", write(tmp_path, "batch.json", ORDER_JSON), *target(app))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["id", "outcome", "code", "rows", "detail"]
    lines = table_lines(out)
    assert lines["customer"] == ["customer", "SUCCEEDED", "OK", "1", "id=1"]
    # Row columns are printed sorted by name: a Struct does not keep their order.
    assert lines["order"] == ["order", "SUCCEEDED", "OK", "1", "id=1", "version=1"]
    assert out.splitlines()[-1] == "committed: yes, attempts: 1"
    assert err == ""
    assert await db.fetchval("SELECT total::text FROM orders") == "69.89"


async def test_exec_yaml_file_sends_exact_values_and_prints_json(app, db, tmp_path):
    code, out, err = await batchd("exec", write(tmp_path, "batch.yaml", ORDER_YAML), "--json",
                                  *target(app))
    assert code == 0, err
    response = json.loads(out)
    assert response["committed"] is True
    assert [r["outcome"] for r in response["results"]] == ["OUTCOME_SUCCEEDED"] * 3
    # A YAML integer beyond 2**53 and a YAML date reach PostgreSQL exactly.
    assert response["results"][2]["rows"] == [{"i8": "9223372036854775807",
                                               "day": "2024-02-29"}]
    assert await db.fetchval("SELECT i8 FROM all_types WHERE id = 7") == 2**63 - 1
    assert await db.fetchval("SELECT stock FROM products WHERE id = 1") == 98


TYPED_ROW = {"operations": [
    {"id": "typed", "insert": {"table": "all_types", "returning": ["num", "at"], "rows": [{
        "id": 8, "num": "49.90", "at": "2024-02-29T23:59:59.5+05:30", "uid":
        "6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33", "blob": "aGk=", "span": "P1DT2H",
        "ids": ["9007199254740993"]}]}},
    {"id": "more", "get": {"table": "all_types", "key": {"id": 8},
                           "columns": ["blob", "span", "ids"]}},
    {"id": "uid", "get": {"table": "all_types", "key": {"id": 8}, "columns": ["uid"]}},
]}


async def test_exec_table_shows_decoded_values_as_text_and_json_keeps_the_wire_forms(app,
                                                                                     tmp_path):
    """The table renders the client's Python values back (Decimal, datetime, UUID, bytes,
    timedelta); --json prints the wire's JSON as grpcurl would, with the columns' types."""
    path = write(tmp_path, "typed.json", TYPED_ROW)
    code, out, err = await batchd("exec", path, "--json", "--validate-only", *target(app))
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["rows"][0]["num"] == "49.90"
    code, out, err = await batchd("exec", path, *target(app))
    assert code == 0, err
    lines = table_lines(out)
    assert lines["typed"][4:] == ["at=2024-02-29T18:29:59.500000+00:00", "num=49.90"]
    assert lines["more"][4:] == ['blob="aGk="', "ids=[9007199254740993]", "span=P1DT7200S"]
    assert lines["uid"][4:] == ["uid=6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33"]
    assert {"name": "num", "type": "numeric"} in result["columns"]


async def test_exec_reads_standard_input_and_flags_override_the_file(app, db):
    code, out, err = await batchd("exec", "-", "--validate-only", "--mode", "independent",
                                  *target(app), stdin=json.dumps(ORDER_JSON))
    assert code == 0, err
    assert [line.split()[1] for line in out.splitlines()[1:3]] == ["SUCCEEDED"] * 2
    assert out.splitlines()[-1] == "committed: no, attempts: 1"
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_exec_failed_atomic_batch_exits_1_with_error_and_outcomes(app, db, tmp_path):
    await db.execute("INSERT INTO customers (name, email) VALUES ('x', 'ada@example.com')")
    code, out, err = await batchd("exec", write(tmp_path, "batch.json", ORDER_JSON), *target(app))
    assert code == 1
    assert out == ""
    first = err.splitlines()[0]
    assert first.startswith('batchd exec: ALREADY_EXISTS: operation "customer": duplicate key')
    lines = table_lines(err)
    assert lines["customer"][:4] == ["customer", "FAILED", "ALREADY_EXISTS", "0"]
    assert lines["order"][:4] == ["order", "NOT_RUN", "ABORTED", "0"]
    assert err.splitlines()[-1] == "committed: no, attempts: 1"
    assert await db.fetchval("SELECT count(*) FROM orders") == 0


async def test_exec_json_of_a_failed_batch_carries_the_error_and_results(app, tmp_path):
    bad = {"operations": [{"id": "bad", "insert": {"table": "products",
                                                    "rows": [{"sku": "X", "name": "x",
                                                              "price": True}]}}]}
    code, out, err = await batchd("exec", write(tmp_path, "bad.json", bad), "--json",
                                  *target(app))
    assert code == 1
    response = json.loads(out)
    assert response["error"]["code"] == "INVALID_ARGUMENT"
    assert response["error"]["fieldViolations"] == [{
        "field": "operations[0].insert.rows[0].price",
        "description": "expected a decimal string or number, got bool "
                       "(column price, numeric(12,2))"}]
    assert response["results"][0]["outcome"] == "OUTCOME_FAILED"
    assert "batchd exec: INVALID_ARGUMENT" in err
    assert "operations[0].insert.rows[0].price: expected a decimal string" in err


async def test_exec_independent_batch_with_a_failed_operation_exits_1(app, db, tmp_path):
    batch = {"mode": "MODE_INDEPENDENT", "operations": [
        {"id": "ok", "insert": {"table": "customers",
                                "rows": [{"name": "a", "email": "a@example.com"}]}},
        {"id": "ghost", "get": {"table": "customers", "key": {"id": "404"}}},
    ]}
    code, out, err = await batchd("exec", write(tmp_path, "batch.json", batch), *target(app))
    assert code == 1
    assert out == ""
    assert err.splitlines()[0] == "batchd exec: 1 of 2 operations did not succeed"
    lines = table_lines(err)
    assert lines["ok"][:4] == ["ok", "SUCCEEDED", "OK", "1"]
    assert lines["ghost"][:3] == ["ghost", "FAILED", "NOT_FOUND"]
    assert await db.fetchval("SELECT count(*) FROM customers") == 1


async def test_exec_usage_errors_exit_2_naming_the_file(tmp_path):
    missing = str(tmp_path / "missing.json")
    cases = [
        (missing, "missing.json: cannot read: No such file or directory"),
        (write(tmp_path, "broken.json", '{"operations": ['), "broken.json: invalid JSON"),
        (write(tmp_path, "broken.yaml", "operations: [\n  - {id: x"), "broken.yaml: invalid YAML"),
        (write(tmp_path, "wrong.json", {"operations": [{"id": "x", "nope": {}}]}),
         'wrong.json: not a BatchExecuteRequest: Failed to parse operations field: Message '
         'type "batchd.v1.Operation" has no field named "nope"'),
        (write(tmp_path, "scalar.json", "42"), 'scalar.json: expected an object with "operations"'),
        (write(tmp_path, "empty.json", {"operations": []}), "empty.json: no operations"),
    ]
    for path, message in cases:
        # No server is needed: nothing is sent when the file is wrong.
        code, out, err = await batchd("exec", path, "--target", "127.0.0.1:1")
        assert (code, out) == (2, ""), (path, err)
        assert err.startswith(f"batchd exec: {path}: "), err
        assert message in err, err


async def test_exec_names_each_0_1_0_enum_name_with_its_new_name(tmp_path):
    path = write(tmp_path, "old.yaml", """\
mode: INDEPENDENT
operations:
  - id: q
    query: {table: products, filters: [{column: sku, op: EQ, value: KB-01}]}
  - id: i
    insert: {table: products, rows: [{sku: X}], on_conflict: {action: DO_NOTHING}}
""")
    code, out, err = await batchd("exec", path, "--target", "127.0.0.1:1")
    assert (code, out) == (2, ""), err
    assert err == (
        f"batchd exec: {path}: enum names from 0.1.0, renamed in 0.2.0 (see CHANGELOG.md): "
        'mode "INDEPENDENT" is now "MODE_INDEPENDENT", operations[0].query.filters[0].op "EQ" '
        'is now "OPERATOR_EQ", operations[1].insert.on_conflict.action "DO_NOTHING" is now '
        '"ACTION_DO_NOTHING"\n')


async def test_exec_unreachable_server_exits_1():
    code, out, err = await batchd("exec", "-", "--target", "127.0.0.1:1",
                                  stdin=json.dumps(ORDER_JSON))
    assert code == 1 and out == ""
    assert err.startswith("batchd exec: UNAVAILABLE: ")


async def test_schema_json_lists_tables_and_handlers(app):
    code, out, err = await batchd("schema", "--json", *target(app))
    assert code == 0, err
    schema = json.loads(out)
    tables = {t["name"]: t for t in schema["tables"]}
    orders = tables["public.orders"]
    assert orders["primaryKey"] == ["id"]
    assert (orders["versionColumn"], orders["softDeleteColumn"]) == ("version", "deleted_at")
    assert {"name": "total", "type": "numeric(12,2)", "hasDefault": True} in orders["columns"]
    assert tables["public.readonly_things"]["operations"] == ["get", "query"]
    assert tables["public.no_key"]["operations"] == ["insert"]  # no primary key: inserts only
    assert "hidden.secrets" not in tables
    assert {"reserve_stock", "echo"} <= set(schema["handlers"])


async def test_schema_text_shows_keys_columns_and_handlers(app):
    code, out, err = await batchd("schema", *target(app))
    assert code == 0, err
    block = out.split("table public.orders\n")[1].split("\n\n")[0].splitlines()
    assert block[:4] == ["  primary key:  id",
                         "  operations:   delete, get, insert, query, update",
                         "  version:      version",
                         "  soft delete:  deleted_at"]
    assert block[4].split() == ["column", "type", "null", "default"]
    assert ["total", "numeric(12,2)", "no", "yes"] in [line.split() for line in block]
    assert out.splitlines()[-1].startswith("handlers: ") and "reserve_stock" in out
