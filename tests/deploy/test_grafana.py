"""The Grafana dashboard and its provisioning: well-formed, wired to the provisioned datasource."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.promql import metric_names
from tests.support.deploy import DEPLOY, dashboard, dashboard_queries, load_yaml

BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def panels() -> list[dict[str, Any]]:
    out = []
    for p in dashboard()["panels"]:
        out += [p, *p.get("panels", [])]
    return out


def graph_panels() -> list[dict[str, Any]]:
    return [p for p in panels() if p["type"] != "row"]


def datasource_uid() -> str:
    provisioned = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    [source] = provisioned["datasources"]
    assert source["type"] == "prometheus"
    uid: str = source["uid"]
    return uid


def test_dashboard_has_a_stable_uid_and_unique_panel_ids() -> None:
    d = dashboard()
    assert d["uid"] == "colorize"  # links and alerts point at it
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("panel", graph_panels(), ids=lambda p: p["title"])
def test_panel_queries_the_provisioned_datasource(panel: dict[str, Any]) -> None:
    uid = datasource_uid()
    assert panel["datasource"] == {"type": "prometheus", "uid": uid}
    assert panel["targets"], "a panel without a query"
    refs = [t["refId"] for t in panel["targets"]]
    assert len(refs) == len(set(refs))
    for target in panel["targets"]:
        assert target["datasource"]["uid"] == uid
        assert target["expr"].strip()
    assert panel.get("description"), "say what the panel means"


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    taken: set[tuple[int, int]] = set()
    for p in panels():
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        cells = {(x, y) for x in xs for y in ys}
        assert not cells & taken, f"{p['title']!r} overlaps another panel"
        taken |= cells


def test_every_variable_a_query_uses_is_defined() -> None:
    defined = {v["name"] for v in dashboard()["templating"]["list"]} | BUILTIN_VARIABLES
    for title, expr in dashboard_queries():
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined, f"{title!r} uses undefined {sorted(used - defined)}"


def test_instance_variable_lists_the_scraped_instances() -> None:
    [var] = dashboard()["templating"]["list"]
    assert var["name"] == "instance"
    assert var["datasource"]["uid"] == datasource_uid()
    match = re.fullmatch(r"label_values\((\w+)\{([^}]*)\}, *instance\)", var["definition"])
    assert match, var["definition"]
    assert match.groups() == ("colorize_memory_usage_ratio", 'job="colorize"')
    assert var["includeAll"] and var["allValue"] == ".*"


@pytest.mark.parametrize(
    ("title_word", "together"),
    [
        ("threshold", {"colorize_memory_usage_ratio", "colorize_memory_threshold_ratio"}),
        ("Queue depth", {"colorize_queue_depth", "colorize_queue_capacity"}),
        (
            "allocator",
            {"colorize_allocator_allocated_bytes", "colorize_allocator_reserved_bytes"},
        ),
        (
            "Device memory",
            {"colorize_device_memory_used_bytes", "colorize_device_memory_total_bytes"},
        ),
    ],
    ids=["usage vs threshold", "depth vs capacity", "allocated vs reserved", "used vs total"],
)
def test_comparisons_share_one_panel(title_word: str, together: set[str]) -> None:
    # A line is only read against its limit when both are on the same axes.
    [panel] = [p for p in graph_panels() if title_word in p["title"]]
    used = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
    assert together <= used


def test_dashboard_provider_loads_files_and_keeps_them_authoritative() -> None:
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "colorize.yml")
    [p] = provider["providers"]
    assert p["type"] == "file"
    assert p["allowUiUpdates"] is False
