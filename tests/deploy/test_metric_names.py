"""Every metric the dashboard, the alerts and the autoscaler ask for is one the service exports."""

from __future__ import annotations

import pytest

from tests.deploy.promql import metric_names, sample_names, selectable_names
from tests.support.deploy import ALERTS, alert_rules, dashboard_queries, k8s_object, load_yaml

# Series Prometheus itself adds to every scrape target.
SCRAPE_SERIES = {"up"}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("colorize_queue_depth", {"colorize_queue_depth"}),
        ('rate(colorize_jobs_total{outcome="done"}[5m])', {"colorize_jobs_total"}),
        (
            "histogram_quantile(0.95, sum by (le, model) "
            '(rate(colorize_request_duration_seconds_bucket{instance=~"$instance"}'
            "[$__rate_interval])))",
            {"colorize_request_duration_seconds_bucket"},
        ),
        ("a == 0 and b == 0", {"a", "b"}),
        ("max by (job, instance) (colorize_engine_ready) == 0", {"colorize_engine_ready"}),
        ('absent(up{job="colorize"})', {"up"}),
        ("x / on (instance) group_left (device) y", {"x", "y"}),
        ("x / ignoring (model) group_right y", {"x", "y"}),
        ("sum without (device) (x) offset 5m", {"x"}),
        ('x{model="not_a_metric", reason=~"a|b"}', {"x"}),
        ("x > bool 1e3", {"x"}),
        ("sum(rate(x_sum[1m])) / sum(rate(x_count[1m]))", {"x_sum", "x_count"}),
        ("max_over_time(x[10m:1m])", {"x"}),
        ("time() - x", {"x"}),
    ],
    ids=[
        "bare",
        "rate with matchers",
        "histogram quantile with grafana variables",
        "and",
        "aggregation label list",
        "absent",
        "group_left labels",
        "group_right",
        "without and offset",
        "label values are not names",
        "bool and exponent",
        "histogram mean",
        "subquery",
        "function without arguments",
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selectable_names_follow_the_family_types() -> None:
    text = "\n".join(
        [
            "# TYPE g gauge",
            "# TYPE c_total counter",
            "c_total 1.0",
            "# TYPE h histogram",
            'h_bucket{le="+Inf"} 1.0',
            "h_count 1.0",
            "h_sum 1.0",
        ]
    )
    assert selectable_names(text) == {
        "g": "gauge",
        "c_total": "counter",
        "h_bucket": "histogram",
        "h_count": "histogram",
        "h_sum": "histogram",
    }
    assert sample_names(text) == {"c_total", "h_bucket", "h_count", "h_sum"}


def _sources() -> list[tuple[str, str]]:
    """(where, PromQL) for every query we ship."""
    out = [(f"dashboard panel {title!r}", expr) for title, expr in dashboard_queries()]
    out += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    scaled = k8s_object("ScaledObject")
    out += [
        ("KEDA trigger", t["metadata"]["query"])
        for t in scaled["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]
    rule_doc = k8s_object("PrometheusRule")
    out += [
        (f"PrometheusRule {rule['alert']}", rule["expr"])
        for group in rule_doc["spec"]["groups"]
        for rule in group["rules"]
    ]
    return out


def test_every_exported_sample_belongs_to_a_typed_family(shared_exposition: str) -> None:
    # Guards the reader below: a sample outside every family would be invisible to it.
    assert sample_names(shared_exposition) - set(selectable_names(shared_exposition)) == set()


def test_the_store_adds_its_own_families(exposition: str, store_exposition: str) -> None:
    # Shared mode adds families to /metrics; none may collide with the app's own.
    store = selectable_names(store_exposition)
    assert store and all(name.startswith("colorize_") for name in store)
    assert not set(store) & set(selectable_names(exposition))


@pytest.mark.parametrize(("where", "expr"), _sources(), ids=[w for w, _ in _sources()])
def test_query_selects_only_exported_metrics(shared_exposition: str, where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    exported = selectable_names(shared_exposition)
    unknown = sorted(names - set(exported) - SCRAPE_SERIES)
    assert not unknown, f"{where} uses {unknown}, which /metrics does not export"


def _used(sources: list[tuple[str, str]]) -> set[str]:
    return set().union(*(metric_names(expr) for _, expr in sources))


# What issue 5 asks the dashboard to show, signal by signal.
DASHBOARD_SIGNALS = {
    "memory usage ratio vs threshold": {
        "colorize_memory_usage_ratio",
        "colorize_memory_threshold_ratio",
    },
    "device used/total": {
        "colorize_device_memory_used_bytes",
        "colorize_device_memory_total_bytes",
    },
    "allocator allocated/reserved": {
        "colorize_allocator_allocated_bytes",
        "colorize_allocator_reserved_bytes",
    },
    "admission budget/available/reserved": {
        "colorize_admission_budget_bytes",
        "colorize_admission_available_bytes",
        "colorize_admission_reserved_bytes",
    },
    "queue depth vs capacity": {"colorize_queue_depth", "colorize_queue_capacity"},
    "throughput by model and outcome": {"colorize_jobs_total"},
    "latency quantiles": {"colorize_request_duration_seconds_bucket"},
    "OOM events": {"colorize_oom_events_total"},
    "admission refusals by reason": {"colorize_admissions_refused_total"},
    "host budget limit/used/reserved/available": {
        "colorize_host_memory_limit_bytes",
        "colorize_host_memory_used_bytes",
        "colorize_host_memory_reserved_bytes",
        "colorize_host_memory_available_bytes",
    },
    "host memory by purpose and queued uploads": {
        "colorize_host_memory_held_bytes",
        "colorize_queued_upload_bytes",
    },
    "stage depth and busy time": {"colorize_stage_depth", "colorize_stage_busy_seconds_total"},
    # Issue 20: the shared job store.
    "shared queue jobs and bytes against their bounds": {
        "colorize_shared_queue_jobs",
        "colorize_shared_queue_limit_jobs",
        "colorize_shared_queue_bytes",
        "colorize_shared_queue_limit_bytes",
    },
    "consumer group lag, pending entries, stream length, consumers": {
        "colorize_shared_group_lag",
        "colorize_shared_pending_entries",
        "colorize_shared_stream_entries",
        "colorize_shared_consumers",
    },
    "claims of a dead replica's work, dead letters, refusals": {
        "colorize_shared_claims_total",
        "colorize_shared_dead_letters_total",
        "colorize_shared_queue_full_total",
    },
    "store latency": {"colorize_store_operation_duration_seconds_bucket"},
    "store errors and reachability": {"colorize_store_errors_total", "colorize_store_up"},
}


@pytest.mark.parametrize("signal", DASHBOARD_SIGNALS, ids=list(DASHBOARD_SIGNALS))
def test_dashboard_shows(signal: str) -> None:
    missing = DASHBOARD_SIGNALS[signal] - _used(dashboard_queries())
    assert not missing, f"no dashboard query uses {sorted(missing)}"


def test_latency_panel_has_p50_p95_p99_from_the_histogram() -> None:
    quantiles = {
        expr.split("(", 1)[1].split(",", 1)[0].strip()
        for _, expr in dashboard_queries()
        if "histogram_quantile" in expr and "colorize_request_duration_seconds_bucket" in expr
    }
    assert quantiles == {"0.5", "0.95", "0.99"}


ALERT_SIGNALS = {
    "ColorizeMemoryAboveThreshold": {
        "colorize_memory_usage_ratio",
        "colorize_memory_threshold_ratio",
    },
    "ColorizeOutOfMemory": {"colorize_oom_events_total"},
    "ColorizeHostMemoryAboveLimit": {
        "colorize_host_memory_used_bytes",
        "colorize_host_memory_limit_bytes",
    },
    "ColorizeQueueSaturated": {"colorize_queue_depth", "colorize_queue_capacity"},
    "ColorizeTargetDown": {"up"},
    "ColorizeWorkerDead": {"colorize_worker_alive", "colorize_draining"},
    "ColorizeDrainingTooLong": {"colorize_draining"},
    "ColorizeSharedStoreDown": {"colorize_store_up"},
    "ColorizeSharedStoreErrors": {"colorize_store_errors_total"},
    "ColorizeSharedBacklogGrowing": {"colorize_shared_group_lag"},
    "ColorizeSharedQueueFull": {"colorize_shared_queue_full_total"},
    "ColorizeSharedDeadLetters": {"colorize_shared_dead_letters_total"},
}


@pytest.mark.parametrize("alert", ALERT_SIGNALS, ids=list(ALERT_SIGNALS))
def test_alert_watches(alert: str) -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert alert in rules
    assert metric_names(rules[alert]["expr"]) == ALERT_SIGNALS[alert]


def test_prometheus_rule_for_kubernetes_is_alerts_yml() -> None:
    # The operator's copy of the rules must not drift from the file promtool tests.
    assert k8s_object("PrometheusRule")["spec"]["groups"] == load_yaml(ALERTS)["groups"]


# What issue 21 asks /metrics to count of videos (README, Metrics), by name and type.
VIDEO_METRICS = {
    "colorize_video_jobs_total": "counter",
    "colorize_video_frames_total": "counter",
    "colorize_video_frames_per_second_bucket": "histogram",
    "colorize_video_frames_per_second_count": "histogram",
    "colorize_video_frames_per_second_sum": "histogram",
    "colorize_video_jobs_running": "gauge",
    "colorize_video_queue_depth": "gauge",
    "colorize_video_queue_capacity": "gauge",
}


@pytest.mark.parametrize("name", VIDEO_METRICS, ids=list(VIDEO_METRICS))
def test_video_metrics_are_exported(exposition: str, name: str) -> None:
    assert selectable_names(exposition).get(name) == VIDEO_METRICS[name]
