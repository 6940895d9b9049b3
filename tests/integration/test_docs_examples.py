"""Every example of the docs runs as a reader runs it: each page's grpcurl, shell, Python,
TypeScript and SQL examples in page order, against a server of the page's own on a fresh demo
schema (the database `scripts/serve` makes), with their outputs compared where the page shows
them. The rules (markers, ``...`` in outputs) are in tests/support/doc_examples.py."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from batchd.app import App
from batchd.config import Settings
from tests.support.doc_examples import (
    PYTHON_RUNNER,
    ROOT,
    Block,
    addressed,
    blocks,
    check_markers,
    commands,
    marker_arg,
    output_matches,
    pages,
)
from tests.support.ports import free_port

VENV_BIN = Path(sys.executable).parent
TS_NEEDS = ("@grpc/grpc-js", "@grpc/proto-loader", "protobufjs", ".bin/tsx")


def node_modules() -> Path | None:
    """The node_modules folder named by BATCHD_NODE_MODULES (.ci/run installs it), if usable."""
    folder = os.environ.get("BATCHD_NODE_MODULES")
    if not folder or shutil.which("node") is None:
        return None
    path = Path(folder).resolve()
    return path if all((path / name).exists() for name in TS_NEEDS) else None


def test_every_example_says_whether_it_runs():
    assert check_markers() == []


def test_the_home_page_leads_to_the_four_newcomers_paths_whose_examples_run():
    """A reader finds in a minute how to run a batch with a reference, stream a Parquet file,
    map a token to a database role and drain a replica: the home page links each to a heading
    that exists; the first three pages' examples are run below (draining needs a fleet:
    scripts/test-fleet)."""
    home = (ROOT / "docs" / "index.md").read_text()
    for link in ("quickstart.md#run-a-batch-with-a-reference", "tutorials/ingest.md#a-parquet-file",
                 "how-to/roles.md", "tutorials/fleet.md#4-drain-a-replica-rolling-restart"):
        assert f"({link})" in home, link
        page, _, heading = link.partition("#")
        titles = [re.sub(r"[^\w\- ]", "", line.lstrip("#").strip()).lower().replace(" ", "-")
                  for line in (ROOT / "docs" / page).read_text().splitlines()
                  if line.startswith("#")]
        assert not heading or heading in titles, link
    names = {p.relative_to(ROOT).as_posix() for p in pages()}
    assert {"README.md", "docs/quickstart.md", "docs/tutorials/ingest.md",
            "docs/how-to/roles.md"} <= names


class Page:
    """A page's server, database and folder, as its examples change them."""

    def __init__(self, dsn: str, folder: Path) -> None:
        self.dsn = dsn
        self.folder = folder
        self.app: App | None = None

    async def start(self, **settings: Any) -> None:
        await self.stop()
        values: dict[str, Any] = dict(dsn=self.dsn, host="127.0.0.1", port=0, demo_schema=True,
                                      pool_min_size=1, pool_max_size=4, metrics_port=0,
                                      http_port=free_port())
        self.app = await App.start(Settings(**{**values, **settings}))

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop(grace=0)
            self.app = None

    @property
    def port(self) -> int:
        assert self.app is not None
        return self.app.port

    @property
    def http_port(self) -> int:
        assert self.app is not None and self.app.http is not None
        return self.app.http.port

    def env(self) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "BATCHD_TARGET": f"127.0.0.1:{self.port}", "COLUMNS": "100"}

    async def run(self, argv: list[str], stdin: bytes | None = None) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.folder, env=self.env(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=90)
        return proc.returncode or 0, out.decode()


@pytest.fixture
async def page_database(dsn: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database of the page's own on the session's PostgreSQL, dropped afterwards with the
    roles the page created (roles belong to the cluster: a page's CREATE ROLE would fail the
    next run on a BATCHD_TEST_DSN server)."""
    name = "docs_" + re.sub(r"\W", "_", request.node.callspec.id)[:40]
    admin = await asyncpg.connect(dsn)
    roles = "SELECT rolname FROM pg_roles"
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        before = {r["rolname"] for r in await admin.fetch(roles)}
        base, _, query = dsn.partition("?")
        yield base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in {r["rolname"] for r in await admin.fetch(roles)} - before:
            await admin.execute(f'DROP ROLE "{role}"')
    finally:
        await admin.close()


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
async def test_the_pages_examples_run_as_shown(page: Path, page_database: str, tmp_path: Path):
    found = blocks(page)
    modules = node_modules()
    if modules is None and any(b.lang == "ts" and (b.marker or "").startswith("<!-- run")
                               for b in found):
        pytest.skip("needs node and BATCHD_NODE_MODULES (.ci/run installs them)")
    for name in ("protos", "third_party"):
        (tmp_path / name).symlink_to(ROOT / name)
    if modules is not None:
        (tmp_path / "node_modules").symlink_to(modules)
    state = Page(page_database, tmp_path)
    await state.start()
    try:
        for i, block in enumerate(found):
            if block.marker is None or not block.marker.startswith("<!-- run"):
                continue
            following = found[i + 1] if i + 1 < len(found) else None
            shown = following.text if following and following.marker == "<!-- output -->" else ""
            await run_block(state, block, shown)
    finally:
        await state.stop()


async def run_block(page: Page, block: Block, shown: str) -> None:
    arg = marker_arg(block)
    if arg and arg.startswith("file "):
        (page.folder / arg[5:].strip()).write_text(block.text)
    elif arg == "config":
        await page.start(**tomllib.loads(block.text))
    elif block.lang == "sql":
        conn = await asyncpg.connect(page.dsn)
        try:
            await conn.execute(block.text)
        finally:
            await conn.close()
    elif block.lang in ("sh", "console", "bash"):
        for command in commands(block):
            aimed = addressed(command.text, page.port, page.http_port)
            code, out = await page.run(["bash", "-c", aimed])
            where = f"{block.page.relative_to(ROOT)}:{command.line}"
            assert output_matches(command.shown, out), (
                f"{where}: `{command.text}` printed\n{out}\nwhere the page shows\n{command.shown}")
            assert code == 0 or command.shown.strip(), f"{where}: exit code {code}\n{out}"
    elif block.lang == "python":
        path = page.folder / f"example_{block.line}.py"
        path.write_text(addressed(block.text, page.port, page.http_port))
        code, out = await page.run([sys.executable, "-c", PYTHON_RUNNER, str(path)])
        assert code == 0, f"{block.where}: exit code {code}\n{out}"
        assert output_matches(shown, out), f"{block.where} printed\n{out}\nnot\n{shown}"
    elif block.lang == "ts":
        path = page.folder / f"example_{block.line}.mts"
        path.write_text(block.text)
        code, out = await page.run([str(page.folder / "node_modules" / ".bin" / "tsx"),
                                    path.name])
        assert code == 0, f"{block.where}: exit code {code}\n{out}"
        assert output_matches(shown, out), f"{block.where} printed\n{out}\nnot\n{shown}"
    else:
        raise AssertionError(f"{block.where}: no way to run a {block.lang!r} block")

