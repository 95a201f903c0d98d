"""Turn a run's cells into comparisons, a Markdown report and a plot (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def _find(rows: Sequence[Row], **match: Any) -> Row | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def comparisons(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Ours against the naive server (same cell) and the bare engine (same engine and size)."""
    out = []
    for ours in rows:
        if ours["server"] != "ours" or ours["section"] not in ("concurrency", "size", "engine"):
            continue
        key = {k: ours[k] for k in ("section", "engine", "size", "concurrency")}
        naive = _find(rows, server="naive", **key)
        direct = _find(rows, server="direct", engine=ours["engine"], size=ours["size"])
        out.append(
            {
                **key,
                "ours_images_per_s": ours["images_per_s"],
                "naive_images_per_s": naive and naive["images_per_s"],
                "direct_images_per_s": direct and direct["images_per_s"],
                "throughput_vs_naive": _ratio(
                    ours["images_per_s"], naive and naive["images_per_s"]
                ),
                "throughput_vs_direct": _ratio(
                    ours["images_per_s"], direct and direct["images_per_s"]
                ),
                "ours_p50_ms": ours["p50_ms"],
                "ours_p95_ms": ours["p95_ms"],
                "naive_p50_ms": naive and naive["p50_ms"],
                "naive_p95_ms": naive and naive["p95_ms"],
                "p95_vs_naive": _ratio(ours["p95_ms"], naive and naive["p95_ms"]),
                "ours_peak_rss_growth_mb": ours.get("peak_rss_growth_mb"),
                "naive_peak_rss_growth_mb": naive and naive.get("peak_rss_growth_mb"),
            }
        )
    return out


# -- Markdown ------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text
    return str(value)


def _n(row: Row) -> str:
    """Successful requests, and the plan's count when the cell's time limit cut it short."""
    if not row:
        return "-"
    ok, planned = row.get("ok"), row.get("planned")
    return f"{ok}" if planned is None or row.get("requests") == planned else f"{ok} of {planned}"


def _setting(value: Any) -> str:
    if value is None:
        return "default"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _errors(*rows: Row | None) -> str:
    merged: dict[str, int] = {}
    for row in rows:
        for status, count in (row or {}).get("errors", {}).items():
            merged[status] = merged.get(status, 0) + count
    return ", ".join(f"{k}: {v}" for k, v in merged.items()) or "none"


