"""docker-compose.yml: parsed by Compose where a client has it, else checked as YAML; its configs validated.

No container engine is needed: ``docker compose config`` (or the older
``docker-compose config``) only parses and resolves the file. Without either,
the YAML is checked for the services, ports and volumes the stack relies on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"gateway", "worker", "redis", "prometheus", "grafana"}


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _env() -> dict[str, str]:
    # Compose substitutes ${VAR:-default} from the environment: leave the stack's own unset.
    return {k: v for k, v in os.environ.items()
            if k not in ("GATEWAY_CLIENT_KEY", "GATEWAY_ADMIN_KEY", "GRAFANA_ADMIN_PASSWORD")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The stack as Compose resolves it, or as plain YAML where no Compose is installed."""
    command = _compose_command()
    if command is None:
        return dict(yaml.safe_load(COMPOSE.read_text()))
    result = subprocess.run([*command, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60,
                            cwd=ROOT, env=_env())
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def _host_path(volume: Any) -> Path | None:
    """The host side of a bind mount, or None for a named volume."""
    if isinstance(volume, dict):
        return Path(volume["source"]) if volume.get("type") == "bind" else None
    source = str(volume).split(":")[0]
    if source.startswith((".", "/")):
        return ROOT / source if not source.startswith("/") else Path(source)
    return None


def _named(volume: Any) -> str | None:
    if isinstance(volume, dict):
        return volume["source"] if volume.get("type") == "volume" else None
    source = str(volume).split(":")[0]
    return None if source.startswith((".", "/")) else source


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, published, target) of each published port."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", int(parts[-2]), int(parts[-1])))
    return out


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert SERVICES <= set(services)
    gateway, worker = services["gateway"], services["worker"]
    assert gateway["command"][:1] == ["serve"] and "--no-worker" in gateway["command"]
    assert "0.0.0.0" in gateway["command"]
    assert worker["command"][:1] == ["worker"]
    assert gateway["image"] == worker["image"], "one image for both"
    assert "build" in gateway
    for name in ("gateway", "worker"):
        assert services[name]["read_only"] is True
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert "redis" in services[name]["depends_on"]
    # The worker serves no /healthz (Compose v1 writes the switch as test: [NONE]).
    assert worker["healthcheck"].get("disable") is True or worker["healthcheck"].get("test") == ["NONE"]


def test_redis_keeps_jobs(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(_named(v) for v in compose["services"]["redis"]["volumes"]), "AOF on a volume"


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    published = {name: _ports(s) for name, s in compose["services"].items() if s.get("ports")}
    assert published == {
        "gateway": [("127.0.0.1", 8080, 8080)],
        "prometheus": [("127.0.0.1", 9090, 9090)],
        "grafana": [("127.0.0.1", 3000, 3000)],
    }


def test_volumes_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    mounts: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            host = _host_path(volume)
            if host is not None:
                assert host.exists(), f"{name} mounts {host}, which does not exist"
                target = volume["target"] if isinstance(volume, dict) else str(volume).split(":")[1]
                mounts.setdefault(name, []).append(f"{host.resolve().relative_to(ROOT)}:{target}")
            else:
                assert _named(volume) in declared, f"{name} uses undeclared volume {volume}"
    assert "deploy/compose/prometheus.yml:/etc/prometheus/prometheus.yml" in mounts["prometheus"]
    assert "dashboards/alerts.yaml:/etc/prometheus/alerts.yaml" in mounts["prometheus"]
    assert "dashboards:/etc/grafana/dashboards/llm-gateway" in mounts["grafana"]
    assert any(m.startswith("dashboards/provisioning/") and "/provisioning/dashboards/" in m for m in mounts["grafana"])
    assert any(m.startswith("dashboards/provisioning/") and "/provisioning/datasources/" in m for m in mounts["grafana"])
    # The gateway and the worker share the Batch API's file store.
    shared = {_named(v) for v in compose["services"]["gateway"]["volumes"]} - {None}
    assert shared and shared <= {_named(v) for v in compose["services"]["worker"]["volumes"]}


def test_grafana_provisioning_points_at_the_mounted_dashboards(compose: dict[str, Any]) -> None:
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards/llm-gateway"
    datasource = yaml.safe_load((ROOT / "dashboards/provisioning/datasource.example.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090", "the stack's prometheus service"


def test_prometheus_config_scrapes_the_gateway_and_loads_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["gateway:8080"]
    assert config["rule_files"] == ["alerts.yaml"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    # The container's layout: the config and the rules side by side in /etc/prometheus.
    shutil.copy(ROOT / "deploy/compose/prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ROOT / "dashboards/alerts.yaml", tmp_path / "alerts.yaml")
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_config_passes_check_config() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "GATEWAY_CLIENT_KEY", "GATEWAY_ADMIN_KEY")}
    result = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(ROOT / "deploy/compose/gateway.yaml")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
