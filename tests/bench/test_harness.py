"""The benchmark harness runs end to end on tiny inputs and writes well-formed results.

`python -m bench.run --quick` is the real command with a small plan: 64x64 uploads, one or two
clients, a handful of requests, every section (bare engine, our service, the naive server, the
batch-size and batching-window sweeps). What is checked is the shape of what it writes, never a
timing: this machine's speed is nobody's contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.load import parse_server_timing

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench") / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--device", "cpu", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, proc.stdout


@pytest.fixture(scope="module")
def result(quick_run: tuple[Path, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((quick_run[0] / "results.json").read_text())
    return data


def test_the_run_writes_json_markdown_and_a_plot(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    assert sorted(p.name for p in out.iterdir()) == ["plot.png", "results.json", "results.md"]
    assert f"wrote {out}" in stdout
    png = (out / "plot.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(out / "plot.png") as im:
        assert im.size == (1100, 800)


def test_the_machine_and_settings_are_named(result: dict[str, Any]) -> None:
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["device"] == "cpu"
    assert machine["torch"] and machine["cpu_model"] and machine["date"]
    assert result["plan"] == "quick"
    assert set(result["ours"]) == {"batch_max_size", "batch_max_wait_ms"}
    assert result["duration_s"] > 0


@pytest.mark.parametrize(
    ("section", "servers"),
    [
        ("direct", {"direct"}),
        ("concurrency", {"ours", "naive"}),
        ("engine", {"ours", "naive"}),
        ("batch", {"ours", "naive"}),
        ("wait", {"ours"}),
    ],
    ids=["bare-engine", "concurrency", "engines", "batch-size-sweep", "batch-wait-sweep"],
)
def test_every_section_measured_every_server(
    result: dict[str, Any], section: str, servers: set[str]
) -> None:
    rows = [r for r in result["cells"] if r["section"] == section]
    assert {r["server"] for r in rows} == servers
    for row in rows:
        assert row["ok"] == row["requests"] >= 1, row
        assert row["errors"] == {}, row
        assert row["images_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]


def test_our_cells_carry_server_timing_memory_and_batches(result: dict[str, Any]) -> None:
    ours = [r for r in result["cells"] if r["server"] == "ours"]
    assert ours
    for row in ours:
        assert row["queue_p50_ms"] is not None and row["queue_p50_ms"] >= 0
        assert row["compute_p50_ms"] is not None and row["compute_p50_ms"] > 0
        assert row["mean_batch"] is not None and row["mean_batch"] >= 1
        assert row["peak_to_estimate_mean"] is not None and row["peak_to_estimate_mean"] >= 0
        assert row["peak_rss_mb"] is not None and row["peak_rss_mb"] >= row["idle_rss_mb"] > 0
    naive = [r for r in result["cells"] if r["server"] == "naive"]
    assert naive and all("mean_batch" not in r and r["queue_p50_ms"] is None for r in naive)


def test_the_sweeps_cover_their_settings(result: dict[str, Any]) -> None:
    batch = [r for r in result["cells"] if r["section"] == "batch" and r["server"] == "ours"]
    wait = [r for r in result["cells"] if r["section"] == "wait"]
    assert [r["batch_max_size"] for r in batch] == [1, 8]
    assert [r["batch_max_wait_ms"] for r in wait] == [0.0, 5.0]
    assert all(r["concurrency"] == 1 for r in wait)


def test_comparisons_pair_ours_with_both_baselines(result: dict[str, Any]) -> None:
    pairs = {(c["engine"], c["size"], c["concurrency"]) for c in result["comparisons"]}
    assert pairs == {("eccv16", 64, 2), ("exemplar", 64, 1)}
    for c in result["comparisons"]:
        assert c["throughput_vs_naive"] > 0 and c["throughput_vs_direct"] > 0
        assert c["p95_vs_naive"] > 0


def test_the_markdown_has_each_table(quick_run: tuple[Path, str], result: dict[str, Any]) -> None:
    text = (quick_run[0] / "results.md").read_text()
    for heading in (
        "## Ours against the naive server and the bare engine",
        "## COLORIZE_BATCH_MAX_SIZE",
        "## COLORIZE_BATCH_MAX_WAIT_MS",
        "## The bare engine",
    ):
        assert heading in text
    assert result["machine"]["torch"] in text
    assert text.count("| eccv16 | 64 | 2 |") == 1


@pytest.mark.parametrize(
    ("header", "phases"),
    [
        (
            "decode;dur=1.5, queue;dur=20.0, compute;dur=400.0",
            {"decode": 0.0015, "queue": 0.02, "compute": 0.4},
        ),
        (None, {}),
        ("", {}),
        ("queue;dur=abc, encode;desc=x;dur=2", {"encode": 0.002}),
    ],
    ids=["three-phases", "absent", "empty", "bad-value-skipped"],
)
def test_server_timing_is_parsed_into_seconds(header: str | None, phases: dict[str, float]) -> None:
    assert parse_server_timing(header) == pytest.approx(phases)
