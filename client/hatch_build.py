"""Build hook of batchd-client: generate the contract (``batchd/v1``) before packaging.

In the repository, ``scripts/generate`` makes it from ``../protos`` (the one way it is made).
From an sdist, which carries the generated modules and no protos, there is nothing to do.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class GenerateProtos(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "generate-protos"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        script = Path(self.root).parent / "scripts" / "generate"
        if script.exists():
            subprocess.run([sys.executable, str(script)], check=True)
        elif not (Path(self.root) / "batchd" / "v1" / "batch_pb2.py").exists():
            raise RuntimeError("no scripts/generate beside this folder, and no generated "
                               "batchd/v1: build from the repository or from an sdist")
