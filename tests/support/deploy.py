"""The deployment files under deploy/ (Prometheus, Grafana, Kubernetes), as the deploy suite
reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.tools import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "colorize.json"
K8S = DEPLOY / "k8s"


def binary(name: str, package: str) -> str:
    """The path of `name`, or skip the test saying what to install (see tests/support/tools.py)."""
    return require(name, package)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows included."""
    out = []
    for panel in dashboard()["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            for target in p.get("targets", []):
                out.append((p["title"], target["expr"]))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all_yaml(path)]


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in k8s_documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]
