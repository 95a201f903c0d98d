"""The Kubernetes manifests, checked structurally (no cluster here, and no schema offline)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from service.cli import fetch, serve
from service.settings import Settings
from tests.deploy.dockerfile import read
from tests.support.deploy import K8S, ROOT, k8s_documents, k8s_object, load_all_yaml

# kind -> the apiVersion we write it for.
KINDS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Job": "batch/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


def deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "colorize")


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = deployment()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [c] = pod()["containers"]
    return c


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def image_uid() -> int:
    user = read(ROOT / "Dockerfile").chain()[0].all("USER")[-1].args
    return int(user.split(":")[0])


def cli_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="colorize-service", exit_on_error=False)
    sub = parser.add_subparsers(dest="command")
    serve.add_parser(sub)
    fetch.add_parser(sub)
    return parser.parse_args(args)


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_document_is_a_named_object_of_a_known_kind(path: Path) -> None:
    docs = load_all_yaml(path)
    assert docs
    for doc in docs:
        assert doc["kind"] in KINDS, doc["kind"]
        assert doc["apiVersion"] == KINDS[doc["kind"]]
        assert doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"], "apply with -n; do not hard-code one"


def test_one_gpu_per_pod() -> None:
    resources = container()["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    assert env(container())["COLORIZE_DEVICE"] == "cuda"
    # Requests default to limits for extended resources; a different request is rejected.
    assert resources.get("requests", {}).get("nvidia.com/gpu", 1) in (1, "1")
    assert "memory" in resources["limits"]


GI = {"Gi": 1 << 30, "Mi": 1 << 20}


def test_the_host_budget_is_the_containers_memory_limit() -> None:
    # The service admits host memory against COLORIZE_HOST_MEMORY_BYTES: a budget above the
    # limit would let the kernel kill the pod first; below it, memory would sit unused.
    resources = container()["resources"]
    limit = resources["limits"]["memory"]
    size = int(limit[:-2]) * GI[limit[-2:]]
    assert int(env(container())["COLORIZE_HOST_MEMORY_BYTES"]) == size
    assert resources["requests"]["memory"] == limit, "Guaranteed: request equals limit"


@pytest.mark.parametrize(
    ("probe", "path"),
    [("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")],
    ids=["liveness", "readiness", "startup"],
)
def test_probes(probe: str, path: str) -> None:
    c = container()
    get = c[probe]["httpGet"]
    assert get["path"] == path
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[get["port"]] == int(env(c)["COLORIZE_PORT"])


def test_termination_grace_outlasts_the_drain() -> None:
    c = container()
    grace = float(env(c)["COLORIZE_SHUTDOWN_GRACE_S"])  # set explicitly, not left to the default
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop, then uvicorn waits up to the grace for requests, then the worker up to the grace.
    needed = float(pre_stop[1]) + 2 * grace
    assert pod()["terminationGracePeriodSeconds"] > needed


def test_shutdown_grace_default_matches_the_manifest() -> None:
    # The manifest states the default explicitly; if the default moves, revisit the period.
    assert float(env(container())["COLORIZE_SHUTDOWN_GRACE_S"]) == Settings().shutdown_grace_s


@pytest.mark.parametrize(
    "spec",
    [pod(), k8s_object("Job")["spec"]["template"]["spec"]],
    ids=["deployment", "fetch-weights job"],
)
def test_pods_run_as_the_image_user_without_privileges(spec: dict[str, Any]) -> None:
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == image_uid() != 0
    assert spec["automountServiceAccountToken"] is False
    for c in spec["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        if c["securityContext"].get("readOnlyRootFilesystem"):
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts, "uploads spill to /tmp; mount something writable there"


def test_weights_volume_is_the_claim_the_job_fills() -> None:
    c = container()
    weights_dir = env(c)["COLORIZE_WEIGHTS_DIR"]
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == weights_dir]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in pod()["volumes"]}
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    pvc = k8s_object("PersistentVolumeClaim", claim)
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]  # replicas on several nodes read it
    job = k8s_object("Job")["spec"]["template"]["spec"]
    [fetcher] = job["containers"]
    assert cli_args(fetcher["args"]).command == "fetch-weights"
    job_volumes = {v["name"]: v for v in job["volumes"]}
    [job_mount] = [m for m in fetcher["volumeMounts"] if m["mountPath"] == weights_dir]
    assert job_volumes[job_mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
    assert env(fetcher)["COLORIZE_WEIGHTS_DIR"] == weights_dir


def test_container_serves_on_all_interfaces_with_the_image_command() -> None:
    c = container()
    assert cli_args(c["args"]).command == "serve"
    assert env(c)["COLORIZE_HOST"] == "0.0.0.0"
    assert env(c)["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_deployment_selects_its_own_pods() -> None:
    d = deployment()
    selector = d["spec"]["selector"]["matchLabels"]
    assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_service_routes_to_the_pods_named_port() -> None:
    svc = k8s_object("Service", "colorize")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in container()["ports"]}
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in port_names


def test_service_monitor_scrapes_the_service_as_job_colorize() -> None:
    svc = k8s_object("Service", "colorize")
    monitor = k8s_object("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # Without a jobLabel the operator names the job after the Service; the alerts expect it.
    assert "jobLabel" not in monitor["spec"] and svc["metadata"]["name"] == "colorize"


def test_pods_also_carry_the_plain_scrape_annotations() -> None:
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container()["ports"][0]["containerPort"]


def test_keda_scales_the_deployment_on_queue_depth() -> None:
    scaled = k8s_object("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment()["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    # AverageValue: replicas = ceil(query / threshold), i.e. threshold = queue per replica.
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"].startswith("sum(colorize_queue_depth")
    threshold = float(trigger["metadata"]["threshold"])
    queue_size = int(env(container())["COLORIZE_QUEUE_SIZE"])
    # Scale out well before a replica's queue is full and clients get 503.
    assert 0 < threshold <= queue_size / 2


def test_no_object_is_defined_twice() -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in k8s_documents()]
    assert len(keys) == len(set(keys))
