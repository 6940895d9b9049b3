"""`batchd serve` refuses to start on a mistake with one line naming the value and the fix.

Through the real command, as an operator meets it: exit code 2, a single line on standard
error (never a traceback), nothing started (no server, no embedded database in the folder).
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.cli import Finished, batchd, clean_env

TOKEN_HASH = "0" * 64


def refused(result: Finished) -> str:
    """The one line of a refused start-up."""
    assert result.code == 2, (result.code, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith("batchd serve: "), line
    assert "batchd listening" not in result.stdout
    return line


async def serve(tmp_path: Path, *argv: str, **env: str) -> str:
    result = await batchd("serve", "--port", "0", *argv, env=clean_env(**env), cwd=tmp_path,
                          seconds=30)
    line = refused(result)
    assert not (tmp_path / ".batchd").exists(), "an embedded database was started"
    return line


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def test_a_missing_config_file_stops_start_up_naming_the_file(tmp_path):
    line = await serve(tmp_path, "--config", "nonexistent.toml")
    assert "nonexistent.toml: no such settings file" in line


async def test_a_config_file_named_by_batchd_config_must_exist_too(tmp_path):
    line = await serve(tmp_path, BATCHD_CONFIG=str(tmp_path / "gone.toml"))
    assert f"{tmp_path / 'gone.toml'}: no such settings file" in line


async def test_an_unreadable_config_file_stops_start_up_naming_it(tmp_path):
    (tmp_path / "folder.toml").mkdir()  # unreadable as a file even for root
    line = await serve(tmp_path, "--config", "folder.toml")
    assert "folder.toml: a folder, not a settings file" in line


async def test_a_toml_syntax_error_names_the_file_line_and_column(tmp_path):
    (tmp_path / "bad.toml").write_text('port = 50051\n\nhost = \nexpose = ["public.*"]\n')
    line = await serve(tmp_path, "--config", "bad.toml")
    assert "bad.toml, line 3, column 8: not valid TOML: Invalid value" in line


async def test_an_unknown_key_names_the_file_its_line_and_the_nearest_setting(tmp_path):
    (tmp_path / "typo.toml").write_text('host = "127.0.0.1"\nmax_operation = 10\n')
    line = await serve(tmp_path, "--config", "typo.toml")
    assert "typo.toml, line 2: unknown setting 'max_operation'; did you mean max_operations?" \
        in line


async def test_an_unknown_key_in_a_token_or_table_is_named_with_the_nearest_one(tmp_path):
    (tmp_path / "nested.toml").write_text(
        f'[[tokens]]\nprincipal = "a"\nsha256 = "{TOKEN_HASH}"\nscope = ["admin"]\n')
    line = await serve(tmp_path, "--config", "nested.toml")
    assert "nested.toml, line 4: unknown setting 'tokens[0].scope'; did you mean scopes?" \
        in line
    (tmp_path / "late.toml").write_text(
        f'[[tokens]]\nprincipal = "a"\nsha256 = "{TOKEN_HASH}"\nmax_operations = 5\n')
    line = await serve(tmp_path, "--config", "late.toml")
    assert "late.toml, line 4: unknown setting 'tokens[0].max_operations'; max_operations is a " \
           "top-level setting: move it above the first [table] header" in line
    (tmp_path / "tables.toml").write_text('[tables."public.orders"]\noperation = ["get"]\n')
    line = await serve(tmp_path, "--config", "tables.toml")
    assert "tables.toml, line 2: unknown setting 'tables.public.orders.operation'; did you " \
           "mean operations?" in line


async def test_a_wrong_type_names_the_file_line_key_and_value(tmp_path):
    (tmp_path / "types.toml").write_text('host = "127.0.0.1"\npool_max_size = "fifty"\n')
    line = await serve(tmp_path, "--config", "types.toml")
    assert "types.toml, line 2: pool_max_size = 'fifty': Input should be a valid integer" \
        in line


async def test_a_wrong_value_in_a_token_names_the_token_and_its_line(tmp_path):
    (tmp_path / "tokens.toml").write_text(
        f'[[tokens]]\nprincipal = "a"\nsha256 = "{TOKEN_HASH}"\n\n'
        f'[[tokens]]\nprincipal = "b"\nsha256 = "{TOKEN_HASH[:-1]}1"\nscopes = ["root"]\n')
    line = await serve(tmp_path, "--config", "tokens.toml")
    assert "tokens.toml, line 8: tokens[1].scopes = ['root']: bad scope 'root'" in line


async def test_a_wrong_value_from_a_flag_or_variable_names_the_flag_or_variable(tmp_path):
    line = await serve(tmp_path, "--port", "70000")
    assert "--port 70000: Input should be less than or equal to 65535" in line
    line = await serve(tmp_path, BATCHD_MAX_OPERATIONS="many")
    assert "BATCHD_MAX_OPERATIONS='many': Input should be a valid integer" in line


async def test_an_unreachable_dsn_names_host_and_port_and_hides_the_password(tmp_path,
                                                                             taken_port):
    # A port that is bound but does not accept PostgreSQL: refused, quickly.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    line = await serve(tmp_path, "--dsn", f"postgresql://app:s3cret@127.0.0.1:{port}/shop")
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}" in line
    assert f"postgresql://app:***@127.0.0.1:{port}/shop" in line
    assert "s3cret" not in line
    assert "connection refused" in line and "fix --dsn" in line


async def test_an_unresolvable_host_and_a_malformed_dsn_are_named(tmp_path):
    line = await serve(tmp_path, "--dsn", "postgresql://app:pw@no-such-host.invalid/shop")
    assert "no-such-host.invalid:5432" in line and "cannot resolve the host" in line
    line = await serve(tmp_path, "--dsn", "localhost:5432")
    assert "dsn 'localhost:5432': not a PostgreSQL DSN" in line
    assert "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in line


async def test_a_database_that_does_not_exist_is_named_with_the_fix(tmp_path, dsn):
    base, _, query = dsn.partition("?")
    missing = base.rsplit("/", 1)[0] + "/no_such_db" + (f"?{query}" if query else "")
    line = await serve(tmp_path, "--dsn", missing)
    assert 'database "no_such_db" does not exist' in line and "createdb" in line


async def test_a_login_role_that_does_not_exist_is_named_with_the_fix(tmp_path, dsn):
    base, _, query = dsn.partition("?")
    scheme, _, rest = base.partition("://")
    nobody = f"{scheme}://nobody_here:pw@{rest.split('@', 1)[-1]}" + (f"?{query}" if query else "")
    line = await serve(tmp_path, "--dsn", nobody)
    assert 'role "nobody_here" does not exist' in line and "nobody_here:***@" in line
    assert "use an existing role" in line


async def test_a_port_in_use_is_one_line_found_before_postgresql_is_touched(tmp_path,
                                                                            taken_port):
    # The DSN is unreachable too: the port is checked first, so the port is what is named.
    line = await serve(tmp_path, "--port", str(taken_port),
                       "--dsn", "postgresql://app@127.0.0.1:1/shop")
    assert f"cannot listen on 127.0.0.1:{taken_port}: the port is in use" in line
    assert "--port" in line


async def test_workers_refuse_a_port_in_use_or_a_bad_dsn_once(tmp_path, taken_port):
    line = await serve(tmp_path, "--port", str(taken_port), "--workers", "2")
    assert f"cannot listen on 127.0.0.1:{taken_port}: the port is in use" in line
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    line = await serve(tmp_path, "--port", str(port), "--workers", "2",
                       "--dsn", "postgresql://app:pw@127.0.0.1:1/shop")
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in line


async def test_an_address_not_of_this_machine_is_named(tmp_path):
    line = await serve(tmp_path, "--host", "192.0.2.1", "--port", "50999")
    assert "192.0.2.1 is not an address of this machine" in line


async def test_unknown_roles_are_named_with_the_grant_that_fixes_them(tmp_path, schema):
    (tmp_path / "roles.toml").write_text(
        f'[[tokens]]\nprincipal = "a"\nsha256 = "{TOKEN_HASH}"\nrole = "no_such_role"\n')
    # No log line of a normal start before the failure (BATCHD_POOLER: none to find out).
    line = await serve(tmp_path, "--config", "roles.toml", "--dsn", schema,
                       BATCHD_POOLER="none")
    assert "no_such_role: no such role" in line and 'GRANT "no_such_role" TO' in line


async def test_a_handler_module_that_cannot_be_imported_is_named(tmp_path, schema):
    line = await serve(tmp_path, "--dsn", schema, BATCHD_POOLER="none",
                       BATCHD_HANDLER_MODULES='["shop.no_such_handlers"]')
    assert "handler_modules: cannot import 'shop.no_such_handlers'" in line


async def test_a_table_setting_that_does_not_fit_the_table_is_named(tmp_path, schema):
    (tmp_path / "tables.toml").write_text('[tables."public.orders"]\noperations = ["gett"]\n')
    line = await serve(tmp_path, "--config", "tables.toml", "--dsn", schema,
                       BATCHD_POOLER="none")
    assert "tables: public.orders: unknown operation kinds ['gett'] (known: " in line
    assert "get," in line


def as_role(dsn: str, role: str) -> str:
    base, _, query = dsn.partition("?")
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{role}@{rest.split('@', 1)[-1]}" + (f"?{query}" if query else "")


@contextlib.asynccontextmanager
async def login_role(db: asyncpg.Connection, role: str,
                     *member_of: str) -> AsyncIterator[None]:
    """A login role that is no superuser, with what a deployment would grant it; dropped
    afterwards (roles outlive the test database)."""
    database = await db.fetchval("SELECT quote_ident(current_database())")
    await db.execute(f"""CREATE ROLE {role} LOGIN;
      GRANT ALL ON SCHEMA batchd, public TO {role};
      GRANT ALL ON ALL TABLES IN SCHEMA batchd, public TO {role};
      GRANT CREATE ON DATABASE {database} TO {role};""")
    try:
        for owner in member_of:
            await db.execute(f"GRANT {owner} TO {role}")
        yield
    finally:
        await db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_a_login_role_that_may_not_create_batchds_tables_is_told_how(tmp_path, schema,
                                                                          db):
    """A database without batchd's tables, and a login role that may create nothing."""
    database = f"startup_fresh_{uuid.uuid4().hex[:8]}"
    await db.execute(f'CREATE DATABASE "{database}"')
    await db.execute("CREATE ROLE startup_plain LOGIN")
    try:
        fresh = as_role(schema, "startup_plain").replace("/postgres?", f"/{database}?")
        assert database in fresh
        line = await serve(tmp_path, "--dsn", fresh, BATCHD_POOLER="none")
    finally:
        await db.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await db.execute("DROP ROLE startup_plain")
    assert "are missing or out of date, and batchd's login role \"startup_plain\" may not " \
           "create them" in line, line