def markdown(result: Mapping[str, Any]) -> str:
    m = result["machine"]
    rows: list[Row] = result["cells"]
    ours_cfg, defaults = result["ours"], result["service_defaults"]
    lines = [
        f"# Benchmark: {result['plan']} plan",
        "",
        f"- Machine: {m['cpu_model']} ({m['cpu_family_model']}), {m['cores']} cores"
        + (f", {m['hypervisor']} guest" if m.get("hypervisor") else "")
        + f", {m['memory_gib']} GiB; device `{m['device']}`"
        + (f" ({m['gpu']})" if m.get("gpu") else ""),
        f"- torch {m['torch']} ({m['torch_threads']} threads), Python {m['python']}, "
        f"commit {m.get('commit') or '?'}, {m['date']}; "
        f"load average at start {m['load_average_at_start']}",
        f"- Our server: COLORIZE_BATCH_MAX_SIZE={_setting(ours_cfg['batch_max_size'])}, "
        f"COLORIZE_BATCH_MAX_WAIT_MS={_setting(ours_cfg['batch_max_wait_ms'])} (the service's "
        f"defaults in this checkout: {_setting(defaults['batch_max_size'])} / "
        f"{_setting(defaults['batch_max_wait_ms'])}); run took {result['duration_s']:.0f} s",
        "",
        "## Ours against the naive server and the bare engine",
        "",
        "images/s over the cell's wall time; latency in ms from upload to full answer; ratios "
        "are ours / baseline (throughput: higher is better; p95: lower is better). Queue and "
        "compute are medians from our Server-Timing header (compute = the whole batch's forward "
        "pass; on a CPU device the colour join is the finish stage). Stages busy: threads busy "
        "per second of the cell in prepare / device / finish (device near 1: the device is the "
        "limit). Peak RSS growth is the server process's high-water mark above "
        "its idle RSS during the cell; peak/estimate is our MemoryManager's measured peak over "
        "the reserved estimate (mean per batch, from /metrics).",
        "",
        "| engine | size | c | n | ours img/s | naive img/s | direct img/s | x naive | x direct "
        "| ours p50 / p95 | naive p50 / p95 | p95 x naive | queue / compute / finish p50 "
        "| stages busy | batch | RSS growth ours / naive MB | peak/est | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in result["comparisons"]:
        key = {k: c[k] for k in ("section", "engine", "size", "concurrency")}
        ours = _find(rows, server="ours", **key) or {}
        naive = _find(rows, server="naive", **key)
        lines.append(
            f"| {c['engine']} | {c['size']} | {c['concurrency']} | {_n(ours)} "
            f"| {_f(c['ours_images_per_s'], 3)} | {_f(c['naive_images_per_s'], 3)} "
            f"| {_f(c['direct_images_per_s'], 3)} | {_f(c['throughput_vs_naive'])} "
            f"| {_f(c['throughput_vs_direct'])} "
            f"| {_f(c['ours_p50_ms'], 0)} / {_f(c['ours_p95_ms'], 0)} "
            f"| {_f(c['naive_p50_ms'], 0)} / {_f(c['naive_p95_ms'], 0)} "
            f"| {_f(c['p95_vs_naive'])} "
            f"| {_f(ours.get('queue_p50_ms'), 0)} / {_f(ours.get('compute_p50_ms'), 0)} "
            f"/ {_f(ours.get('finish_p50_ms'), 0)} "
            f"| {_f(ours.get('prepare_busy'))} / {_f(ours.get('device_busy'))} "
            f"/ {_f(ours.get('finish_busy'))} "
            f"| {_f(ours.get('mean_batch'))} "
            f"| {_f(c['ours_peak_rss_growth_mb'], 0)} / {_f(c['naive_peak_rss_growth_mb'], 0)} "
            f"| {_f(ours.get('peak_to_estimate_mean'))} | {_errors(ours, naive)} |"
        )
    batch = [r for r in rows if r["section"] == "batch" and r["server"] == "ours"]
    if batch:
        base = batch[0]
        naive = _find(rows, section="batch", server="naive")
        cell = (
            f"{base['engine']} at {base['size']}x{base['size']}, concurrency {base['concurrency']}"
        )
        lines += [
            "",
            f"## COLORIZE_BATCH_MAX_SIZE ({cell})",
            "",
            "| batch max | img/s | x batch 1 | p50 ms | p95 ms | mean batch | compute p50 ms "
            "| RSS growth MB | errors |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in batch:
            lines.append(
                f"| {r['batch_max_size']} | {_f(r['images_per_s'], 3)} "
                f"| {_f(_ratio(r['images_per_s'], base['images_per_s']))} "
                f"| {_f(r['p50_ms'], 0)} | {_f(r['p95_ms'], 0)} | {_f(r.get('mean_batch'))} "
                f"| {_f(r.get('compute_p50_ms'), 0)} | {_f(r.get('peak_rss_growth_mb'), 0)} "
                f"| {_errors(r)} |"
            )
        if naive:
            lines.append(
                f"| naive | {_f(naive['images_per_s'], 3)} "
                f"| {_f(_ratio(naive['images_per_s'], base['images_per_s']))} "
                f"| {_f(naive['p50_ms'], 0)} | {_f(naive['p95_ms'], 0)} | - | - "
                f"| {_f(naive.get('peak_rss_growth_mb'), 0)} | {_errors(naive)} |"
            )
    wait = [r for r in rows if r["section"] == "wait"]
    if wait:
        cell = f"{wait[0]['engine']} at {wait[0]['size']}x{wait[0]['size']}, concurrency 1"
        lines += [
            "",
            f"## COLORIZE_BATCH_MAX_WAIT_MS ({cell})",
            "",
            "At concurrency 1 the queue is always empty when the worker takes a job, so the worker "
            "waits the whole window for a second job that never comes: the queue time is the "
            "latency this setting costs a lone request.",
            "",
            "| wait ms | queue p50 ms | p50 ms | p95 ms | img/s | errors |",
            "| ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in wait:
            lines.append(
                f"| {r['batch_max_wait_ms']:g} | {_f(r.get('queue_p50_ms'), 1)} "
                f"| {_f(r['p50_ms'], 0)} | {_f(r['p95_ms'], 0)} | {_f(r['images_per_s'], 3)} "
                f"| {_errors(r)} |"
            )
    direct = [r for r in rows if r["server"] == "direct"]
    if direct:
        lines += [
            "",
            "## The bare engine (in-process, one image at a time)",
            "",
            "| engine | size | n | img/s | p50 ms | p95 ms |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in direct:
            lines.append(
                f"| {r['engine']} | {r['size']} | {r['requests']} | {_f(r['images_per_s'], 3)} "
                f"| {_f(r['p50_ms'], 0)} | {_f(r['p95_ms'], 0)} |"
            )
    return "\n".join(lines) + "\n"


# -- the plot ------------------------------------------------------------------------------------


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Throughput and p95 against concurrency and against batch size, ours vs both baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[Row] = result["cells"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    conc = [r for r in rows if r["section"] == "concurrency"]
    batch = [r for r in rows if r["section"] == "batch"]
    styles = {"ours": ("C0", "o", "ours"), "naive": ("C3", "s", "naive server")}

    def direct_for(cells: Sequence[Row]) -> Row | None:
        if not cells:
            return None
        return _find(rows, server="direct", engine=cells[0]["engine"], size=cells[0]["size"])

    for column, (cells, x_key, x_label, what) in enumerate(
        (
            (conc, "concurrency", "concurrent clients", "clients"),
            (batch, "batch_max_size", "COLORIZE_BATCH_MAX_SIZE", "batch limit"),
        )
    ):
        ax_tp, ax_lat = axes[0][column], axes[1][column]
        direct = direct_for(cells)
        for kind, (colour, marker, label) in styles.items():
            mine = [r for r in cells if r["server"] == kind]
            if kind == "naive" and x_key == "batch_max_size":
                # The naive server has no batching: one point at the sweep's load, drawn flat.
                if mine and batch:
                    xs = sorted({r["batch_max_size"] for r in batch if r["server"] == "ours"})
                    ax_tp.plot(
                        xs,
                        [mine[0]["images_per_s"]] * len(xs),
                        "--",
                        color=colour,
                        label=f"{label} (c={mine[0]['concurrency']})",
                    )
                    ax_lat.plot(
                        xs,
                        [mine[0]["p95_ms"]] * len(xs),
                        "--",
                        color=colour,
                        label=f"{label} (c={mine[0]['concurrency']})",
                    )
                continue
            mine = sorted((r for r in mine if r.get(x_key) is not None), key=lambda r: r[x_key])
            if not mine:
                continue
            xs = [r[x_key] for r in mine]
            ax_tp.plot(
                xs, [r["images_per_s"] for r in mine], marker=marker, color=colour, label=label
            )
            ax_lat.plot(xs, [r["p95_ms"] for r in mine], marker=marker, color=colour, label=label)
        if direct is not None:
            ax_tp.axhline(
                direct["images_per_s"],
                color="C2",
                linestyle=":",
                label="bare engine, one at a time",
            )
            ax_lat.axhline(
                direct["p95_ms"], color="C2", linestyle=":", label="bare engine, one at a time"
            )
        if cells:
            where = f"{cells[0]['engine']}, {cells[0]['size']} px"
            if x_key != "concurrency":
                where += f", {cells[0]['concurrency']} clients"
        else:
            where = "no data"
        ax_tp.set_title(f"throughput vs {what} ({where})", fontsize=10)
        ax_lat.set_title(f"p95 latency vs {what} ({where})", fontsize=10)
        ax_tp.set_ylabel("images/s")
        ax_lat.set_ylabel("p95 latency (ms)")
        xs = sorted({r[x_key] for r in cells if r.get(x_key) is not None})
        for ax in (ax_tp, ax_lat):
            ax.set_xlabel(x_label)
            ax.set_xscale("log", base=2)
            if xs:
                ax.set_xticks(xs, [str(x) for x in xs])
                ax.minorticks_off()
            ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.15)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="lower right" if ax is ax_tp else "upper left")
    m = result["machine"]
    fig.suptitle(
        f"colorize-service on {m['device']}: {m['cpu_model']}, {m['cores']} cores, "
        f"torch {m['torch']}, {m['date'][:10]}"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    """Re-render results.md and plot.png from a results directory's results.json."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    result = json.loads((args.directory / "results.json").read_text())
    (args.directory / "results.md").write_text(markdown(result))
    plot(result, args.directory / "plot.png")


if __name__ == "__main__":
    main()
