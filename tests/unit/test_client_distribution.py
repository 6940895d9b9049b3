"""batchd-client stands alone: importing it loads no server module, installing it pulls none of
the server's dependencies, and its version is the server's (issue 18)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.distributions import (
    CLIENT,
    HEAVY_MODULES,
    ROOT,
    SERVER_DISTRIBUTIONS,
    SERVER_MODULES,
    installed_closure,
    loaded,
    modules_after,
    names,
    pip_install_report,
    pyproject,
    server_is_editable,
)

CLIENT_REQUIRES = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}


def test_import_batchd_client_loads_no_server_module_nor_asyncpg_pyarrow_numpy_pydantic():
    modules = modules_after("from batchd.client import AsyncClient, Batch, Client")
    assert "batchd.client.api" in modules
    assert loaded(modules, SERVER_MODULES + HEAVY_MODULES) == []


def test_bare_import_batchd_client_loads_neither_grpc_nor_protobuf_until_a_name_is_used():
    """Its names are PEP 562 attributes: grpc and protobuf (~90 ms) load when one is used."""
    modules = modules_after("import batchd.client")
    assert loaded(modules, ("grpc", "google.protobuf", "batchd.v1", "batchd.client.api",
                            "asyncio")) == []
    modules = modules_after("import batchd.client; batchd.client.Client; batchd.client.retry")
    assert {"grpc", "batchd.client.api", "batchd.client.retry"} <= modules


def test_batchd_client_names_are_the_apis_names():
    import batchd.client
    from batchd.client import api

    assert batchd.client.__all__ == api.__all__
    assert all(getattr(batchd.client, name) is getattr(api, name) for name in api.__all__)
    with pytest.raises(AttributeError):
        batchd.client.no_such_name  # noqa: B018


def test_batchd_command_module_loads_no_server_module_until_it_runs():
    modules = modules_after("import batchd.client.cli, batchd.client.exec_cli, "
                            "batchd.client.ingest_cli")
    assert loaded(modules, SERVER_MODULES + HEAVY_MODULES) == []


@pytest.mark.skipif(not server_is_editable(), reason="the server is not installed from server/")
def test_batchd_client_imports_without_the_server_as_a_namespace_package():
    modules = modules_after("import batchd, batchd.client, batchd.vocabulary; "
                            "assert batchd.__file__ is None, batchd.__file__; "
                            "from batchd.client import AsyncClient, Batch, Client",
                            without_server=True)
    assert {"batchd.client.api", "batchd.v1.batch_pb2", "batchd.vocabulary"} <= modules
    assert loaded(modules, SERVER_MODULES + HEAVY_MODULES) == []


def test_the_server_still_reexports_the_handler_api_from_batchd():
    modules = modules_after("from batchd import HandlerContext, handler")
    assert "batchd.kinds.call" in modules


def test_the_server_and_the_client_share_one_error_vocabulary():
    from batchd import errors, vocabulary
    from batchd.client import BatchdRpcError

    assert errors.BatchdRpcError is vocabulary.BatchdRpcError is BatchdRpcError
    assert errors.REASONS is vocabulary.REASONS
    assert errors.BY_SQLSTATE is vocabulary.BY_SQLSTATE


def test_client_distribution_requires_only_grpc_and_protobuf():
    project = pyproject(CLIENT)["project"]
    assert names(project["dependencies"]) == CLIENT_REQUIRES
    extras = project["optional-dependencies"]
    assert names(extras["arrow"]) == {"pyarrow"}
    assert names(extras["cli"]) == {"tqdm", "pyyaml"}


def test_installed_client_pulls_none_of_the_servers_dependencies():
    closure = installed_closure("batchd-client")
    assert CLIENT_REQUIRES <= closure
    assert not closure & SERVER_DISTRIBUTIONS
    assert not closure & {"pyarrow", "tqdm", "pyyaml", "batchd"}


def test_server_requires_the_client_at_its_own_version():
    server, client = pyproject(ROOT)["project"], pyproject(CLIENT)["project"]
    assert server["version"] == client["version"]
    assert f"batchd-client=={client['version']}" in server["dependencies"]
    assert "scripts" not in server  # the `batchd` command is the client's
    assert client["scripts"] == {"batchd": "batchd.client.cli:main"}
    assert server["entry-points"]["batchd.commands"] == {"server": "batchd.cli"}


def test_pip_install_of_the_client_alone_pulls_none_of_the_servers_dependencies(tmp_path):
    code, output, install = pip_install_report(CLIENT, tmp_path / "report.json")
    if code != 0:  # no package index here (offline): the metadata tests above still hold
        pytest.skip(f"pip could not resolve the client's dependencies: {output[-500:]}")
    assert names(["batchd-client"]) <= install
    assert CLIENT_REQUIRES <= install
    assert not install & SERVER_DISTRIBUTIONS
    assert not install & {"pyarrow", "pydantic", "batchd"}


def test_arrow_ingest_without_pyarrow_names_the_arrow_extra():
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from batchd.client.sources import arrow_source\n"
            "try:\n    arrow_source()\nexcept ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "pip install 'batchd-client[arrow]'" in done.stdout
