"""The Kubernetes manifests, checked structurally (no cluster here, and no schema offline)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import SecretStr

from service.cli import fetch, serve
from service.settings import Settings
from service.store.keys import GROUP, Keys
from service.worker.lanes import batch_limit
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
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "ConfigMap": "v1",
}
SHARED = "colorize-shared-store"
"""The Secret (created with kubectl, never committed) and the ConfigMap of the shared store."""
LEAVE_S = 17.0
"""Leaving the shared store's consumer group at shutdown, at most: the background tasks are
cancelled within 5 s (service/store/presence.py cancel_all), as is the start-up task, then the
heartbeat key is deleted (COLORIZE_SHARED_TIMEOUT_S, 3 s, retried once)."""


def deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "colorize")


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = deployment()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [c] = pod()["containers"]
    return c


def env(c: dict[str, Any]) -> dict[str, str]:
    """The variables set to a literal value."""
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def env_refs(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The variables read from a Secret or ConfigMap: name -> {kind, name, key, optional}."""
    out = {}
    for e in c.get("env", []):
        for source, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = e.get("valueFrom", {}).get(source)
            if ref is not None:
                out[e["name"]] = {"kind": kind, "optional": False, **ref}
    return out


def shared_config() -> dict[str, str]:
    data: dict[str, str] = k8s_object("ConfigMap", SHARED)["data"]
    return data


def from_config_map(variable: str) -> str:
    """The value the ConfigMap gives `variable` in the container."""
    ref = env_refs(container())[variable]
    assert (ref["kind"], ref["name"]) == ("ConfigMap", SHARED), ref
    return shared_config()[ref["key"]]


def gpu_batch() -> int:
    """Jobs per forward pass on a GPU pod (COLORIZE_BATCH_MAX_SIZE=auto)."""
    return batch_limit(Settings().batch_max_size, torch.device("cuda"))


def gpu_lookahead() -> int:
    """Jobs a GPU pod decodes ahead (COLORIZE_LOOKAHEAD=auto: a batch and the prepare threads),
    which is also how many /jobs entries it pulls into its local queue."""
    defaults = Settings()
    assert defaults.lookahead == "auto"
    return gpu_batch() + defaults.prepare_workers


def redis_triggers() -> dict[str, dict[str, Any]]:
    triggers = k8s_object("ScaledObject")["spec"]["triggers"]
    return {t["name"]: t for t in triggers if t["type"] == "redis-streams"}


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
    [
        ("livenessProbe", "/livez"),
        # The shared store's outage must not take /colorize out of the Service.
        ("readinessProbe", "/readyz?scope=colorize"),
        ("startupProbe", "/livez"),
    ],
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
    # preStop, then uvicorn waits up to the grace for requests, the shared runner up to the
    # grace for the jobs it runs, the replica leaves the consumer group (its unfinished entries
    # go to the others at once), then the worker waits up to the grace for the running batch.
    needed = float(pre_stop[1]) + 3 * grace + LEAVE_S
    assert pod()["terminationGracePeriodSeconds"] > needed
    # ...and a replica killed anyway has its jobs claimed: nothing accepted waits on it longer.
    assert Settings().shared_claim_after_s < pod()["terminationGracePeriodSeconds"]


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


def test_deployment_takes_the_shared_store_from_a_secret_and_a_config_map() -> None:
    c = container()
    refs = env_refs(c)
    # The credentials come from the Secret, never a literal in the manifest.
    assert refs["COLORIZE_REDIS_URL"] == {
        "kind": "Secret",
        "name": SHARED,
        "key": "redis-url",
        "optional": False,  # without it the pod does not start (rather than start in-process)
    }
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert (refs[variable]["kind"], refs[variable]["name"]) == ("Secret", SHARED)
        assert refs[variable]["optional"] is True  # pods may get S3 access from their identity
    assert not {"COLORIZE_REDIS_URL", "AWS_SECRET_ACCESS_KEY"} & set(env(c))
    # The rest from the ConfigMap: with any Redis URL, the settings validate as the shared store.
    settings = Settings(
        redis_url=SecretStr("rediss://:secret@redis.example.internal:6379/0"),
        object_store_url=from_config_map("COLORIZE_OBJECT_STORE_URL"),
        object_store_bucket=from_config_map("COLORIZE_OBJECT_STORE_BUCKET"),
        shared_prefix=from_config_map("COLORIZE_SHARED_PREFIX"),
    )
    assert settings.shared_store
    assert from_config_map("AWS_REGION")


