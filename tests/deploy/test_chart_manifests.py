"""Rendered manifests against the Kubernetes JSON schemas, the CRD kinds' required fields, and the rendered config."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.chart import RELEASE, ROOT, documents, find, gateway_config, one, rendered

CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
MIN_KUBE = "1.27.0"


def _kube_versions() -> list[str]:
    from kubernetes_validate.utils import latest_version

    return [MIN_KUBE, latest_version()]


@pytest.mark.parametrize("kind", ["default", "all", "all-no-crds"])
def test_every_builtin_manifest_validates_against_the_kubernetes_schemas(kind: str) -> None:
    docs = [d for d in documents(rendered(kind)) if d["kind"] not in CRD_KINDS]
    assert docs
    for version in _kube_versions():
        for doc in docs:
            try:
                # strict: unknown fields are errors too.
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {where}: {exc.message}")


def test_the_validator_does_catch_a_broken_manifest() -> None:
    """Guard against a validator that accepts anything: a typo in a Deployment must fail."""
    deployment = one(documents(rendered("default")), "Deployment", f"{RELEASE}-gateway")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, MIN_KUBE, strict=True)


def _metadata_ok(doc: dict[str, Any]) -> None:
    name = doc["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
    assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_service_monitor_scrapes_the_gateway_service() -> None:
    docs = documents(rendered("all"))
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    _metadata_ok(sm)
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service", f"{RELEASE}-gateway")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert sm["spec"]["endpoints"], "endpoints is required"
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names
        assert ep["path"] == "/metrics"
        assert re.fullmatch(r"[0-9]+(ms|s|m|h)", ep["interval"])
        assert re.fullmatch(r"[0-9]+(ms|s|m|h)", ep["scrapeTimeout"])


def test_pod_monitor_scrapes_the_worker_pods() -> None:
    docs = documents(rendered("all"))
    pm = one(docs, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    _metadata_ok(pm)
    worker = one(docs, "Deployment", f"{RELEASE}-gateway-worker")
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for c in worker["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert pm["spec"]["podMetricsEndpoints"], "podMetricsEndpoints is required"
    for ep in pm["spec"]["podMetricsEndpoints"]:
        assert ep["port"] in ports and ep["path"] == "/metrics"


def test_prometheus_rule_carries_the_alert_rules() -> None:
    rule = one(documents(rendered("all")), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    _metadata_ok(rule)
    groups = rule["spec"]["groups"]
    assert groups
    source = yaml.safe_load((ROOT / "helm/gateway/files/alerts.yaml").read_text())["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in source]
    for group, src in zip(groups, source):
        assert group["rules"], f"group {group['name']} has no rules"
        assert len(group["rules"]) == len(src["rules"])
        for r, s in zip(group["rules"], src["rules"]):
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str) and r["expr"].strip()
            assert r["expr"] == s["expr"] and r.get("labels") == s.get("labels")
            if "alert" in r:
                assert r["labels"]["severity"] in ("critical", "warning", "info")
                url = r["annotations"].get("runbook_url")
                if url is not None:  # the relative runbook links point at runbookBaseUrl
                    assert url.startswith("https://runbooks.example.com/gateway.html#"), url


def test_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rule = one(documents(rendered("all")), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaled_object_scales_the_workers_on_stream_lag() -> None:
    docs = documents(rendered("all"))
    so = one(docs, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    _metadata_ok(so)
    spec = so["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == f"{RELEASE}-gateway-worker" and target.get("kind", "Deployment") == "Deployment"
    assert one(docs, "Deployment", target["name"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    config = gateway_config(docs)
    queued = sorted(n for n, t in config["tiers"].items() if t.get("deferrable") or t.get("async"))
    streams = []
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis-streams"
        meta = trigger["metadata"]
        # KEDA trigger metadata is a map of strings.
        assert all(isinstance(v, str) for v in meta.values()), meta
        assert {"address", "stream", "consumerGroup", "lagCount", "activationLagCount"} <= meta.keys()
        assert meta["address"] == f"{RELEASE}-gateway-redis:6379"
        assert meta["consumerGroup"] == "drainers"
        streams.append(meta["stream"])
    ns = config["queue"]["namespace"]
    assert sorted(streams) == [f"{{{ns}}}:stream:{t}" for t in queued]


def test_scaled_object_names_the_gateway_streams() -> None:
    """The stream and group names in the trigger are the ones the queue really uses."""
    from gateway.queue.keys import Keys

    docs = documents(rendered("all"))
    meta = one(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    keys = Keys(namespace=gateway_config(docs)["queue"]["namespace"])
    tier = meta["stream"].rsplit(":", 1)[1]
    assert meta["stream"] == keys.stream(tier)
    assert meta["consumerGroup"] == keys.group


def test_dashboard_configmaps_carry_the_sidecar_label() -> None:
    docs = documents(rendered("all"))
    maps = [d for d in find(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    chart_files = sorted((ROOT / "helm/gateway/files/dashboards").glob("*.json"))
    assert len(maps) == len(chart_files) > 0
    by_file = {name: text for m in maps for name, text in m["data"].items()}
    for path in chart_files:
        assert json.loads(by_file[path.name]) == json.loads(path.read_text())
    for m in maps:
        assert m["metadata"]["annotations"]["grafana_folder"] == "LLM gateway"
    assert not [d for d in documents(rendered("default")) if d["metadata"].get("labels", {}).get("grafana_dashboard")]


def _check_config(tmp_path: Path, config_text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    # Unset every variable the config refers to: the defaults alone must validate.
    env = {k: v for k, v in os.environ.items() if f"${{{k}" not in config_text}
    env.pop("GATEWAY_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)


@pytest.mark.parametrize("kind", ["default", "all"])
def test_rendered_configmap_passes_check_config(kind: str, tmp_path: Path) -> None:
    cm = one(documents(rendered(kind)), "ConfigMap", f"{RELEASE}-gateway-config")
    result = _check_config(tmp_path, cm["data"]["config.yaml"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_check_config_would_catch_a_bad_rendered_config(tmp_path: Path) -> None:
    """The same check fails, naming the key, when values put a wrong key into the config."""
    from tests.deploy.chart import render

    cm = one(documents(render({"config": {"queue": {"mini_batch_sise": 8}}})), "ConfigMap", f"{RELEASE}-gateway-config")
    result = _check_config(tmp_path, cm["data"]["config.yaml"])
    assert result.returncode != 0
    assert "queue.mini_batch_sise" in result.stderr
