"""What a stream's role may do with its table, asked of PostgreSQL before the first chunk is
written: whether it may insert its rows (a merging stream: and read their key and update the
columns its on_conflict sets), and whether they must go in through a staging table.

A role that may not INSERT into the table (or into one of the stream's columns) is refused at
once, PERMISSION_DENIED naming the table, the privilege and the role: a missing privilege is
not a bad row. Written row by row it would reject every row, and an INDEPENDENT chunk would be
recorded as committed with nothing written, so that the same chunk re-sent after the GRANT
would be taken for a duplicate and never written.

PostgreSQL refuses COPY FROM into a table whose row-level security applies to the role
(``row_security_active``): such a table's chunks go through a staging table
(batchd.stream.sink), as a merging stream's (header.on_conflict) are: that needs the
TEMPORARY privilege on the database (PostgreSQL gives it to PUBLIC unless an administrator
revoked it): checked here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from batchd.errors import PermissionDenied
from batchd.pgtext import quote_ident
from batchd.stream.target import Target
from batchd.vocabulary import reasons

_ACCESS_SQL = """
SELECT row_security_active(c.oid) AS rls, current_user AS role,
       current_database() AS database,
       has_table_privilege(c.oid, 'INSERT') AS table_insert,
       ARRAY(SELECT a FROM unnest($2::text[]) AS a
             WHERE NOT has_column_privilege(c.oid, a, 'INSERT')) AS denied,
       has_database_privilege(current_database(), 'TEMPORARY') AS temporary,
       ARRAY(SELECT a FROM unnest($3::text[]) AS a
             WHERE NOT has_column_privilege(c.oid, a, 'UPDATE')) AS update_denied,
       ARRAY(SELECT a FROM unnest($4::text[]) AS a
             WHERE NOT has_column_privilege(c.oid, a, 'SELECT')) AS select_denied,
       has_table_privilege(c.oid, 'DELETE') AS table_delete
FROM pg_class c WHERE c.oid = $1::regclass
"""


@dataclass(frozen=True, slots=True)
class Access:
    """What the check found: whether row-level security applies (rows then go through the
    staging table)."""

    rls: bool


async def check(conn: asyncpg.Connection, target: Target) -> Access:
    """As the role the stream runs as (inside its transaction): refuse a stream whose rows the
    role may not insert, or (a merging stream) update by its key (PermissionDenied), else say
    how they go in."""
    table = target.table
    upsert = target.upsert
    updates = [c.name for c in upsert.updates] if upsert is not None else []
    # ON CONFLICT reads the key, and (DO UPDATE) the columns it compares and sets.
    read = [c.name for c in upsert.key] + updates if upsert is not None else []
    row = await conn.fetchrow(_ACCESS_SQL, table.sql, target.names, updates, read)
    role = row["role"]
    if row["denied"]:
        denied = list(row["denied"])
        where = (f'table "{table.qualified_name}"' if row["table_insert"] is False
                 and denied == target.names else
                 f'column{"s" if len(denied) > 1 else ""} {", ".join(denied)} of table '
                 f'"{table.qualified_name}"')
        raise _refused(target, role, "INSERT",
                       f'role "{role}" may not INSERT into {where}: {_NOTHING_WRITTEN}',
                       f"GRANT INSERT ON {table.sql} TO {quote_ident(role)}", denied)
    for privilege in ("UPDATE", "SELECT"):
        denied = list(row[f"{privilege.lower()}_denied"])
        if denied:
            raise _refused(
                target, role, privilege,
                f'role "{role}" may not {privilege} column{"s" if len(denied) > 1 else ""} '
                f'{", ".join(denied)} of table "{table.qualified_name}", which the stream\'s '
                f"on_conflict needs: {_NOTHING_WRITTEN}",
                f"GRANT {privilege} ({', '.join(quote_ident(d) for d in denied)}) ON "
                f"{table.sql} TO {quote_ident(role)}", denied)
    if upsert is not None and upsert.delete_missing and not row["table_delete"]:
        raise _refused(target, role, "DELETE",
                       f'role "{role}" may not DELETE from table "{table.qualified_name}", '
                       f"which the stream's delete_missing needs: {_NOTHING_WRITTEN}",
                       f"GRANT DELETE ON {table.sql} TO {quote_ident(role)}")
    if (row["rls"] or target.upsert is not None) and not row["temporary"]:
        why = (f'table "{table.qualified_name}" has row-level security for role "{role}"'
               if row["rls"] else "the stream merges its rows (on_conflict)")
        raise _refused(target, role, "TEMPORARY",
                       f"{why}: its rows are staged in a temporary table, and the role may not "
                       "create one",
                       f"GRANT TEMPORARY ON DATABASE {quote_ident(row['database'])} TO "
                       f"{quote_ident(role)}")
    return Access(rls=bool(row["rls"]))


_NOTHING_WRITTEN = "the stream was refused and nothing of it written"


def _refused(target: Target, role: str, privilege: str, why: str, grant: str,
             columns: list[str] | None = None) -> PermissionDenied:
    """The stream's refusal: ``why`` the role may not, and the GRANT that would let it; the
    table, privilege, role (and columns) in its ErrorInfo."""
    metadata = {"table": target.table.qualified_name, "privilege": privilege, "role": role}
    if columns:
        metadata["columns"] = ",".join(columns)
    return PermissionDenied(f"{why} ({grant})", reason=reasons.INSUFFICIENT_PRIVILEGE,
                            metadata=metadata)