def test_no_committed_manifest_holds_a_secret() -> None:
    assert not [d for d in k8s_documents() if d["kind"] == "Secret"]


def test_keda_scales_on_the_job_streams_lag() -> None:
    spec = k8s_object("ScaledObject")["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment()["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    triggers = redis_triggers()
    assert set(triggers) == {"jobs-waiting", "jobs-held"}
    lag = triggers["jobs-waiting"]["metadata"]
    # lagCount selects XINFO GROUPS' lag (KEDA: with a consumer group and no lagCount it would
    # count pending entries instead).
    assert int(lag["lagCount"]) > 0 and "pendingEntriesCount" not in lag
    assert int(lag.get("activationLagCount", "0")) == 0
    held = triggers["jobs-held"]["metadata"]
    assert "lagCount" not in held and int(held["pendingEntriesCount"]) > 0
    # The stream and group the service reads: `{COLORIZE_SHARED_PREFIX}:jobs`, group `workers`.
    stream = Keys(from_config_map("COLORIZE_SHARED_PREFIX")).stream
    for trigger in triggers.values():
        metadata = trigger["metadata"]
        assert (metadata["stream"], metadata["consumerGroup"]) == (stream, GROUP)
        assert trigger.get("metricType", "AverageValue") == "AverageValue"


def test_keda_reaches_the_redis_the_pods_use() -> None:
    for trigger in redis_triggers().values():
        metadata = trigger["metadata"]
        # host:port from the pod's environment, out of the same ConfigMap as the store.
        address = from_config_map(metadata["addressFromEnv"])
        host, _, port = address.rpartition(":")
        assert host and port.isdigit()
        assert "password" not in metadata and "passwordFromEnv" not in metadata
        auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])
        [password] = [r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "password"]
        # The Secret the Deployment reads its Redis URL from.
        assert password["name"] == env_refs(container())["COLORIZE_REDIS_URL"]["name"]
        assert password["key"] != "redis-url"  # KEDA takes a bare password, not a URL


def test_keda_holds_the_replicas_busy_with_jobs() -> None:
    # jobs-held targets what one replica holds at full load on a GPU: its look-ahead and the
    # batch on the device.
    held = gpu_lookahead() + gpu_batch()
    assert int(redis_triggers()["jobs-held"]["metadata"]["pendingEntriesCount"]) == held


def test_keda_scales_on_the_colorize_queue_without_counting_pulled_jobs() -> None:
    triggers = k8s_object("ScaledObject")["spec"]["triggers"]
    [trigger] = [t for t in triggers if t["type"] == "prometheus"]
    # AverageValue: replicas = ceil(query / threshold), i.e. threshold = queue per replica.
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"].startswith("sum(colorize_queue_depth")
    threshold = float(trigger["metadata"]["threshold"])
    queue_size = int(env(container())["COLORIZE_QUEUE_SIZE"])
    # Scale out well before a replica's queue is full and clients get 503...
    assert 0 < threshold <= queue_size / 2
    # ...but not on the /jobs entries a replica pulls into its look-ahead (they count as queued).
    assert threshold > gpu_lookahead()


def test_service_needs_no_affinity() -> None:
    # Any replica answers any /jobs request: the shared job store.
    assert "sessionAffinity" not in k8s_object("Service", "colorize")["spec"]


def test_no_object_is_defined_twice() -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in k8s_documents()]
    assert len(keys) == len(set(keys))
