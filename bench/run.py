"""The benchmark: our service against a naive server and the bare engine, under concurrent load.

Run: `python -m bench.run [--quick] [--out bench/results/<machine>] [--device auto|cpu|cuda]`.

It generates checkpoints into a temporary directory, starts our service (`colorize-service serve`)
and the naive baseline (bench/naive_server.py) as uvicorn processes on loopback, and drives both
with the same closed-loop load (bench/load.py) over concurrency levels, image sizes and engines.
The bare engine, called in this process one image at a time, is the second baseline. Then it
sweeps COLORIZE_BATCH_MAX_SIZE at high concurrency and COLORIZE_BATCH_MAX_WAIT_MS at
concurrency 1 (one server per setting). It writes results.json, results.md and plot.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import inputs, load, report
from bench.plan import (
    SWEEP_BATCH,
    SWEEP_WAIT_MS,
    Cell,
    Plan,
    Size,
    default_batching,
    full_plan,
    quick_plan,
)
from bench.servers import Server, make_weights, running, subset_weights
from service.device import resolve_device
from service.engines.base import ColorizeRequest, Engine
from service.engines.registry import create_engine

ROOT = Path(__file__).resolve().parents[1]


# -- the machine ---------------------------------------------------------------------------------


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = _lscpu()
    info: dict[str, Any] = {
        "cpu_model": cpu.get("Model name") or platform.processor(),
        "cpu_family_model": f"family {cpu.get('CPU family', '?')} model {cpu.get('Model', '?')}",
        "cores": len(os.sched_getaffinity(0)),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def machine_slug(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower().replace("nvidia", "").strip()
        return "cuda-" + "-".join(name.split())
    return f"{device.type}-{len(os.sched_getaffinity(0))}core"


# -- measuring -----------------------------------------------------------------------------------


def _metric_delta(
    before: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    after: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    model: str,
) -> float:
    key = (name, (("model", model),))
    return after.get(key, 0.0) - before.get(key, 0.0)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000.0 * seconds, 1)


def http_cell(server: Server, cell: Cell, max_seconds: float, **extra: Any) -> dict[str, Any]:
    """Drive `server` with `cell`'s load; throughput, latency, phases, memory, errors."""
    with_reference = cell.engine == "exemplar"
    payloads = inputs.payloads(cell.size, with_reference)
    before = server.metrics()
    # Reset first, then read: the high-water mark can then never be below the idle reading.
    peak_resettable = server.reset_peak()
    idle_rss = server.rss()
    outcome = load.drive(
        server.base, cell.engine, payloads, cell.concurrency, cell.requests, max_seconds
    )
    peak_rss = server.peak_rss() if peak_resettable else None
    after = server.metrics()
    row: dict[str, Any] = {
        "section": cell.section,
        "server": server.kind,
        "label": server.label,
        "engine": cell.engine,
        "size": cell.size,
        "concurrency": cell.concurrency,
        "planned": cell.requests,
        "requests": len(outcome.answers),
        "ok": len(outcome.ok),
        "wall_s": round(outcome.wall_s, 3),
        "images_per_s": round(outcome.throughput(), 4),
        "p50_ms": _ms(outcome.latency(50)),
        "p95_ms": _ms(outcome.latency(95)),
        "p99_ms": _ms(outcome.latency(99)),
        "decode_p50_ms": _ms(outcome.phase_median("decode")),
        "queue_p50_ms": _ms(outcome.phase_median("queue")),
        "compute_p50_ms": _ms(outcome.phase_median("compute")),
        "finish_p50_ms": _ms(outcome.phase_median("finish")),
        "encode_p50_ms": _ms(outcome.phase_median("encode")),
        "idle_rss_mb": round(idle_rss / 2**20, 1),
        "peak_rss_mb": None if peak_rss is None else round(peak_rss / 2**20, 1),
        "peak_rss_growth_mb": None if peak_rss is None else round((peak_rss - idle_rss) / 2**20, 1),
        "errors": outcome.errors(),
        **extra,
    }
    if server.kind == "ours":
        batches = _metric_delta(before, after, "colorize_batch_size_count", cell.engine)
        items = _metric_delta(before, after, "colorize_batch_size_sum", cell.engine)
        ratios = _metric_delta(
            before, after, "colorize_memory_peak_to_estimate_ratio_count", cell.engine
        )
        ratio_sum = _metric_delta(
            before, after, "colorize_memory_peak_to_estimate_ratio_sum", cell.engine
        )
        row["mean_batch"] = round(items / batches, 2) if batches else None
        row["peak_to_estimate_mean"] = round(ratio_sum / ratios, 3) if ratios else None
        # Threads busy per second of the cell, by stage: a device below 1 while the CPU stages
        # are busy means the device waited on them.
        for stage in ("prepare", "device", "finish"):
            key = ("colorize_stage_busy_seconds_total", (("stage", stage),))
            busy = after.get(key, 0.0) - before.get(key, 0.0)
            row[f"{stage}_busy"] = round(busy / outcome.wall_s, 3) if outcome.wall_s else None
    return row


