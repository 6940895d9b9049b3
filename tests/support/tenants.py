"""Two tenants as PostgreSQL roles and a table with row-level security that each sees only its
rows of: the setup, a note to insert and the query that reads them back (tests/integration/
test_roles.py in-process, tests/fleet/test_roles.py behind pgbouncer)."""

from __future__ import annotations

from typing import Any

SETUP = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenant_a') THEN CREATE ROLE tenant_a; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenant_b') THEN CREATE ROLE tenant_b; END IF;
END $$;
GRANT tenant_a, tenant_b TO current_user;
DROP TABLE IF EXISTS tenant_notes;
CREATE TABLE tenant_notes (id bigserial PRIMARY KEY,
                           tenant text NOT NULL DEFAULT current_user, note text);
ALTER TABLE tenant_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON tenant_notes USING (tenant = current_user)
    WITH CHECK (tenant = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_notes TO tenant_a, tenant_b;
GRANT USAGE ON SEQUENCE tenant_notes_id_seq TO tenant_a, tenant_b;
"""

QUERY = {"id": "q", "query": {"table": "tenant_notes", "columns": ["tenant", "note"]}}


def note(text: str, **extra: str) -> dict[str, Any]:
    """An insert of one note (``extra``: other columns, such as a forged ``tenant``)."""
    return {"id": "n", "insert": {"table": "tenant_notes", "rows": [{"note": text, **extra}],
                                  "returning": ["tenant"]}}
