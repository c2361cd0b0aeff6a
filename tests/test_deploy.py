"""The Helm chart (deploy/helm/fireside), checked offline: no cluster here.

Rendered by Helm's own Go library (helm-python-sdk) with its default values and with each file
under ci/ (chart-testing's convention): lint clean, every manifest valid against Kubernetes'
OpenAPI schemas (kubernetes-validate, strict: an unknown field is an error) for the newest
release and the oldest the chart claims, and the commands it gives `fireside` parsed by
fireside's own argparse parser. The image, compose and the migration command:
test_deploy_image.py.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.deploy_utils import (
    AGREED_ENV,
    ROOT,
    SETTINGS_ENV,
    fireside_parser,
    flag,
    parse_strictly,
    parse_with_agreed,
    parse_with_real_parser,
    settings_from_env,
)

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (pip install -e '.[dev]')"
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[dev]')"
)
from kubernetes_validate import utils as kv_utils  # noqa: E402  (after the skip)

CHART = ROOT / "deploy" / "helm" / "fireside"
VARIANTS = ["default", *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))]
RELEASE, NAMESPACE = "chat", "fireside"
KUBE_VERSION = kv_utils.latest_version()


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


@pytest.mark.parametrize("variant", WORKER_VARIANTS)
def test_only_gateways_reach_the_workers_grpc_port(variant: str) -> None:
    manifests = rendered(variant)
    policy = one(manifests, "NetworkPolicy")
    workers = one(manifests, "StatefulSet", "worker")
    gateway = one(manifests, "Deployment", "gateway")
    worker_labels = workers["spec"]["template"]["metadata"]["labels"]
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= worker_labels.items()
    grpc_rules = [
        rule
        for rule in policy["spec"]["ingress"]
        if {"port": "grpc", "protocol": "TCP"} in rule["ports"]
    ]
    assert len(grpc_rules) == 1
    (peer,) = grpc_rules[0]["from"]
    assert peer["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= worker_labels.items()


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
