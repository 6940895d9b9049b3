"""Start-up failures: one line naming the value at fault and the fix, then exit code 2.

A mistake in the settings, a DSN that does not reach PostgreSQL, a port already taken, a role
that does not exist: each is the operator's to fix, and a traceback would bury the one thing
they need to read. ``batchd serve`` prints a ``StartupError`` as a single line on standard
error (``batchd serve: <what>: <why>; <fix>``) and exits 2, having started nothing.

The translations live here, in one place, as httpx's ``map_httpcore_exceptions`` does for its
transport: ``config_file_error`` and ``settings_error`` (the TOML file and the settings,
batchd.config), ``database_error`` (connecting with the DSN), ``embedded_error`` (the embedded
PostgreSQL), ``check_port`` and ``listen_error`` (the gRPC address). Anything else that stops
start-up is not foreseen here: it is still one line, naming the exception, and
``BATCHD_LOG_LEVEL=DEBUG`` shows its traceback (``unexpected``).

Passwords never reach the line: a DSN is shown with its password replaced by ``***``.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EXIT_STARTUP = 2


class StartupError(Exception):
    """batchd cannot start; the message is the whole line an operator reads (no traceback)."""


# --- the settings file ----------------------------------------------------------------------

_TOML_POSITION = re.compile(r"^(?P<what>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def config_file_error(path: Path, exc: BaseException) -> StartupError:
    """The settings file cannot be read, or is not TOML."""
    if isinstance(exc, FileNotFoundError):
        return StartupError(f"{path}: no such settings file; give the path of a TOML file "
                            "(--config or BATCHD_CONFIG), or neither for the defaults")
    if isinstance(exc, IsADirectoryError):
        return StartupError(f"{path}: a folder, not a settings file; give the path of a TOML "
                            "file")
    if isinstance(exc, UnicodeDecodeError):
        return StartupError(f"{path}: not UTF-8 text (byte {exc.start}); save the settings "
                            "file as UTF-8 TOML")
    if isinstance(exc, OSError):
        return StartupError(f"{path}: cannot read the settings file: "
                            f"{exc.strerror or exc}; check its permissions")
    found = _TOML_POSITION.match(str(exc))
    if found:
        return StartupError(f"{path}, line {found['line']}, column {found['col']}: not valid "
                            f"TOML: {found['what']}; values are written key = \"text\", "
                            "key = 123, key = true or key = [\"a\", \"b\"]")
    return StartupError(f"{path}: not valid TOML: {exc}")


def settings_error(errors: Sequence[Mapping[str, Any]], *,
                   fields: Callable[[tuple[Any, ...]], Iterable[str]],
                   config_file: Path | None, toml_text: str | None,
                   toml_keys: Iterable[str], flags: Iterable[str]) -> StartupError:
    """The first of pydantic's validation ``errors``, as one line naming where the value came
    from (the flag, the BATCHD_* variable, or the file and its line), the key and the value.
    ``fields(loc)``: the names known where ``loc`` points (for "did you mean")."""
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc)
    key = key.replace(".[", "[")
    top = str(loc[0]) if loc else ""
    where = _origin(top, config_file, toml_text, loc, set(toml_keys), set(flags))
    message = str(first.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    kind = first.get("type")
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else top
        close = difflib.get_close_matches(name, list(fields(loc[:-1])), n=1)
        hint = f"did you mean {close[0]}?" if close else "see the configuration table in README"
        if len(loc) > 1 and name in fields(()):  # TOML puts keys after [x] inside x
            hint = (f"{name} is a top-level setting: move it above the first [table] header "
                    "(in TOML, keys after a header belong to it)")
        line = f"{where}: unknown setting {key!r}; {hint}"
    elif not loc:
        line = f"{where}: {message}"
    elif kind == "missing":
        line = f"{where}: {key}: missing; add it"
    elif where.startswith("--"):
        line = f"{where} {_shown(first.get('input'))}: {message}"
    elif where.startswith("BATCHD_"):
        line = f"{where}={_shown(first.get('input'))}: {message}"
    else:
        line = f"{where}: {key} = {_shown(first.get('input'))}: {message}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more)"
    return StartupError(line)


def _origin(top: str, config_file: Path | None, toml_text: str | None, loc: tuple[Any, ...],
            toml_keys: set[str], flags: set[str]) -> str:
    """Where a setting's value came from, following batchd.config's precedence."""
    if top in flags:
        return f"--{top.replace('_', '-')}"
    env = f"BATCHD_{top.upper()}"
    if top and any(name.upper() == env for name in os.environ):
        return env
    if config_file is not None and (top in toml_keys or not top):
        line = _line_of(toml_text or "", loc)
        return f"{config_file}, line {line}" if line else str(config_file)
    return "settings"


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line of the TOML file that sets ``loc`` (best effort: tomllib keeps no positions):
    a top-level key before any table header; the n-th ``[[tokens]]`` and its key; a
    ``[tables."schema.table"]`` (or ``[client_cert_roles]``) and its key; else the key of
    the top-level value (an inline table or array)."""
    if not loc:
        return None
    lines = text.splitlines()
    head, rest = str(loc[0]), list(loc[1:])
    name = rf'\s*"?{re.escape(head)}"?\s*'
    if rest and isinstance(rest[0], int):  # [[head]] number rest[0]
        starts = [i for i, t in enumerate(lines) if re.match(rf"\s*\[\[{name}\]\]", t)]
        if len(starts) > rest[0]:
            return _key_line(lines, starts[rest[0]], rest[1:2])
    elif rest:  # [head."key"], or [head] holding key
        key = re.escape(str(rest[0]))
        starts = [i for i, t in enumerate(lines)
                  if re.match(rf'\s*\[{name}\.\s*"?{key}"?\s*\]', t)]
        if starts:
            return _key_line(lines, starts[0], rest[1:2])
        starts = [i for i, t in enumerate(lines) if re.match(rf"\s*\[{name}\]", t)]
        if starts:
            return _key_line(lines, starts[0], rest[:1])
    return _key_line(lines, None, [head])


