"""The console reaches only what its token may: it is a client of the same authenticated API,
so a token's scopes and database role bound what it shows and what it can do. batchd runs as a
login role that is neither superuser nor owner of these tables (tests/support/roles.py); the
tenant's role reads con_notes and has no privilege at all on con_hidden.

Also pinned: the token lives in the page's memory only (no web storage, no cookie, gone on a
reload), and without one the console shows the server's UNAUTHENTICATED, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Locator, expect

from batchd.app import App
from tests.support.browser import ConsolePage, console_page, console_server
from tests.support.roles import LOGIN, PASSWORD, drop_grants, dsn_as, make_login_role, token

pytestmark = pytest.mark.browser

OWN, TENANT, READER = "console-own-secret", "console-tenant-secret", "console-reader-secret"
TENANTS = ["console_tenant"]
SCOPES = ["read:public.*", "write:public.*", "call:public.*"]
SETUP = f"""
DROP TABLE IF EXISTS con_notes, con_hidden CASCADE;
CREATE TABLE con_notes (id bigserial PRIMARY KEY, note text);
CREATE TABLE con_hidden (id bigserial PRIMARY KEY, secret text);
GRANT SELECT, INSERT, UPDATE, DELETE ON con_notes, con_hidden TO {LOGIN};
GRANT USAGE ON SEQUENCE con_notes_id_seq, con_hidden_id_seq TO {LOGIN};
INSERT INTO con_notes (note) VALUES ('visible');
INSERT INTO con_hidden (secret) VALUES ('the secret');
GRANT SELECT ON con_notes TO console_tenant;
"""


@pytest.fixture
async def served(schema: str, db: asyncpg.Connection) -> AsyncIterator[tuple[App, str]]:
    await make_login_role(db, TENANTS)
    await db.execute(SETUP)
    tokens = [token(OWN, "own", None, SCOPES),
              token(TENANT, "tenant", "console_tenant", SCOPES),
              token(READER, "reader", None, ["read:public.*"])]
    try:
        async with console_server(dsn_as(schema, LOGIN, PASSWORD), tokens=tokens,
                                  demo_schema=False, expose=["public.con_*"],
                                  expose_functions=[]) as served:
            yield served
    finally:
        await db.execute("DROP TABLE IF EXISTS con_notes, con_hidden CASCADE")
        await drop_grants(db, TENANTS)


@pytest.fixture
async def console(served: tuple[App, str]) -> AsyncIterator[ConsolePage]:
    async with console_page(served[1]) as page:
        yield page
        assert page.errors == [], "the page threw"
        assert await page.csp_violations() == []


async def use_token(console: ConsolePage, secret: str) -> None:
    page = console.page
    await page.fill("#token", secret)
    await page.click('#token-form button[type="submit"]')
    await expect(page.locator("#schema")).to_have_attribute("data-state", "loaded")


async def run(console: ConsolePage, batch: dict[str, object]) -> None:
    page = console.page
    await page.fill("#batch", json.dumps(batch, indent=2))
    await page.click("#run")
    await expect(page.locator("#results")).not_to_have_attribute(
        "data-state", "running")


def table(console: ConsolePage, name: str) -> Locator:
    return console.page.locator(f'details.table[data-table="{name}"]')


async def test_console_without_a_token_shows_unauthenticated_and_no_schema(
        console: ConsolePage) -> None:
    await expect(console.page.locator("#schema")).to_have_attribute("data-state", "failed")
    await expect(console.page.locator("#schema")).to_contain_text("UNAUTHENTICATED")
    await expect(console.page.locator("details.table")).to_have_count(0)
    await run(console, {"operations": [{"id": "peek", "query": {"table": "con_hidden"}}]})
    await expect(console.page.locator("#results .banner-error")).to_contain_text(
        "UNAUTHENTICATED")
    await expect(console.page.locator("#results")).not_to_contain_text("the secret")


async def test_console_keeps_the_token_in_page_memory_only(
        served: tuple[App, str], console: ConsolePage) -> None:
    page = console.page
    await use_token(console, OWN)
    await expect(page.locator("#token")).to_have_value("")
    storage = await page.evaluate(
        "[localStorage.length, sessionStorage.length, document.cookie, location.href]")
    assert storage == [0, 0, "", f"{served[1]}/console/"]
    cookies = await page.context.cookies()
    assert cookies == []
    # Copied commands read $BATCHD_TOKEN: the token itself is never written into them.
    for fmt in ("grpcurl", "curl", "python"):
        await page.select_option("#copy-format", fmt)
        text = await page.input_value("#copy-text")
        assert OWN not in text and "BATCHD_TOKEN" in text, fmt
    ingest = await page.text_content("#ingest-curl")
    assert ingest is not None and OWN not in ingest and "BATCHD_TOKEN" in ingest
    await page.reload()
    await expect(page.locator("#schema")).to_contain_text("UNAUTHENTICATED")
    await use_token(console, OWN)
    await page.click("#forget-token")
    await expect(page.locator("#schema")).to_contain_text("UNAUTHENTICATED")
    await expect(page.locator("details.table")).to_have_count(0)


async def test_console_shows_and_runs_only_what_the_tokens_role_allows(
        console: ConsolePage, db: asyncpg.Connection, tmp_path: Path) -> None:
    page = console.page
    await use_token(console, OWN)
    await expect(table(console, "public.con_hidden")).to_be_visible()
    await use_token(console, TENANT)
    await expect(table(console, "public.con_hidden")).to_have_count(0)
    await expect(table(console, "public.con_notes").locator("button.op")).to_have_text(
        ["get", "query"])
    await expect(page.locator("#ingest-table option:enabled")).to_have_count(0)

    # A batch typed by hand is refused by the server, on the operation that tried.
    await run(console, {"operations": [
        {"id": "notes", "query": {"table": "con_notes"}},
        {"id": "peek", "query": {"table": "con_hidden"}}]})
    await expect(page.locator('#results .result[data-operation="peek"]')).to_have_attribute(
        "data-outcome", "failed")
    await expect(page.locator("#results .banner-error")).to_contain_text("PERMISSION_DENIED")
    await expect(page.locator("#results")).not_to_contain_text("the secret")
    await console.shot("role")
    await run(console, {"operations": [
        {"id": "write", "insert": {"table": "con_hidden", "rows": [{"secret": "mine"}]}}]})
    await expect(page.locator("#results .banner-error")).to_contain_text("PERMISSION_DENIED")

    # The file drop offers no table; a table forced into its choice is refused by the server.
    data = tmp_path / "hidden.csv"
    data.write_text("secret\nsmuggled\n")
    await page.evaluate(
        "document.getElementById('ingest-table').add(new Option('con_hidden', 'con_hidden'))")
    await page.select_option("#ingest-table", "con_hidden")
    await page.set_input_files("#file", str(data))
    await expect(page.locator("#drop")).to_have_attribute("data-state", "failed")
    await expect(page.locator("#ingest-status")).to_contain_text("PERMISSION_DENIED")
    assert await db.fetch("SELECT secret FROM con_hidden") == [("the secret",)]


async def test_console_with_a_read_only_token_offers_no_write(console: ConsolePage,
                                                              db: asyncpg.Connection) -> None:
    page = console.page
    await use_token(console, READER)
    await expect(table(console, "public.con_notes").locator("button.op")).to_have_text(
        ["get", "query"])
    await expect(page.locator("#ingest-table option:enabled")).to_have_count(0)
    await run(console, {"operations": [
        {"id": "write", "insert": {"table": "con_notes", "rows": [{"note": "no"}]}}]})
    await expect(page.locator('#results .result[data-operation="write"]')).to_have_attribute(
        "data-outcome", "failed")
    await expect(page.locator("#results .banner-error")).to_contain_text("PERMISSION_DENIED")
    assert await db.fetchval("SELECT count(*) FROM con_notes") == 1
