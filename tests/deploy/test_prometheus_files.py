"""promtool on the committed Prometheus config, alert rules and alert unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.deploy import ALERTS, PROMETHEUS_DIR, ROOT, binary, load_yaml


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool", "prometheus"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "args",
    [
        # rule_files are relative to the config file, so this also finds alerts.yml.
        ("check", "config", "deploy/prometheus/prometheus.yml"),
        ("check", "rules", "deploy/prometheus/alerts.yml"),
        ("test", "rules", "deploy/prometheus/alerts_test.yml"),
    ],
    ids=["check config", "check rules", "test rules"],
)
def test_promtool_accepts(args: tuple[str, ...]) -> None:
    out = promtool(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_config_scrapes_the_replicas_as_job_colorize_and_loads_the_alerts() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert config["rule_files"] == [ALERTS.name]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "colorize"  # the alert rules select job="colorize"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # Both replicas of the compose stack, each scraped directly (tests/deploy/test_compose.py).
    assert job["static_configs"] == [{"targets": ["colorizer-a:8000", "colorizer-b:8000"]}]


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"]}
    tested = {
        case["alertname"]
        for test in load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert alerts - tested == set(), "alerts without a test case that expects them to fire"


@pytest.mark.parametrize(
    "rule",
    [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"]],
    ids=lambda r: r["alert"],
)
def test_alert_has_severity_and_a_summary(rule: dict[str, object]) -> None:
    assert rule["labels"]["severity"] in ("warning", "critical")  # type: ignore[index]
    assert rule["annotations"]["summary"]  # type: ignore[index]
    assert rule["annotations"]["description"]  # type: ignore[index]


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    # The unit tests must be able to fail: with a shorter `for`, the "not yet" cases fire.
    work = tmp_path
    (work / "alerts.yml").write_text(ALERTS.read_text().replace("for: 10m", "for: 1m"))
    (work / "alerts_test.yml").write_text((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    out = promtool("test", "rules", str(work / "alerts_test.yml"))
    assert out.returncode != 0
    assert "ColorizeMemoryAboveThreshold" in out.stdout + out.stderr
