"""The Helm chart: lint, offline rendering with default and all-features values, and what the manifests say."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest
import yaml

from tests.deploy.chart import (
    ALL_FEATURES,
    CHART,
    CRD_APIS,
    RELEASE,
    all_features_values,
    documents,
    find,
    gateway_config,
    notes,
    one,
    render,
    rendered,
)

GATEWAY = f"{RELEASE}-gateway"
WORKER = f"{RELEASE}-gateway-worker"
WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error


@pytest.mark.parametrize("values_file", [None, ALL_FEATURES], ids=["default", "all-features"])
def test_helm_lint_strict(values_file: Any) -> None:
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    report = helm_python.lint(CHART, values, strict=True)
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert not problems and not report["errors"], report


def test_values_schema_rejects_unknown_and_mistyped_values() -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(all_features_values()))
        with pytest.raises(helm_python.HelmValuesError, match="replicaCount"):
            chart.validate_schema(chart.merge_values({"gateway": {"replicaCount": 3}}))
        with pytest.raises(helm_python.HelmValuesError, match="minReplicaCount"):
            chart.validate_schema(chart.merge_values({"worker": {"keda": {"minReplicaCount": 0}}}))
        with pytest.raises(helm_python.HelmValuesError, match="port"):
            chart.validate_schema(chart.merge_values({"config": {"server": {"port": "8080"}}}))


def _covered(schema: dict[str, Any], value: Any, path: str, missing: list[str]) -> None:
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _covered(schema["items"], item, f"{path}.{i}", missing)
    if not isinstance(value, dict):
        return
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key, sub in value.items():
        where = f"{path}.{key}" if path else key
        if props is not None and key in props:
            _covered(props[key], sub, where, missing)
        elif isinstance(extra, dict):
            _covered(extra, sub, where, missing)
        elif extra is not True:  # only sections marked open may hold keys the schema does not list
            missing.append(where)


@pytest.mark.parametrize("values_file", [CHART / "values.yaml", ALL_FEATURES], ids=["values.yaml", "all-features"])
def test_values_schema_covers_every_value(values_file: Any) -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    missing: list[str] = []
    _covered(schema, yaml.safe_load(values_file.read_text()), "", missing)
    assert not missing, f"values without a schema entry: {missing}"


def test_values_schema_knows_every_config_section() -> None:
    """The chart's config schema lists the gateway's sections (redis is the chart's own)."""
    import json

    from gateway.config import Config

    schema = json.loads((CHART / "values.schema.json").read_text())
    sections = set(schema["properties"]["config"]["properties"])
    fields = {f.alias or name for name, f in Config.model_fields.items()}
    assert fields - {"redis"} == sections


def test_default_render_has_the_workloads_and_no_optional_parts() -> None:
    docs = documents(rendered("default"))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([
        "ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "PodDisruptionBudget", "Service", "ServiceAccount",
    ])
    gateway = one(docs, "Deployment", GATEWAY)
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    worker = one(docs, "Deployment", WORKER)
    assert worker["spec"]["replicas"] == 1
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == GATEWAY


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_gateway_deployment_probes_shutdown_and_args() -> None:
    docs = documents(rendered("default"))
    config = gateway_config(docs)
    pod = one(docs, "Deployment", GATEWAY)["spec"]["template"]["spec"]
    c = _container(one(docs, "Deployment", GATEWAY))
    assert c["args"] == ["serve", "--config", "/etc/gateway/config.yaml", "--host", "0.0.0.0", "--no-worker"]
    assert c["ports"] == [{"name": "http", "containerPort": config["server"]["port"], "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) > 0
    # Long enough for the preStop sleep and then the server's own grace for streams.
    assert pod["terminationGracePeriodSeconds"] > int(sleep[1]) + config["server"]["shutdown_grace_s"]


def test_worker_deployment_runs_gateway_worker() -> None:
    docs = documents(rendered("default"))
    c = _container(one(docs, "Deployment", WORKER))
    assert c["args"][0] == "worker"
    port = int(c["args"][c["args"].index("--port") + 1])
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    pod = one(docs, "Deployment", WORKER)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > gateway_config(docs)["server"]["shutdown_grace_s"]


def test_without_a_worker_deployment_the_gateway_drains_in_process() -> None:
    docs = documents(render({"worker": {"enabled": False}}))
    assert not find(docs, "Deployment", WORKER)
    assert "--no-worker" not in _container(one(docs, "Deployment", GATEWAY))["args"]
    assert [p["metadata"]["name"] for p in find(docs, "PodDisruptionBudget")] == [GATEWAY]


def test_a_grace_period_shorter_than_the_shutdown_grace_is_refused() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="terminationGracePeriodSeconds"):
        render({"gateway": {"terminationGracePeriodSeconds": 10}})
    docs = documents(render({"config": {"server": {"port": 8080, "shutdown_grace_s": 300}}}))
    assert one(docs, "Deployment", GATEWAY)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 310


@pytest.mark.parametrize("kind", ["default", "all"])
def test_every_pod_runs_restricted(kind: str) -> None:
    docs = documents(rendered(kind))
    deployments = find(docs, "Deployment")
    assert deployments
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, d["metadata"]["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["runAsNonRoot"] is True


@pytest.mark.parametrize("kind", ["default", "all"])
def test_writable_paths_are_volumes(kind: str) -> None:
    """The root filesystem is read-only: /tmp and the files store (config files.dir) are mounted volumes."""
    docs = documents(rendered(kind))
    files_dir = gateway_config(docs)["files"]["dir"]
    for name in (GATEWAY, WORKER):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in _container({"spec": {"template": {"spec": pod}}})["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        files = volumes[mounts[files_dir]]
        if kind == "default":
            assert "emptyDir" in files
        else:
            assert files["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-gateway-files"
            assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rendered_config_uses_external_redis_and_never_a_private_one() -> None:
    config = gateway_config(documents(rendered("default")))
    assert config["redis"] == {"url": "${REDIS_URL:-redis://redis:6379/0}", "private": "never"}
    assert config["files"]["dir"] == "/var/lib/gateway/files"
    in_chart = gateway_config(documents(rendered("all")))
    assert in_chart["redis"] == {"url": f"redis://{RELEASE}-gateway-redis:6379/0", "private": "never"}
    assert in_chart["files"] == {"dir": "/data/files", "max_bytes": 104857600}


SECRET_KEYS = {"key", "key_sha256", "api_key", "webhook_secret"}


def _secret_values(tree: Any, path: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            where = f"{path}.{k}" if path else str(k)
            if k in SECRET_KEYS or (k == "url" and isinstance(v, str) and "@" in v):
                found.append((where, v))
            found += _secret_values(v, where)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            found += _secret_values(v, f"{path}.{i}")
    return found


@pytest.mark.parametrize("kind", ["default", "all"])
def test_no_secret_is_inlined(kind: str) -> None:
    """Keys reach the config only as ${VAR} references; the pods get VAR from existing Secrets."""
    docs = documents(rendered(kind))
    secrets = _secret_values(gateway_config(docs))
    assert secrets
    for where, value in secrets:
        assert isinstance(value, str) and re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[0-9a-f]*)?\}", value), where
    assert not find(docs, "Secret"), "the chart never creates a Secret"


def test_existing_secrets_reach_both_workloads() -> None:
    docs = documents(rendered("all"))
    for name in (GATEWAY, WORKER):
        c = _container(one(docs, "Deployment", name))
        assert c["envFrom"] == [{"secretRef": {"name": "gateway-secrets"}}]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
        assert refs["ANTHROPIC_API_KEY"] == {"name": "llm-keys", "key": "anthropic"}
        assert refs["OPENAI_ORG"]["optional"] is True


def _scalers(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Deployment name -> kinds of the autoscalers that target it."""
    out: dict[str, list[str]] = {}
    for d in docs:
        if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            out.setdefault(d["spec"]["scaleTargetRef"]["name"], []).append(d["kind"])
    return out


def test_keda_replaces_the_worker_hpa_never_both() -> None:
    with_crds = documents(rendered("all"))
    assert _scalers(with_crds) == {GATEWAY: ["HorizontalPodAutoscaler"], WORKER: ["ScaledObject"]}
    assert "replicas" not in one(with_crds, "Deployment", WORKER)["spec"]
    # Without KEDA in the cluster, the worker falls back to its CPU HPA, and NOTES says so.
    without = rendered("all-no-crds")
    assert _scalers(documents(without)) == {GATEWAY: ["HorizontalPodAutoscaler"], WORKER: ["HorizontalPodAutoscaler"]}
    assert "serves no keda.sh/v1alpha1 ScaledObject" in notes(without)


def test_monitoring_objects_need_their_crds() -> None:
    without = rendered("all-no-crds")
    kinds = {d["kind"] for d in documents(without)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}
    assert "serves no monitoring.coreos.com/v1\nServiceMonitor" in notes(without)
    with_crds = {d["kind"] for d in documents(rendered("all"))}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"} <= with_crds


def test_keda_needs_an_address_when_the_redis_url_comes_from_the_environment() -> None:
    values = {"worker": {"keda": {"enabled": True}}}
    with pytest.raises(helm_python.HelmRenderError, match="worker.keda.address"):
        render(values, api_versions=CRD_APIS)
    docs = documents(render({"redis": {"url": "rediss://:pw@redis.example:6380/2"}, **values}, api_versions=CRD_APIS))
    trigger = one(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert (trigger["address"], trigger["databaseIndex"], trigger["enableTLS"]) == ("redis.example:6380", "2", "true")


def test_pdbs_select_their_pods() -> None:
    docs = documents(rendered("all"))
    for name in (GATEWAY, WORKER):
        pdb = one(docs, "PodDisruptionBudget", name)
        labels = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_service_selects_only_gateway_pods() -> None:
    docs = documents(rendered("all"))
    service = one(docs, "Service", GATEWAY)
    selector = service["spec"]["selector"].items()
    assert selector <= one(docs, "Deployment", GATEWAY)["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= one(docs, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_admin_listener_is_a_container_port_outside_the_service() -> None:
    docs = documents(rendered("all"))
    admin_port = gateway_config(docs)["server"]["admin_port"]
    ports = {p["name"]: p["containerPort"] for p in _container(one(docs, "Deployment", GATEWAY))["ports"]}
    assert ports == {"http": 8000, "admin": admin_port}
    assert [p["targetPort"] for p in one(docs, "Service", GATEWAY)["spec"]["ports"]] == ["http"]
    assert f"port-forward deploy/{GATEWAY} {admin_port}:{admin_port}" in notes(rendered("all"))


def test_config_changes_roll_the_pods() -> None:
    a = one(documents(render()), "Deployment", GATEWAY)
    b = one(documents(render({"config": {"server": {"port": 8080, "log_level": "debug"}}})), "Deployment", GATEWAY)
    key = "checksum/config"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]


def test_notes_say_how_to_reach_the_gateway() -> None:
    text = notes(rendered("default"))
    assert f"port-forward svc/{GATEWAY} 8080:8080" in text
    assert "existingSecret" in text
    assert "grafana_dashboard=1" in notes(rendered("all"))
