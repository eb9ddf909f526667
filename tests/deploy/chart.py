"""Rendering the Helm chart offline through helm-python-sdk (the Helm v4 engine), and its manifests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gateway"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
RELEASE = "rel"
NAMESPACE = "llm"

# The CRD-backed API versions the chart checks with .Capabilities.APIVersions.Has.
CRD_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
)


def all_features_values() -> dict[str, Any]:
    return yaml.safe_load(ALL_FEATURES.read_text())


def render(
    values: dict[str, Any] | None = None,
    *,
    api_versions: Iterable[str] = (),
    kube_version: str | None = None,
) -> dict[str, str]:
    """Render the chart like ``helm template rel helm/gateway -n llm [--api-versions ...]``.

    ``Chart.render`` in helm-python-sdk 0.2 takes no API versions or kube version,
    though the library's render call accepts both (``--api-versions`` and
    ``--kube-version`` of ``helm template``); the CRD guards need them, so this
    calls the library function with those options directly.
    """
    import helm_python
    from helm_python import _native

    opts: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True}
    if api_versions:
        opts["api_versions"] = list(api_versions)
    if kube_version:
        opts["kube_version"] = kube_version
    with helm_python.Chart.load(CHART) as chart:
        rendered = _native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts))
    return dict(json.loads(rendered))


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in a render (NOTES.txt and empty documents left out)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def notes(rendered: dict[str, str]) -> str:
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


@cache
def _rendered(kind: str) -> tuple[tuple[str, str], ...]:
    if kind == "default":
        out = render()
    elif kind == "all":
        out = render(all_features_values(), api_versions=CRD_APIS)
    elif kind == "all-no-crds":
        out = render(all_features_values())
    else:  # pragma: no cover
        raise ValueError(kind)
    return tuple(out.items())


def rendered(kind: str) -> dict[str, str]:
    """A cached render: ``default`` values; ``all`` features with the CRDs served; ``all-no-crds`` without."""
    return dict(_rendered(kind))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def gateway_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway configuration carried by the chart's ConfigMap."""
    cm = one(docs, "ConfigMap", f"{RELEASE}-gateway-config")
    return yaml.safe_load(cm["data"]["config.yaml"])
