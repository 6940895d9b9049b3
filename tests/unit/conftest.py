"""Unit tests never reach PostgreSQL or a server.

The fixtures of tests/conftest.py that do (``dsn`` and everything built on it) are refused at
collection, before any of them could start the embedded PostgreSQL: a unit test that asks for
one belongs in tests/integration/, not here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
DATABASE_FIXTURES = frozenset({"dsn", "schema", "app", "channel", "stub", "db"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        wanted = DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if wanted:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but asks for "
                                    f"{', '.join(sorted(wanted))}: move it out of tests/unit")


@pytest.fixture(autouse=True)
def clean_tables() -> None:
    """Overrides tests/conftest.py's: there are no tables here (and no event loop is needed)."""