def _key_line(lines: list[str], section: int | None, key: list[Any]) -> int | None:
    """The line of ``key`` in the section whose header is line ``section`` (None: the top
    level), or of the header when the key is not found (or none is asked for)."""
    if key:
        pattern = re.compile(rf'\s*"?{re.escape(str(key[0]))}"?\s*=')
        for i in range(0 if section is None else section + 1, len(lines)):
            if re.match(r"\s*\[", lines[i]):
                break
            if pattern.match(lines[i]):
                return i + 1
    return None if section is None else section + 1


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- the database ---------------------------------------------------------------------------

def redact_dsn(dsn: str) -> str:
    """The DSN without its password (URI user:password@ and password= parameters)."""
    dsn = re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1:***@", dsn)
    return re.sub(r"(?i)(\bpassword\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", dsn)


def _endpoint(dsn: str) -> str:
    """host:port of a URI DSN (a Unix socket folder for ?host=/path), for the message."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = parts.port or 5432
    except ValueError:
        return "?"
    query_host = re.search(r"[?&]host=([^&]+)", dsn)
    if not host and query_host:
        return f"the socket in {query_host.group(1)}"
    return f"{host or 'localhost'}:{port}"


def database_error(exc: BaseException, dsn: str, connect_seconds: float) -> StartupError:
    """Connecting with ``dsn`` failed at start-up."""
    import asyncpg

    shown = redact_dsn(dsn)
    where = _endpoint(dsn)
    fix = "fix --dsn (or BATCHD_DSN, or dsn in the settings file)"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        why = f"{exc}; check the user and password in the DSN"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        why = f"{exc}; create it (createdb) or {fix}"
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        why = f"{exc}; use an existing role allowed to connect (pg_hba.conf) or {fix}"
    elif isinstance(exc, asyncpg.PostgresError):
        why = f"{exc}"
    elif isinstance(exc, TimeoutError):
        why = (f"no answer within {connect_seconds:g}s (connect_timeout_seconds); is the host "
               f"reachable and PostgreSQL listening there? else {fix}")
    elif isinstance(exc, socket.gaierror):
        why = f"cannot resolve the host ({exc.strerror}); {fix}"
    elif isinstance(exc, ConnectionRefusedError) or (
            isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED):
        why = f"connection refused; is PostgreSQL running and listening there? else {fix}"
    elif isinstance(exc, OSError):
        why = f"{exc.strerror or exc}; {fix}"
    elif isinstance(exc, ValueError | asyncpg.InterfaceError):
        return StartupError(f"dsn {shown!r}: not a PostgreSQL DSN ({exc}); expected "
                            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    else:
        why = f"{type(exc).__name__}: {exc}"
    return StartupError(f"cannot connect to PostgreSQL at {where} (dsn {shown}): {why}")


async def check_database(dsn: str, connect_seconds: float) -> None:
    """One connection with ``dsn``, closed at once (``serve --workers``: found once, before
    every worker would fail on it)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=connect_seconds)
    except Exception as exc:
        raise database_error(exc, dsn, connect_seconds) from exc
    await conn.close()


