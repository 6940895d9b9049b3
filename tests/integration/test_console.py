"""The console (/console) in a real headless Chromium against a real server: what a person
debugging batchd does there — reads the schema, runs a batch with a reference and reads its
results, sees a failing batch's error on the operation that failed, validates without
committing, copies the batch as Python and grpcurl (which run), ingests a CSV file with a bad
row and reads the rejects — and what it must never do: render a database value as markup, or
break its Content-Security-Policy. Each step leaves a screenshot (tests/support/browser.py).

Marked ``browser`` (scripts/test-browser): Debian's chromium, driven by Playwright.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from playwright.async_api import Locator, expect

from batchd.app import App
from batchd.v1 import batch_pb2
from tests.support.browser import ConsolePage, console_page, console_server
from tests.support.ports import ROOT

pytestmark = pytest.mark.browser

WITH_REFERENCE = {"operations": [
    {"id": "customer", "insert": {"table": "customers",
                                  "rows": [{"name": "Ada", "email": "ada@example.com"}]}},
    {"id": "order", "insert": {"table": "orders", "returning": ["id", "customer_id", "total"],
                               "rows": [{"customer_id": {"$ref": "customer.id"},
                                         "total": "69.89"}]}},
]}


@pytest.fixture
async def served(schema: str) -> AsyncIterator[tuple[App, str]]:
    async with console_server(schema) as served:
        yield served


@pytest.fixture
async def console(served: tuple[App, str]) -> AsyncIterator[ConsolePage]:
    async with console_page(served[1]) as page:
        yield page
        assert page.errors == [], "the page threw"
        assert await page.csp_violations() == []
        assert page.dialogs == []


async def run(console: ConsolePage, batch: dict[str, object], button: str = "#run") -> None:
    page = console.page
    await page.fill("#batch", json.dumps(batch, indent=2))
    await page.click(button)
    await expect(page.locator("#results")).not_to_have_attribute(
        "data-state", "running")


def card(console: ConsolePage, operation: str) -> Locator:
    return console.page.locator(f'#results .result[data-operation="{operation}"]')


async def test_console_shows_the_schema_its_token_may_use(console: ConsolePage) -> None:
    page = console.page
    customers = page.locator('details.table[data-table="public.customers"]')
    await expect(customers).to_be_visible()
    for kind in ("insert", "get", "query", "update", "delete"):
        await expect(customers.locator(f'button[data-kind="{kind}"]')).to_be_visible()
    await customers.locator("summary").click()
    email = customers.locator("tr", has=page.locator("td.column-name", has_text="email"))
    await expect(email.locator("td.column-type")).to_have_text("text")
    await expect(customers.locator("tr", has_text="key")).to_contain_text("id")
    # readonly_things is configured for get and query only: no write buttons.
    readonly = page.locator('details.table[data-table="public.readonly_things"]')
    await expect(readonly.locator("button.op")).to_have_text(["get", "query"])
    await expect(page.locator('#handlers button[data-handler="reserve_stock"]')).to_be_visible()
    await expect(page.locator("#functions button").first).to_be_visible()
    await console.shot("schema")
    # The filter keeps the tables whose name or columns match.
    await page.fill("#schema-filter", "unit_price")
    await expect(page.locator("details.table:visible")).to_have_count(1)
    await expect(page.locator("details.table:visible .table-name")).to_have_text(
        "public.order_items")


async def test_console_adds_templates_from_the_schema(console: ConsolePage) -> None:
    page = console.page
    await page.click("#example")
    await page.fill("#batch", '{"operations": []}')
    await page.click('details.table[data-table="public.products"] button[data-kind="get"]')
    await page.click('details.table[data-table="public.products"] button[data-kind="get"]')
    batch = json.loads(await page.input_value("#batch"))
    assert [op["id"] for op in batch["operations"]] == ["get_products", "get_products_2"]
    assert batch["operations"][0]["get"] == {"table": "products", "key": {"id": "1"}}
    await run(console, batch)
    await expect(card(console, "get_products")).to_have_attribute("data-outcome", "succeeded")
    await expect(card(console, "get_products").locator("table.rows")).to_contain_text("Keyboard")

    # A batch that is not JSON is never thrown away by a template.
    await page.fill("#batch", '{"operations": [')
    await page.click('details.table[data-table="public.products"] button[data-kind="get"]')
    await expect(page.locator("#suggestions .error")).to_contain_text("not JSON")
    assert await page.input_value("#batch") == '{"operations": ['

    # Completion (Ctrl+Space): tables and columns of the schema, references to the batch's ops.
    await page.fill("#batch", '{"operations": [{"id": "o", "query": {"table": "ord')
    await page.focus("#batch")
    await page.keyboard.press("End")
    await page.keyboard.press("Control+Space")
    suggestions = page.locator("#suggestions .suggestion")
    await expect(suggestions).to_contain_text(["order_id", "order_items", "orders"])
    await suggestions.filter(has_text=re.compile("^orders$")).click()
    assert (await page.input_value("#batch")).endswith('"table": "orders')


async def test_console_runs_a_batch_with_a_reference_and_shows_its_results(
        console: ConsolePage, db: asyncpg.Connection) -> None:
    await run(console, WITH_REFERENCE)
    await expect(console.page.locator("#results .banner")).to_have_text("Committed.")
    customer_id = await db.fetchval("SELECT id FROM customers WHERE email = 'ada@example.com'")
    order = card(console, "order")
    await expect(order).to_have_attribute("data-outcome", "succeeded")
    await expect(order.locator("thead th")).to_contain_text(["id", "customer_id", "total"])
    await expect(order.locator("tbody td").nth(1)).to_have_text(str(customer_id))
    await expect(order.locator("tbody td").nth(2)).to_have_text("69.89")
    assert await db.fetchval("SELECT customer_id FROM orders") == customer_id
    # The call's request id, as batchd's logs name it.
    await expect(console.page.locator("#results .trace .request-id")).to_have_text(
        re.compile(r"^\S+$"))
    await console.shot("results")


async def test_console_validate_only_runs_and_commits_nothing(
        console: ConsolePage, db: asyncpg.Connection) -> None:
    await run(console, WITH_REFERENCE, button="#validate")
    await expect(console.page.locator("#results .banner")).to_contain_text("validate only")
    await expect(card(console, "order")).to_have_attribute("data-outcome", "succeeded")
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_console_shows_a_failing_batch_error_on_the_operation_that_failed(
        console: ConsolePage, db: asyncpg.Connection) -> None:
    await run(console, {"operations": [
        {"id": "fine", "insert": {"table": "customers",
                                  "rows": [{"name": "Bo", "email": "bo@example.com"}]}},
        {"id": "twice", "insert": {"table": "products",
                                   "rows": [{"sku": "KB-01", "name": "Keyboard", "price": "1",
                                             "stock": 1}]}},
        {"id": "after", "get": {"table": "customers", "key": {"id": "1"}}},
    ]})
    page = console.page
    await expect(page.locator("#results .banner-error")).to_contain_text("ALREADY_EXISTS")
    await expect(card(console, "fine")).to_have_attribute("data-outcome", "rolled_back")
    await expect(card(console, "after")).to_have_attribute("data-outcome", "not_run")
    twice = card(console, "twice")
    await expect(twice).to_have_attribute("data-outcome", "failed")
    await expect(twice.locator(".error-info")).to_contain_text("UNIQUE_VIOLATION")
    await expect(twice.locator(".error-info")).to_contain_text("23505")
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
    await console.shot("failure-atomic")
    await twice.locator("button.locate").click()
    selected = await page.evaluate(
        "(() => { const t = document.getElementById('batch');"
        " return t.value.slice(t.selectionStart, t.selectionEnd); })()")
    assert selected == '"id": "twice"'

    # A bad request: its field violation is shown on the operation its path names.
    await run(console, {"operations": [
        {"id": "fine", "get": {"table": "customers", "key": {"id": "1"}}},
        {"id": "typo", "insert": {"table": "customers", "rows": [{"nam": "Cy"}]}},
    ]})
    typo = card(console, "typo")
    await expect(typo).to_have_attribute("data-outcome", "failed")
    await expect(typo.locator(".violations")).to_contain_text("operations[1].insert.rows[0].nam")
    await expect(typo.locator(".violations")).to_contain_text('has no column "nam"')
    await expect(card(console, "fine").locator(".violations")).to_have_count(0)
    await console.shot("failure")


async def test_console_runs_an_independent_batch_each_operation_with_its_outcome(
        console: ConsolePage) -> None:
    page = console.page
    await page.select_option("#mode", "MODE_INDEPENDENT")
    await page.fill("#batch", json.dumps({"operations": [
        {"id": "ghost", "update": {"table": "orders", "key": {"id": "404"},
                                   "set": {"status": "paid"}}},
        {"id": "note", "depends_on": ["ghost"],
         "delete": {"table": "orders", "key": {"id": "404"}}},
        {"id": "stock", "get": {"table": "products", "key": {"id": "2"}}},
    ]}))
    await page.press("#batch", "Control+Enter")  # runs it, as the Run button does
    await expect(card(console, "ghost")).to_have_attribute("data-outcome", "failed")
    await expect(card(console, "ghost")).to_contain_text("NOT_FOUND")
    await expect(card(console, "note")).to_have_attribute("data-outcome", "skipped")
    await expect(card(console, "stock")).to_have_attribute("data-outcome", "succeeded")


async def test_console_pages_through_a_query(console: ConsolePage) -> None:
    batch = {"operations": [{"id": "page", "query": {
        "table": "products", "order_by": [{"column": "id"}], "limit": 1}}]}
    await run(console, batch)
    page = card(console, "page")
    await expect(page.locator("tbody td").nth(2)).to_have_text("Keyboard")
    await page.locator("button.next-page").click()
    await expect(page.locator("tbody td").nth(2)).to_have_text("Mouse")
    assert json.loads(await console.page.input_value("#batch")) == batch  # the editor's stays


async def test_console_renders_database_values_as_text(
        console: ConsolePage, db: asyncpg.Connection) -> None:
    hostile = ["<script>alert(1)</script>", '<img src=x onerror="alert(2)">',
               "<b>bold</b> & &amp;"]
    await db.executemany("INSERT INTO customers (name, email) VALUES ($1, $2)",
                         [(h, f"{i}@example.com") for i, h in enumerate(hostile)])
    await run(console, {"operations": [
        {"id": "all", "query": {"table": "customers", "order_by": [{"column": "id"}]}}]})
    cells = card(console, "all").locator("tbody tr td:nth-child(2)")
    await expect(cells).to_have_text(hostile)
    page = console.page
    for tag in ("script", "img", "b"):
        await expect(page.locator(f"#results {tag}")).to_have_count(0)
    assert console.dialogs == []
    await console.shot("text-only")


async def test_console_is_served_under_a_strict_content_security_policy(
        served: tuple[App, str], console: ConsolePage) -> None:
    for path in ("/console/", "/console/app.js", "/console/console.css"):
        response = await console.page.request.get(served[1] + path)
        assert response.status == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy
    # The page itself needs nothing the policy forbids: no inline script, style or handler.
    static = ROOT / "server/batchd/http/console_static"
    index = (static / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\ssrc=)|<style|\sstyle=|\son[a-z]+=", index)
    for module in static.glob("*.js"):
        assert not re.search(r"\beval\(|new Function|innerHTML|outerHTML|insertAdjacentHTML"
                             r"|document\.write|localStorage|sessionStorage|document\.cookie",
                             module.read_text()), module.name
    await run(console, WITH_REFERENCE)  # and the fixture checks: no violation was reported


async def test_console_copies_the_batch_as_python_grpcurl_and_curl_that_run(
        served: tuple[App, str], console: ConsolePage, db: asyncpg.Connection,
        tmp_path: Path) -> None:
    app, _ = served
    page = console.page
    await page.fill("#batch", json.dumps(WITH_REFERENCE))
    await page.fill("#grpc-target", f"127.0.0.1:{app.port}")
    await page.select_option("#copy-format", "python")
    python = await page.input_value("#copy-text")
    await console.shot("copy-python")
    (tmp_path / "batch.py").write_text(python)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv/bin/python"), str(tmp_path / "batch.py"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["committed"] is True
    assert await db.fetchval("SELECT count(*) FROM orders") == 1

    await page.select_option("#copy-format", "grpcurl")
    await page.fill("#batch", json.dumps({"operations": [
        {"id": "count", "query": {"table": "orders", "count": True, "limit": 1}}]}))
    command = await page.input_value("#copy-text")
    assert command.startswith(f"grpcurl -plaintext -d @ 127.0.0.1:{app.port} ")
    env["PATH"] = f"{ROOT / '.venv/bin'}:{env['PATH']}"
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["results"][0]["totalCount"] == "1"

    await page.select_option("#copy-format", "curl")
    command = await page.input_value("#copy-text")
    assert f"{served[1]}/batchd.v1.BatchService/BatchExecute" in command
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["results"][0]["totalCount"] == "1"


async def test_console_ingests_a_dropped_csv_file_and_lists_its_rejects(
        served: tuple[App, str], console: ConsolePage, db: asyncpg.Connection,
        tmp_path: Path) -> None:
    data = "name,email\nEve,eve@example.com\nNo email,\nFay,fay@example.com\n"
    page = console.page
    await page.select_option("#ingest-table", "customers")
    # Dropped on the zone, as a person drags a file from their desktop.
    await page.evaluate("""(data) => {
        const files = new DataTransfer();
        files.items.add(new File([data], "customers.csv", { type: "text/csv" }));
        document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
    }""", data)
    await expect(page.locator("#drop")).to_have_attribute("data-state", "done")
    await expect(page.locator("#progress")).to_have_js_property("value", len(data))
    rejects = page.locator("#ingest-output table.rejects tbody tr")
    await expect(rejects).to_have_count(1)
    await expect(rejects).to_contain_text("email")
    await console.shot("ingest")
    assert sorted(await db.fetch("SELECT name FROM customers")) == [("Eve",), ("Fay",)]

    # The same upload with curl, as the page shows it, runs.
    command = await page.text_content("#ingest-curl")
    assert command == (f"curl -sS -T 'customers.csv' -H 'Content-Type: text/csv' "
                       f"'{served[1]}/v1/ingest/customers?mode=independent'")
    (tmp_path / "customers.csv").write_text("name,email\nIvy,ivy@example.com\n")
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["rows_written"] == 1


async def test_console_ingests_a_parquet_file(
        console: ConsolePage, db: asyncpg.Connection, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "events.parquet"
    pq.write_table(pa.table({"name": ["Gil", "Hal"], "email": ["gil@x.org", "hal@x.org"]}), data)
    page = console.page
    await page.select_option("#ingest-table", "customers")
    await page.select_option("#ingest-mode", "atomic")
    await page.set_input_files("#file", str(data))
    await expect(page.locator("#drop")).to_have_attribute("data-state", "done")
    await expect(page.locator("#ingest-status")).to_contain_text("application/vnd.apache.parquet")
    await expect(page.locator("#ingest-output table.summary")).to_contain_text("atomic")
    await expect(page.locator("#ingest-output")).to_contain_text("No row was rejected.")
    assert sorted(await db.fetch("SELECT name FROM customers")) == [("Gil",), ("Hal",)]


async def test_console_decodes_error_details_sent_without_their_json(
        console: ConsolePage) -> None:
    """Connect's ``debug`` (a detail's JSON) is optional: without it the page decodes the
    detail's protobuf bytes itself (protowire.js), to the same JSON protobuf's own gives."""
    response = batch_pb2.BatchExecuteResponse(attempts=1, results=[
        batch_pb2.OperationResult(id="a", outcome=batch_pb2.OUTCOME_ROLLED_BACK,
                                  status=status_pb2.Status(code=10, message="rolled back")),
        batch_pb2.OperationResult(id="b", outcome=batch_pb2.OUTCOME_SUCCEEDED, rows_affected=1,
                                  columns=[batch_pb2.ResultColumn(name="n", type="bigint")])])
    response.results[1].rows.add().update(
        {"n": "9007199254740993", "x": 1.5, "ok": True, "none": None, "list": [1, "two"],
         "obj": {"k": "<b>v</b>"}})
    info = error_details_pb2.ErrorInfo(reason="UNIQUE_VIOLATION", domain="batchd",
                                       metadata={"operation_id": "b", "sqlstate": "23505"})
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="operations[1].insert",
                                                    description="no")])
    response.results[0].status.details.add().Pack(info)
    decoded = await console.page.evaluate("""async (details) => {
        const { detailJson } = await import("/console/api.js");
        return details.map(detailJson);
    }""", [{"type": m.DESCRIPTOR.full_name,
            "value": base64.b64encode(m.SerializeToString()).decode().rstrip("=")}
           for m in (response, info, bad)])
    assert decoded == [
        {"@type": f"type.googleapis.com/{m.DESCRIPTOR.full_name}", **json_format.MessageToDict(m)}
        for m in (response, info, bad)]
