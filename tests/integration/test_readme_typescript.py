"""The README's TypeScript example (section "Calling batchd from Go / TypeScript"), run as it
stands against a real server: it prints what the README shows, and run again it is replayed.

It needs Node and the npm packages the README installs, in a ``node_modules`` folder named by
``BATCHD_NODE_MODULES`` (e.g. after ``npm install @grpc/grpc-js @grpc/proto-loader protobufjs@7
tsx`` in a folder of its own); without them it is skipped. Each run takes a second or two."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
NEEDED = ("@grpc/grpc-js", "@grpc/proto-loader", "protobufjs", ".bin/tsx")


def readme_example() -> tuple[str, str]:
    """The program and the output the README shows for it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Calling batchd from Go / TypeScript\n", 1)[1].split("\n## ", 1)[0]
    program = section.split("```ts\n", 1)[1].split("```", 1)[0]
    output = section.split("```text\n", 1)[1].split("```", 1)[0]
    return program, output


def node_modules() -> Path | None:
    """The node_modules folder named by BATCHD_NODE_MODULES, if node and the packages are there."""
    folder = os.environ.get("BATCHD_NODE_MODULES")
    if not folder or shutil.which("node") is None:
        return None
    path = Path(folder).resolve()
    return path if all((path / name).exists() for name in NEEDED) else None


def same_but_ids(text: str) -> str:
    """The output without its ids, which depend on what ran before."""
    return re.sub(r'"id":"\d+"', '"id":"N"', text)


def test_the_readme_shows_a_typescript_program_and_its_output():
    program, output = readme_example()
    assert "client.BatchStream()" in program and "grpc-status-details-bin" in program
    assert "ALREADY_EXISTS UNIQUE_VIOLATION" in output and output.startswith("hedy ")


@pytest.mark.skipif(node_modules() is None, reason="needs node and BATCHD_NODE_MODULES "
                    "(npm install @grpc/grpc-js @grpc/proto-loader protobufjs@7 tsx)")
async def test_the_readmes_typescript_program_prints_what_the_readme_shows(app, db, tmp_path):
    await db.execute("INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com')")
    modules = node_modules()
    assert modules is not None
    program, shown = readme_example()
    (tmp_path / "batchd-example.mts").write_text(program)
    for name in ("protos", "third_party"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "node_modules").symlink_to(modules)

    async def run() -> str:
        proc = await asyncio.create_subprocess_exec(
            str(modules / ".bin" / "tsx"), "batchd-example.mts", cwd=tmp_path,
            env={**os.environ, "BATCHD_TARGET": f"127.0.0.1:{app.port}"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    assert same_but_ids(await run()) == same_but_ids(shown)
    again = await run()
    assert "committed: true replayed: true" in again
    assert again.count('"duplicate":true') == 2
    assert await db.fetchval("SELECT count(*) FROM customers") == 4  # Ada, Hedy, Eve, Fay
