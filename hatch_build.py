"""Build hook: generate the protobuf/gRPC modules before packaging (wheel and editable)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class GenerateProtos(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "generate-protos"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        script = Path(self.root) / "scripts" / "generate"
        subprocess.run([sys.executable, str(script)], check=True)
