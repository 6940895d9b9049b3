"""A Connect client from another language calls BatchExecute on the HTTP port: Node with
``@connectrpc/connect`` and ``@connectrpc/connect-node`` (tests/support/connect_client.mjs), in
Connect's JSON and binary forms, and reads a failure's code and details.

It needs Node and those npm packages (with ``@bufbuild/protobuf``) in the ``node_modules``
folder named by ``BATCHD_CONNECT_NODE_MODULES`` (``.ci/run`` installs them); without them it is
skipped, saying so."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from batchd.v1 import batch_pb2
from tests.support.http import http_app

CLIENT = Path(__file__).parents[1] / "support" / "connect_client.mjs"
NEEDED = ("@connectrpc/connect", "@connectrpc/connect-node", "@bufbuild/protobuf")
BATCH = {"operations": [
    {"id": "customer", "insert": {"table": "customers",
                                  "rows": [{"name": "Ada", "email": "ada@example.com"}]}},
    {"id": "order", "insert": {"table": "orders", "returning": ["id"], "rows": [
        {"customer_id": {"$ref": "customer.id"}, "total": "69.89"}]}},
]}


def node_modules() -> Path | None:
    folder = os.environ.get("BATCHD_CONNECT_NODE_MODULES")
    if not folder or shutil.which("node") is None:
        return None
    path = Path(folder).resolve()
    return path if all((path / name).exists() for name in NEEDED) else None


def with_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    """Fill in each field's JSON name, as protoc does for its plugins (Python's descriptors
    leave it out; @bufbuild/protobuf reads it)."""
    for field in message.field:
        if not field.json_name:
            head, *rest = field.name.split("_")
            field.json_name = head + "".join(word[:1].upper() + word[1:] for word in rest)
    for nested in message.nested_type:
        with_json_names(nested)


def descriptor_set() -> bytes:
    """batchd's contract and every file it imports, dependencies first."""
    files: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def add(file) -> None:  # type: ignore[no-untyped-def]
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        for message in proto.message_type:
            with_json_names(message)
        files.append(proto)

    add(batch_pb2.DESCRIPTOR)
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()


async def run_client(modules: Path, base_url: str, folder: Path, form: str) -> dict:
    (folder / "descriptors.binpb").write_bytes(descriptor_set())
    (folder / "batch.json").write_text(json.dumps(BATCH))
    script = folder / "node_modules"
    if not script.exists():
        script.symlink_to(modules)
    (folder / "client.mjs").write_text(CLIENT.read_text())
    proc = await asyncio.create_subprocess_exec(
        "node", str(folder / "client.mjs"), base_url, str(folder / "descriptors.binpb"),
        str(folder / "batch.json"), form, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.skipif(node_modules() is None, reason="needs node and BATCHD_CONNECT_NODE_MODULES "
                    "(npm install @connectrpc/connect @connectrpc/connect-node "
                    "@bufbuild/protobuf)")
@pytest.mark.parametrize("form", ["json", "binary"])
async def test_a_node_connect_client_runs_a_batch_and_reads_a_failure(schema, db, tmp_path, form):
    modules = node_modules()
    assert modules is not None
    async with http_app(schema) as (app, _):
        assert app.http is not None
        url = f"http://127.0.0.1:{app.http.port}"
        first = await run_client(modules, url, tmp_path, form)
        again = await run_client(modules, url, tmp_path, form)
    results = first["response"]["results"]
    assert [r["outcome"] for r in results] == ["OUTCOME_SUCCEEDED"] * 2
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    assert again["code"] == "AlreadyExists"
    assert 'operation "customer"' in again["message"]
    assert "google.rpc.ErrorInfo" in again["details"]
