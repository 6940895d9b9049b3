"""Where a setting is in its TOML file, for the one line of a start-up failure."""

from __future__ import annotations

from typing import Any

import pytest

from batchd.startup import _line_of, redact_dsn

TOML = """\
# batchd settings
port = 50051
expose = [
  "public.*",
  3,
]
client_cert_roles = { app = "tenant" }

[[tokens]]
principal = "a"
scopes = ["admin"]

[[tokens]]
principal = "b"
role = "r"

[tables."public.orders"]
operations = ["get"]

[client_cert_scopes]
app = ["admin"]
"""


@pytest.mark.parametrize(("loc", "line"), [
    (("port",), 2), (("expose", 1), 3), (("client_cert_roles", "app"), 7),
    (("tokens", 0, "scopes"), 11), (("tokens", 1, "role"), 15), (("tokens", 1), 13),
    (("tokens", 1, "sha256"), 13), (("tables", "public.orders", "operations"), 18),
    (("tables", "public.orders"), 17), (("client_cert_scopes", "app", 0), 21),
    (("principal",), None), (("missing",), None),
])
def test_a_settings_line_is_found_by_its_key(loc: tuple[Any, ...], line: int | None) -> None:
    assert _line_of(TOML, loc) == line


def test_a_dsn_is_shown_without_its_password() -> None:
    assert redact_dsn("postgresql://app:s3cr:et@db:5432/shop?sslmode=require") == \
        "postgresql://app:***@db:5432/shop?sslmode=require"
    assert redact_dsn("postgresql://db/shop?user=app&password=s3cret&x=1") == \
        "postgresql://db/shop?user=app&password=***&x=1"
    assert redact_dsn("postgresql://app@db/shop") == "postgresql://app@db/shop"