def direct_cell(engine: Engine, size: Size, repeats: int) -> dict[str, Any]:
    """The bare engine in this process, one image at a time (decoded beforehand)."""
    payloads = inputs.payloads(size, with_reference=engine.name == "exemplar")
    requests = [ColorizeRequest(p.rgb(), reference=p.reference_rgb()) for p in payloads]
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        engine.run([requests[i % len(requests)]])
        times.append(time.perf_counter() - started)
    return {
        "section": "direct",
        "server": "direct",
        "label": "direct",
        "engine": engine.name,
        "size": size,
        "concurrency": 1,
        "planned": repeats,
        "requests": repeats,
        "ok": repeats,
        "wall_s": round(sum(times), 3),
        "images_per_s": round(repeats / sum(times), 4),
        "p50_ms": _ms(float(np.percentile(times, 50))),
        "p95_ms": _ms(float(np.percentile(times, 95))),
        "p99_ms": _ms(float(np.percentile(times, 99))),
        "errors": {},
    }


def warm(server: Server, engine: str, warmed: set[tuple[str, str]]) -> None:
    """One uncounted request, so one-off costs (kernel set-up, first allocations) are not timed."""
    if (server.label, engine) in warmed:
        return
    warmed.add((server.label, engine))
    load.drive(server.base, engine, inputs.payloads(256, engine == "exemplar"), 1, 1, 600.0)


# -- the run -------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _describe(row: Mapping[str, Any]) -> str:
    return (
        f"{row['label']:<16} {row['engine']:<10} size={row['size']!s:<6} c={row['concurrency']} "
        f"ok={row['ok']}/{row['requests']} {row['images_per_s']:.3f} img/s "
        f"p50={row['p50_ms']} ms p95={row['p95_ms']} ms errors={row['errors']}"
    )


Config = tuple[int | None, float | None]
"""(COLORIZE_BATCH_MAX_SIZE, COLORIZE_BATCH_MAX_WAIT_MS) of one of our servers; None: default."""


def _env(config: Config) -> dict[str, str]:
    batch, wait = config
    env = {}
    if batch is not None:
        env["COLORIZE_BATCH_MAX_SIZE"] = str(batch)
    if wait is not None:
        env["COLORIZE_BATCH_MAX_WAIT_MS"] = f"{wait:g}"
    return env


def _label(config: Config) -> str:
    batch, wait = config
    return f"ours-b{batch}-w{wait:g}"


def sweep_configs(plan: Plan, sections: set[str]) -> list[Config]:
    """The settings the sweeps need, in order, without repeats."""
    configs: list[Config] = []
    if "batch" in sections:
        configs += [(b, SWEEP_WAIT_MS) for b in plan.batch_sizes]
    if "wait" in sections:
        configs += [(SWEEP_BATCH, w) for w in plan.waits_ms]
    return list(dict.fromkeys(configs))


