"""The compose stack: docker-compose accepts both files and resolves them to what we meant."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import DEPLOY, ROOT, binary, load_yaml

BASE = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"


def compose_config(*files: Path) -> dict[str, Any]:
    """`docker-compose -f ... config`: validates the files and prints the merged result."""
    # Variables a developer may have set would change the result; the test wants the defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "GRAFANA_"))}
    args = [binary("docker-compose", "docker-compose")]
    for f in files:
        args += ["-f", str(f)]
    out = subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    merged: dict[str, Any] = yaml.safe_load(out.stdout)
    return merged


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a host path or a volume name), short or long syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = str(v["source"])
        else:
            source, target = v.split(":")[:2]
            out[target] = source
    return out


def container_ports(service: dict[str, Any]) -> set[int]:
    """The container side of each published port, short (`"127.0.0.1:80:80/tcp"`) or long."""
    out = set()
    for p in service.get("ports", []):
        target = p["target"] if isinstance(p, dict) else p.split("/")[0].split(":")[-1]
        out.add(int(target))
    return out


def seconds(duration: str) -> float:
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


@pytest.fixture(scope="module")
def cpu_stack() -> dict[str, Any]:
    return compose_config(BASE)


@pytest.fixture(scope="module")
def gpu_stack() -> dict[str, Any]:
    return compose_config(BASE, GPU)


def test_base_file_builds_the_cpu_image_without_a_gpu(cpu_stack: dict[str, Any]) -> None:
    colorizer = cpu_stack["services"]["colorizer"]
    assert colorizer["build"]["args"]["FLAVOR"] == "cpu"
    assert "deploy" not in colorizer  # runs on a host without the NVIDIA runtime
    assert mounts(colorizer)["/weights"] == "weights"
    assert colorizer["environment"]["COLORIZE_WEIGHTS_DIR"] == "/weights"
    assert "/livez" in " ".join(colorizer["healthcheck"]["test"])
    assert container_ports(colorizer) == {8000}


def test_gpu_override_builds_cuda_and_reserves_one_gpu(
    cpu_stack: dict[str, Any], gpu_stack: dict[str, Any]
) -> None:
    colorizer = gpu_stack["services"]["colorizer"]
    assert colorizer["build"]["args"]["FLAVOR"] == "cuda"
    assert colorizer["image"] != cpu_stack["services"]["colorizer"]["image"]
    assert colorizer["environment"]["COLORIZE_DEVICE"] == "cuda"
    devices = colorizer["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # The override changes only the colorizer (merging may reorder volume lists).
    for name in ("prometheus", "grafana"):
        gpu, cpu = gpu_stack["services"][name], cpu_stack["services"][name]
        assert mounts(gpu) == mounts(cpu)
        assert {k: v for k, v in gpu.items() if k != "volumes"} == {
            k: v for k, v in cpu.items() if k != "volumes"
        }


def test_stop_grace_covers_the_drain(cpu_stack: dict[str, Any]) -> None:
    # uvicorn waits up to the grace for requests, then the worker up to the grace again.
    colorizer = cpu_stack["services"]["colorizer"]
    grace = float(colorizer["environment"]["COLORIZE_SHUTDOWN_GRACE_S"])
    assert seconds(colorizer["stop_grace_period"]) > 2 * grace


def test_prometheus_reads_the_committed_config(cpu_stack: dict[str, Any]) -> None:
    prometheus = cpu_stack["services"]["prometheus"]
    config_dir = mounts(prometheus)["/etc/prometheus"]
    assert Path(config_dir).resolve() == (DEPLOY / "prometheus").resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # The scrape target is the colorizer service of this file, on the port it listens on.
    targets = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    host, port = targets["static_configs"][0]["targets"][0].split(":")
    assert host in cpu_stack["services"] and port == "8000"


def test_grafana_is_provisioned_from_the_repository(cpu_stack: dict[str, Any]) -> None:
    grafana = cpu_stack["services"]["grafana"]
    m = {target: Path(src).resolve() for target, src in mounts(grafana).items() if "/" in src}
    assert m["/etc/grafana/provisioning"] == (DEPLOY / "grafana" / "provisioning").resolve()
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "colorize.yml")
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert m[dashboards_path] == (DEPLOY / "grafana" / "dashboards").resolve()
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(dashboards_path)
    assert (DEPLOY / "grafana" / "dashboards" / home.name).is_file()
    # The datasource URL names the prometheus service on Prometheus' port.
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in cpu_stack["services"]


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_third_party_images_are_pinned(service: str) -> None:
    image = load_yaml(BASE)["services"][service]["image"]
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image} has no tag"
    assert tag != "latest" and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), image


@pytest.mark.parametrize("path", [BASE, GPU], ids=["base file", "gpu override"])
def test_file_has_no_keys_docker_compose_v1_rejects(path: Path) -> None:
    # docker-compose 1.29 (Debian's) fails on a top-level `name:`; Compose v2 warns on `version:`.
    assert {"name", "version"} & set(load_yaml(path)) == set()
