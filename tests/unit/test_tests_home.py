"""The suite's own house: test modules share nothing with each other but what tests/support
(servers, ports, roles, CLI runners, stream helpers, proxies) and the conftest fixtures hold.

A test module that imports another drags the other's imports, fixtures and module-level state
into its own collection: ``test_cli_auth`` once failed to collect without ``cryptography``
because it imported ``test_auth``. Imports are read with ``ast``, all of them, inside functions
too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports; ``from tests.x import y`` counts as ``tests.x.y`` too,
    since ``y`` may be a module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_of_tests() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if ".venv" not in p.parts)


def test_no_test_module_imports_another_test_module():
    modules = {module_name(p) for p in modules_of_tests()}
    assert len(modules) > 50, "found too few test modules: is TESTS right?"
    crossings = sorted(f"{module_name(p)} imports {name}" for p in modules_of_tests()
                       for name in imported(p) & modules)
    assert crossings == [], "move what they share into tests/support/:\n" + "\n".join(crossings)


def test_helpers_live_in_tests_support_not_beside_the_tests():
    loose = sorted(p.name for p in TESTS.glob("*.py")
                   if p.name not in {"__init__.py", "conftest.py"})
    assert loose == [], f"helpers beside the test folders (move them to tests/support/): {loose}"


def test_cli_auth_collects_without_cryptography():
    """Only test_auth needs ``cryptography`` (a throwaway CA); the CLI's token tests must not."""
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'cryptography':\n"
               "            raise ImportError('cryptography is blocked')\n"
               "sys.meta_path.insert(0, Block())\n"
               "import tests.integration.test_cli_auth\n")
    done = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
