"""deploy/: the fleet's files (no Docker engine or cluster here: they are parsed, and their
invariants checked). tests/fleet runs the HAProxy and pgbouncer files as real processes."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from grpc_health.v1 import health_pb2

from batchd.config import Settings
from tests.fleet.processes import read_userlist, render_ini
from tests.support.compose import NOT_SETTINGS, environment

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
SERVICE = "batchd.v1.BatchService"
# Settings the fleet relies on that come with the server's drain and pooler work; until they
# exist in batchd.config.Settings, they are accepted by name here (and ignored by batchd).
FLEET_SETTINGS = {"BATCHD_POOLER", "BATCHD_DRAIN_DELAY_SECONDS"}
TIMEOUTS = {"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def replicas(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services built from the repository's Dockerfile."""
    return {name: s for name, s in services.items() if "build" in s}


def seconds(duration: str | int | float) -> float:
    """A compose duration ("30s", "1m30s", "500ms") in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def grace_of(args: list[str]) -> float:
    """The --grace of a `batchd serve` command line (batchd's default: 10)."""
    return float(args[args.index("--grace") + 1]) if "--grace" in args else 10.0


def ini(text: str) -> dict[tuple[str, str], str]:
    """An ini file as {(section, key): value}."""
    values, section = {}, ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key, _, value = line.partition("=")
            values[section, key.strip()] = value.strip()
    return values


def pgbouncer_template() -> dict[tuple[str, str], str]:
    return ini((DEPLOY / "pgbouncer" / "pgbouncer.ini").read_text())


def haproxy_cfg() -> str:
    return (DEPLOY / "haproxy" / "haproxy.cfg").read_text()


def directives(section: str) -> list[list[str]]:
    """The lines of one section of haproxy.cfg ("backend batchd"), split into words."""
    lines, inside = [], False
    for raw in haproxy_cfg().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[0].isspace():
            inside = line.strip() == section
        elif inside:
            lines.append(shlex.split(line))
    return lines


# --- pgbouncer --------------------------------------------------------------------------------

def test_pgbouncer_pools_transactions_and_ignores_no_startup_parameter():
    config = pgbouncer_template()
    assert config["pgbouncer", "pool_mode"] == "transaction"
    assert config["pgbouncer", "listen_addr"] == "127.0.0.1"
    # batchd sets its timeouts inside transactions; ignoring them as startup parameters would
    # make pgbouncer drop them silently. asyncpg needs nothing else ignored.
    ignored = {p.strip() for p in config["pgbouncer", "ignore_startup_parameters"].split(",")}
    assert ignored <= {"", "extra_float_digits"}
    assert not ignored & TIMEOUTS


def test_pgbouncer_template_keys_the_fleet_tests_and_compose_replace_exist():
    template = (DEPLOY / "pgbouncer" / "pgbouncer.ini").read_text()
    render_ini(template, {("databases", "batchd"): "x", ("pgbouncer", "listen_addr"): "x",
                          ("pgbouncer", "listen_port"): "1", ("pgbouncer", "auth_file"): "x"})
    script = compose()["services"]["pgbouncer"]["entrypoint"][-1]
    for key in re.findall(r"s/\^(\w+) = \.\*/", script):
        assert re.search(rf"^{key} = ", template, re.M), f"compose replaces a missing {key}"


def test_pgbouncer_userlist_has_the_user_the_dsns_log_in_as():
    user, password = read_userlist(DEPLOY / "pgbouncer" / "userlist.txt")
    for service in replicas(compose()["services"]).values():
        dsn = urlsplit(environment(service)["BATCHD_DSN"])
        assert (dsn.username, dsn.password) == (user, password)


# --- HAProxy ----------------------------------------------------------------------------------

def health_check_bytes(service: str) -> bytes:
    """What a gRPC client sends for grpc.health.v1.Health/Check: the HTTP/2 preface, an empty
    SETTINGS frame, HEADERS (HPACK literals without indexing, no Huffman) and one DATA frame."""

    def frame(kind: int, flags: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + \
            (1 if kind in (0, 1) else 0).to_bytes(4, "big") + payload

    def literal(index: int, value: bytes) -> bytes:  # indexed name, 4-bit prefix
        prefix = bytes([index]) if index < 15 else bytes([15, index - 15])
        return prefix + bytes([len(value)]) + value

    path = b"/grpc.health.v1.Health/Check"
    headers = (b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
               + literal(4, path) + literal(1, b"haproxy")  # :path, :authority
               + literal(31, b"application/grpc")  # content-type
               + b"\x00\x02te\x08trailers")  # new name
    message = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    return (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, b"")
            + frame(1, 0x4, headers)  # END_HEADERS
            + frame(0, 0x1, b"\x00" + len(message).to_bytes(4, "big") + message))  # END_STREAM


def test_haproxy_health_check_asks_grpc_health_for_the_batch_service_and_wants_serving():
    backend = directives("backend batchd")
    assert ["option", "tcp-check"] in backend
    sent = b"".join(bytes.fromhex(d[2]) for d in backend if d[:2] == ["tcp-check", "send-binary"])
    assert sent == health_check_bytes(SERVICE)
    expects = [d for d in backend if d[:2] == ["tcp-check", "expect"]]
    serving = health_pb2.HealthCheckResponse(
        status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()
    framed = b"\x00" + len(serving).to_bytes(4, "big") + serving
    # The last rule decides, at once (min-recv 0), on the DATA frame of stream 1.
    last = expects[-1]
    assert last[2:4] == ["min-recv", "0"] and last[4] == "binary"
    assert bytes.fromhex(last[5]) == (1).to_bytes(4, "big") + framed


def test_haproxy_balances_each_call_over_http2_with_tight_checks():
    defaults, frontend = directives("defaults"), directives("frontend grpc")
    backend = directives("backend batchd")
    assert ["mode", "http"] in defaults
    bind = next(d for d in frontend if d[0] == "bind")
    assert bind[1] == "${BATCHD_LB_BIND}" and bind[2:] == ["proto", "h2"]
    assert ["balance", "roundrobin"] in backend
    words = next(d for d in backend if d[0] == "default-server")
    option = dict(itertools.pairwise(words))  # "inter 500ms" -> {"inter": "500ms"}
    assert option["proto"] == "h2" and "check" in words
    assert option["inter"] == "500ms" and option["fall"] == "1"
    servers = [d for d in backend if d[0] == "server"]
    assert [d[2] for d in servers] == [f"${{BATCHD_REPLICA_{i}}}" for i in (1, 2, 3)]


def test_haproxy_retries_only_what_never_reached_a_replica():
    defaults = directives("defaults")
    retry_on = next(d for d in defaults if d[0] == "retry-on")
    assert set(retry_on[1:]) <= {"conn-failure", "empty-response"}
    timeouts = {d[1]: seconds(d[2]) for d in defaults if d[0] == "timeout"}
    # Streams may idle between chunks for up to batchd's max_stream_seconds.
    assert min(timeouts["client"], timeouts["server"]) >= Settings().max_stream_seconds


@pytest.mark.skipif(shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin")
                    is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_configuration_with_the_compose_environment():
    binary = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin")
    assert binary is not None
    env = {**os.environ, **environment(compose()["services"]["haproxy"])}
    checked = subprocess.run([binary, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
                             env=env, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- the published client configuration -----------------------------------------------------

def test_grpc_service_config_retries_unavailable_on_the_batch_service():
    config = json.loads((DEPLOY / "grpc-service-config.json").read_text())
    # The deployed copy is the package's published one (batchd/client/service_config.json).
    published = resources.files("batchd.client").joinpath("service_config.json").read_text()
    assert config == json.loads(published)
    [method] = config["methodConfig"]
    assert {"service": SERVICE, "method": "BatchExecute"} in method["name"]
    policy = method["retryPolicy"]
    # Only UNAVAILABLE: batchd answers it before anything ran (draining, no database). Never
    # ABORTED or DEADLINE_EXCEEDED: a retry of those is the caller's decision.
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5
    # No retryThrottling: a drain answers a burst of UNAVAILABLE that must all be retried.
    assert "retryThrottling" not in config


# --- compose ----------------------------------------------------------------------------------

def test_compose_runs_three_replicas_behind_haproxy_and_pgbouncer():
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:18"
    assert services["haproxy"]["image"] == "haproxy:2.6"
    assert "pgbouncer" in services["pgbouncer"]["image"]
    members = replicas(services)
    assert len(members) == 3
    for service in members.values():
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT.resolve()
        assert (DEPLOY / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    mounts = [str(m).split(":")[:2] for m in services["haproxy"]["volumes"]]
    assert ["./haproxy/haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg"] in mounts
    env = environment(services["haproxy"])
    port = {environment(s).get("BATCHD_PORT", "50051") for s in members.values()}
    assert sorted(v for k, v in env.items() if k.startswith("BATCHD_REPLICA_")) == \
        sorted(f"{name}:{p}" for name in members for p in port)
    code = "\n".join(line.split("#", 1)[0] for line in haproxy_cfg().splitlines())
    assert set(re.findall(r"\$\{(\w+)\}", code)) <= set(env), "a variable without default"


def test_compose_replicas_reach_postgresql_through_pgbouncer_in_transaction_mode():
    services = compose()["services"]
    template = pgbouncer_template()
    database = next(key for section, key in template if section == "databases")
    postgres = environment(services["postgres"])
    for service in replicas(services).values():
        env = environment(service)
        dsn = urlsplit(env["BATCHD_DSN"])
        assert dsn.hostname == "pgbouncer"
        assert dsn.port == int(template["pgbouncer", "listen_port"])
        assert dsn.path.lstrip("/") == database
        assert (dsn.username, dsn.password) == (postgres["POSTGRES_USER"],
                                                postgres["POSTGRES_PASSWORD"])
        assert env["BATCHD_POOLER"] == "transaction"


def test_compose_stop_grace_outlasts_the_drain_delay_and_the_grace_period():
    for name, service in replicas(compose()["services"]).items():
        drain = float(environment(service)["BATCHD_DRAIN_DELAY_SECONDS"])
        grace = grace_of(service["command"])
        assert drain >= 1.0, "HAProxy needs ~0.5 s to take a replica out"
        assert seconds(service["stop_grace_period"]) > drain + grace, name
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_compose_replica_variables_are_real_settings(monkeypatch: pytest.MonkeyPatch):
    known = {f"BATCHD_{name.upper()}" for name in Settings.model_fields}
    for service in replicas(compose()["services"]).values():
        env = environment(service)
        unknown = {n for n in env if n.startswith("BATCHD_")} - known - NOT_SETTINGS
        assert unknown <= FLEET_SETTINGS, f"not batchd settings: {sorted(unknown)}"
        for name in list(os.environ):
            if name.startswith("BATCHD_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert Settings().dsn == env["BATCHD_DSN"]  # ...and they parse


# --- Kubernetes ------------------------------------------------------------------------------

def k8s(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))


def one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_k8s_deployment_probes_grpc_health_natively():
    deployment = one(k8s("batchd.yaml"), "Deployment", "batchd")
    assert deployment["spec"]["replicas"] == 3
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["grpc"] == {"port": port, "service": SERVICE}
    assert liveness["grpc"]["port"] == port and liveness["grpc"].get("service", "") == ""
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BATCHD_POOLER"] == "transaction"


def test_k8s_termination_grace_outlasts_prestop_drain_delay_and_grace():
    spec = one(k8s("batchd.yaml"), "Deployment", "batchd")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env["BATCHD_DRAIN_DELAY_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > \
        float(command[1]) + drain + grace_of(container["args"])


def test_k8s_services_select_the_pods_and_one_is_headless_for_round_robin_clients():
    services = [d for d in k8s("batchd.yaml") if d["kind"] == "Service"]
    assert all(s["spec"]["selector"] == {"app": "batchd"} for s in services)
    assert [s["spec"].get("clusterIP") for s in services].count("None") == 1


def test_k8s_pgbouncer_is_the_template_with_cluster_addresses():
    documents = k8s("pgbouncer.yaml")
    config = ini(one(documents, "ConfigMap", "pgbouncer")["data"]["pgbouncer.ini"])
    template = pgbouncer_template()
    local = {("pgbouncer", "listen_addr"), ("pgbouncer", "auth_file")}
    for key, value in config.items():
        if key[0] == "pgbouncer" and key not in local:
            assert template[key] == value, key
    assert config["pgbouncer", "pool_mode"] == "transaction"
    assert set(config) >= {k for k in template if k[0] == "pgbouncer"} - {
        ("pgbouncer", "log_connections"), ("pgbouncer", "log_disconnections")}
    dsn = urlsplit(one(documents, "Secret", "batchd-db")["stringData"]["dsn"])
    service = one(documents, "Service", "pgbouncer")
    assert (dsn.hostname, dsn.port) == (service["metadata"]["name"],
                                        service["spec"]["ports"][0]["port"])


def test_the_client_balancing_service_config_is_the_published_one_with_health_checking():
    """For clients that balance over the replicas themselves: the same, plus gRPC's client-side
    health checking of batchd's entry (behind a load balancer it would take the balancer out:
    batchd.client.channel.HEALTH_CHECK_CONFIG)."""
    from batchd.client.channel import service_config

    balancing = json.loads((DEPLOY / "grpc-service-config-client-balancing.json").read_text())
    assert balancing == service_config(balancing=True)
    assert balancing["healthCheckConfig"] == {"serviceName": SERVICE}
    assert {k: v for k, v in balancing.items() if k != "healthCheckConfig"} == \
        json.loads((DEPLOY / "grpc-service-config.json").read_text())
