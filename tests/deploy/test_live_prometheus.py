"""A real Prometheus scrapes a real service: the committed scrape job, alert rules and every
dashboard query work against what the service actually exports.

Both listen on 127.0.0.1 only. The service runs the real engines (no weights here, so the
exemplar engine serves and eccv16/siggraph17 report missing weights, as a fresh container does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
import yaml

from service.api.app import create_app
from service.engines.catalog import ENGINE_NAMES
from service.settings import Settings
from tests.deploy.dockerfile import instructions, read
from tests.deploy.promql import metric_names, sample_names
from tests.support.deploy import ALERTS, PROMETHEUS_DIR, ROOT, binary, dashboard_queries, load_yaml
from tests.support.servers import free_port

JOBS = 3
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll until `probe` returns something other than None (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app as `colorize-service serve` builds it, in a uvicorn thread on a free port."""
    port = free_port()
    settings = Settings(
        device="cpu",
        host="127.0.0.1",
        port=port,
        weights_dir=tmp_path_factory.mktemp("weights"),
        log_level="warning",
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def live() -> bool | None:
        if not thread.is_alive():
            raise AssertionError("the server thread exited during start-up")
        try:
            return httpx.get(f"{base}/livez", timeout=1).status_code == 200 or None
        except httpx.TransportError:
            return None

    try:
        eventually(live, "the service to answer /livez", timeout=60)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive(), "the server did not stop"


def scrape_config(target: str, tsdb: Path) -> dict[str, Any]:
    """The committed prometheus.yml with only the target and the intervals changed."""
    config: dict[str, Any] = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    job["scrape_timeout"] = "1s"  # may not exceed the interval
    return config


@pytest.fixture(scope="module")
def prometheus(service: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = binary("prometheus", "prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config_file = work / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(scrape_config(service.split("//")[1], work)))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            executable,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {proc.returncode}: {(work / 'prometheus.log').read_text()}"
            )
        try:
            return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200 or None
        except httpx.TransportError:
            return None

    try:
        eventually(ready, "Prometheus to be ready", timeout=30)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def scraped(service: str, prometheus: str, gray_png: bytes, colour_png: bytes) -> tuple[str, str]:
    """Run JOBS exemplar jobs and wait until Prometheus has scraped them all."""
    for _ in range(JOBS):
        r = httpx.post(
            f"{service}/colorize",
            files={"image": ("a.png", gray_png), "reference": ("r.png", colour_png)},
            data={"model": "exemplar"},
            timeout=60,
        )
        assert r.status_code == 200, r.text

    def all_done() -> bool | None:
        result = query(prometheus, 'sum(colorize_jobs_total{job="colorize",outcome="done"})')
        return (bool(result) and float(result[0]["value"][1]) == JOBS) or None

    eventually(all_done, f"Prometheus to count {JOBS} finished jobs")
    return service, prometheus


def test_prometheus_counts_exactly_the_jobs_that_ran(scraped: tuple[str, str]) -> None:
    _, prometheus = scraped
    [series] = query(prometheus, 'sum by (model) (colorize_jobs_total{outcome="done"})')
    assert series["metric"] == {"model": "exemplar"}
    assert float(series["value"][1]) == JOBS


def test_memory_usage_ratio_is_scraped_with_its_labels(scraped: tuple[str, str]) -> None:
    service, prometheus = scraped
    [series] = query(prometheus, "colorize_memory_usage_ratio")
    assert series["metric"]["job"] == "colorize"
    assert series["metric"]["instance"] == service.split("//")[1]
    assert series["metric"]["device"] == "cpu"
    assert 0.0 < float(series["value"][1]) <= 1.0


def test_the_scrape_is_healthy(scraped: tuple[str, str]) -> None:
    _, prometheus = scraped
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]
    [target] = targets["activeTargets"]
    assert target["health"] == "up", target.get("lastError")
    assert target["labels"]["job"] == "colorize"


def test_alert_rules_load_and_evaluate_without_errors(scraped: tuple[str, str]) -> None:
    _, prometheus = scraped
    expected = {g["name"] for g in load_yaml(ALERTS)["groups"]}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = eventually(evaluated, "every rule to be evaluated once")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {g["name"] for g in groups} == expected
    assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}


def test_only_the_models_without_weights_raise_an_alert(scraped: tuple[str, str]) -> None:
    # No weights here: every network is not ready, so its alert is pending (it fires after
    # 10 minutes); nothing else about a healthy service may be pending.
    _, prometheus = scraped
    expected = {("ColorizeEngineNotReady", name) for name in ENGINE_NAMES if name != "exemplar"}

    def pending() -> set[tuple[str, str]] | None:
        alerts = query(prometheus, "ALERTS")
        found = {(a["metric"]["alertname"], a["metric"].get("model", "")) for a in alerts}
        return found if len(found) >= len(expected) else None

    assert eventually(pending, "the engine alerts to be pending") == expected


# Grafana variables, as Grafana would fill them in for "All" instances.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


def _query_ids() -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for title, _ in dashboard_queries():
        seen[title] = seen.get(title, 0) + 1
        ids.append(f"{title} #{seen[title]}")
    return ids


@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=_query_ids())
def test_dashboard_query_returns_data(
    scraped: tuple[str, str], metrics_text: str, title: str, expr: str
) -> None:
    _, prometheus = scraped
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    present = sample_names(metrics_text) | {"up"}
    if not metric_names(expr) & present:
        # e.g. the allocator gauges: a CPU has no caching allocator, the family is empty.
        assert query(prometheus, expr) == []
        return
    # rate() needs two scrapes after the jobs, so allow a few seconds.
    eventually(lambda: query(prometheus, expr) or None, f"{title!r} to return data", timeout=15)


@pytest.fixture(scope="module")
def metrics_text(scraped: tuple[str, str]) -> str:
    service, _ = scraped
    return httpx.get(f"{service}/metrics", timeout=5).text


@pytest.mark.parametrize(
    ("port_of", "exit_ok"), [("service", True), ("closed", False)], ids=["up", "down"]
)
def test_image_healthcheck_command_probes_livez(service: str, port_of: str, exit_ok: bool) -> None:
    # The HEALTHCHECK line of the Dockerfile, run with this interpreter against a real server.
    [health] = read(ROOT / "Dockerfile").chain()[0].all("HEALTHCHECK")
    command = instructions("CMD " + health.args.partition("CMD ")[2])[0].exec_form
    assert command is not None and command[0] == "python"
    port = service.rsplit(":", 1)[1] if port_of == "service" else str(free_port())
    out = subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "COLORIZE_PORT": port},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (out.returncode == 0) is exit_ok, out.stderr