def run(plan: Plan, device_spec: str, sections: set[str], main_config: Config) -> dict[str, Any]:
    device = resolve_device(device_spec)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "plan": plan.name,
        "machine": machine(device),
        "ours": {"batch_max_size": main_config[0], "batch_max_wait_ms": main_config[1]},
        "service_defaults": dict(
            zip(("batch_max_size", "batch_max_wait_ms"), default_batching(), strict=True)
        ),
        "cells": [],
    }
    rows: list[dict[str, Any]] = result["cells"]
    tmp = Path(tempfile.mkdtemp(prefix="colorize-bench-"))
    try:
        _log(f"plan {plan.name} on {device}; generating checkpoints")
        all_weights = make_weights(tmp / "weights", plan.models)
        one_weights = subset_weights(all_weights, tmp / "weights-eccv16", ("eccv16",))
        warmed: set[tuple[str, str]] = set()
        main_specs = [
            ("ours", "ours", all_weights, _env(main_config)),
            ("naive", "naive", all_weights, {}),
        ]
        # Sweep servers load eccv16 only (less memory); one whose settings equal the main
        # server's is the main server.
        extra = [c for c in sweep_configs(plan, sections) if c != main_config]
        sweep_specs = [("ours", _label(c), one_weights, _env(c)) for c in extra]
        together = plan.name == "quick"  # start every server at once: less waiting, more memory
        first = main_specs + (sweep_specs if together else [])
        _log(f"starting {len(first)} servers")
        with running(first, device_spec) as servers:
            ours, naive = servers["ours"], servers["naive"]
            _baselines_and_load(plan, sections, device, all_weights, ours, naive, rows, warmed)
            if extra:
                _log(f"starting {0 if together else len(sweep_specs)} more servers for the sweeps")
            with running([] if together else sweep_specs, device_spec) as more:
                by_config = {c: {**servers, **more}[_label(c)] for c in extra}
                by_config[main_config] = ours
                _sweeps(plan, sections, by_config, naive, rows, warmed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["duration_s"] = round(time.perf_counter() - started, 1)
    result["comparisons"] = report.comparisons(rows)
    return result


def _baselines_and_load(
    plan: Plan,
    sections: set[str],
    device: torch.device,
    weights_dir: Path,
    ours: Server,
    naive: Server,
    rows: list[dict[str, Any]],
    warmed: set[tuple[str, str]],
) -> None:
    """Per (engine, size): the bare engine, then each load cell on ours and on naive."""
    engines: dict[str, Engine] = {}
    for engine_name, size in plan.direct_groups:
        group = [
            c
            for c in plan.cells
            if (c.engine, c.size) == (engine_name, size) and c.section in sections
        ]
        if not group:
            continue
        if engine_name not in engines:
            engines[engine_name] = create_engine(engine_name, device, weights_dir)
            engines[engine_name].load()
            if plan.warm_up:
                sample = inputs.square(256, engine_name == "exemplar")
                engines[engine_name].run(
                    [ColorizeRequest(sample.rgb(), reference=sample.reference_rgb())]
                )
        row = direct_cell(engines[engine_name], size, plan.direct_repeats.get(size, 1))
        rows.append(row)
        _log(_describe(row))
        for cell in group:
            # Ours then naive, back to back, so machine-load drift hits both alike.
            for server in (ours, naive):
                if plan.warm_up:
                    warm(server, cell.engine, warmed)
                row = http_cell(server, cell, plan.max_cell_seconds)
                rows.append(row)
                _log(_describe(row))


def _sweeps(
    plan: Plan,
    sections: set[str],
    servers: Mapping[Config, Server],
    naive: Server,
    rows: list[dict[str, Any]],
    warmed: set[tuple[str, str]],
) -> None:
    todo: list[tuple[Cell, Config]] = []
    if "batch" in sections:
        todo += [(plan.batch_cell, (b, SWEEP_WAIT_MS)) for b in plan.batch_sizes]
    if "wait" in sections:
        todo += [(plan.wait_cell, (SWEEP_BATCH, w)) for w in plan.waits_ms]
    for cell, config in todo:
        server = servers[config]
        if plan.warm_up:
            warm(server, cell.engine, warmed)
        row = http_cell(
            server,
            cell,
            plan.max_cell_seconds,
            batch_max_size=config[0],
            batch_max_wait_ms=config[1],
        )
        rows.append(row)
        _log(_describe(row))
    if "batch" in sections:
        # The naive server at the sweep's load: the batching curve's reference.
        if plan.warm_up:
            warm(naive, plan.batch_cell.engine, warmed)
        row = http_cell(naive, plan.batch_cell, plan.max_cell_seconds)
        rows.append(row)
        _log(_describe(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs, a handful of requests")
    parser.add_argument("--out", type=Path, help="output directory (default bench/results/<slug>)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--batch-max-size",
        type=int,
        help="COLORIZE_BATCH_MAX_SIZE of our main server (default: the service's default)",
    )
    parser.add_argument(
        "--batch-max-wait-ms",
        type=float,
        help="COLORIZE_BATCH_MAX_WAIT_MS of our main server (default: the service's default)",
    )
    parser.add_argument(
        "--sections",
        default="concurrency,size,engine,batch,wait",
        help="comma-separated subset of: concurrency,size,engine,batch,wait",
    )
    args = parser.parse_args(argv)
    plan = quick_plan() if args.quick else full_plan()
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    out = args.out or ROOT / "bench" / "results" / machine_slug(resolve_device(args.device))
    default_batch, default_wait = default_batching()
    main_config: Config = (
        args.batch_max_size if args.batch_max_size is not None else default_batch,
        args.batch_max_wait_ms if args.batch_max_wait_ms is not None else default_wait,
    )
    result = run(plan, args.device, sections, main_config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(report.markdown(result))
    report.plot(result, out / "plot.png")
    _log(f"done in {result['duration_s']} s; wrote {out}/results.json, results.md, plot.png")
    failures = sum(row["requests"] - row["ok"] for row in result["cells"])
    if failures:
        _log(f"{failures} request(s) failed; see the errors column")
    medians = [row["images_per_s"] for row in result["cells"] if row["server"] == "ours"]
    if medians:
        _log(f"median throughput of our cells: {statistics.median(medians):.3f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