def embedded_error(exc: BaseException, data_dir: Path) -> StartupError:
    """The embedded PostgreSQL did not start."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    detail = " ".join(detail.split())[:200]
    return StartupError(f"the embedded PostgreSQL did not start in data_dir {data_dir}: "
                        f"{type(exc).__name__}: {detail}; give --data-dir a folder batchd may "
                        "write to, or a running PostgreSQL with --dsn")


# --- the gRPC address -----------------------------------------------------------------------

def address_problem(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {host}:{port}: the port is in use (another batchd?); "
                "choose another with --port (or BATCHD_PORT; 0: any free port), or stop the "
                "process holding it")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {host}:{port}: permission denied (ports below 1024 need "
                "privileges); choose a port from 1024 with --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {host}:{port}: {host} is not an address of this machine; "
                "give --host one of its addresses (127.0.0.1, 0.0.0.0 for all)")
    if isinstance(exc, socket.gaierror):
        return (f"cannot listen on {host}:{port}: cannot resolve {host!r} "
                f"({exc.strerror}); give --host an address (127.0.0.1, 0.0.0.0 for all)")
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port"


def check_port(host: str, port: int, *, reuse_port: bool = False) -> None:
    """Fail fast, before PostgreSQL is touched, if the gRPC address cannot be bound (gRPC's own
    refusal comes late and logs lines of its own). Port 0 (any free one) always can.
    ``reuse_port``: a worker of ``serve --workers``, sharing the port with its siblings."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise StartupError(address_problem(exc, host, port)) from None


def listen_error(exc: BaseException, host: str, port: int,
                 reuse_port: bool = False) -> StartupError:
    """gRPC could not bind (it says no more than that): find out why with a probe."""
    try:
        check_port(host, port, reuse_port=reuse_port)
    except StartupError as found:
        return found
    return StartupError(f"cannot listen on {host}:{port}: {exc}; check --host and --port")


def tls_file_error(exc: OSError, files: Mapping[str, object]) -> StartupError:
    """A TLS PEM file could not be read; ``files``: the TLS settings by name."""
    setting = next((name for name, value in files.items()
                    if str(value) == str(exc.filename)), "a TLS file")
    return StartupError(f"{setting} = {str(exc.filename)!r}: cannot read it "
                        f"({exc.strerror or exc}); give the path of a PEM file")


# --- the rest -------------------------------------------------------------------------------

def import_handler_modules(load: Callable[[list[str]], None], modules: list[str]) -> None:
    """``handler_modules``, imported; one that cannot be is named, with the fix."""
    for module in modules:
        try:
            load([module])
        except ImportError as exc:
            raise StartupError(f"handler_modules: cannot import {module!r} ({exc}); check the "
                               "name, and that its folder is on PYTHONPATH") from exc
        except Exception as exc:  # the module's own code failed (a handler defined twice...)
            raise StartupError(f"handler_modules: importing {module!r} failed: "
                               f"{type(exc).__name__}: {exc}") from exc


def unexpected(exc: BaseException) -> StartupError:
    """A failure this module does not foresee: one line all the same (DEBUG logs the rest)."""
    text = " ".join(str(exc).split()) or "no message"
    return StartupError(f"start-up failed: {type(exc).__name__}: {text[:300]} "
                        "(BATCHD_LOG_LEVEL=DEBUG shows where)")