async def test_a_login_role_that_may_not_use_batchds_tables_is_given_the_grant(tmp_path, schema,
                                                                              db, app):
    # (app: batchd's own tables exist, made by another role, as on a shared database)
    await db.execute("CREATE ROLE startup_nogrant LOGIN")
    try:
        line = await serve(tmp_path, "--dsn", as_role(schema, "startup_nogrant"),
                           BATCHD_POOLER="none")
    finally:
        await db.execute("DROP ROLE startup_nogrant")
    assert "may not use its own tables batchd." in line, line
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA batchd TO " \
           '"startup_nogrant"' in line


async def test_a_reload_trigger_without_a_superuser_says_how_to_do_without(tmp_path, schema,
                                                                            db, app):
    owner = await db.fetchval("SELECT quote_ident(current_user)")
    async with login_role(db, "startup_member", owner):  # owns batchd's tables, no superuser
        line = await serve(tmp_path, "--dsn", as_role(schema, "startup_member"),
                           BATCHD_POOLER="none", BATCHD_RELOAD_TRIGGER="true")
    assert "reload_trigger = true: permission denied" in line, line
    assert "set reload_trigger = false" in line


async def test_a_missing_tls_file_is_named_before_postgresql_is_touched(tmp_path):
    (tmp_path / "tls.toml").write_text('tls_cert_file = "cert.pem"\ntls_key_file = "key.pem"\n')
    line = await serve(tmp_path, "--config", "tls.toml", "--dsn", "postgresql://a@127.0.0.1:1/b")
    assert "tls_key_file = 'key.pem': cannot read it (No such file or directory)" in line \
        or "tls_cert_file = 'cert.pem': cannot read it (No such file or directory)" in line
