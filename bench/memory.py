"""Do the engines' memory estimates hold? Estimate against two measured peaks, per engine and size.

Run: `python -m bench.memory [--sizes 64,256,1024,2048,4096] [--engines ...] [--out DIR]`.

Each (engine, size) runs in a fresh process, so memory freed by earlier sizes and kept by the C
allocator cannot hide growth. In it: load the engine, one warm-up run at 64x64 (thread pools and
kernel set-up are one-off, not per job), then

- RSS: `MemoryManager.measure()` around one `run`, the peak resident-set growth the kernel saw
  (what the service's own `colorize_memory_peak_to_estimate_ratio` is made of on a CPU);
- tensors: the same `run` under devkit/tensor_memory.py's `LiveTensorBytes`, the largest
  total of live tensor storages, which is what `torch.cuda.max_memory_allocated` counts on a GPU
  (minus convolution workspaces). tests/bench/test_memory_estimates.py checks the real CUDA peak.

The estimate is `engine.estimate(request)`, what the worker reserves. A ratio estimate/peak
below 1 means the estimate did not hold. The exemplar engine gets a 512x512 colour reference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES = (64, 256, 1024, 2048, 4096)
ENGINES = ("eccv16", "siggraph17", "exemplar")
REFERENCE_SIDE = 512

_CHILD = r"""
import json, sys
from pathlib import Path
import torch
from bench import inputs
from service.engines.base import ColorizeRequest
from service.engines.registry import create_engine
from service.memory import MemoryManager
from devkit.tensor_memory import LiveTensorBytes

model, side, ref_side = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
weights_dir = Path(sys.argv[3])
device = torch.device("cpu")
engine = create_engine(model, device, weights_dir)
engine.load()
reference = inputs.square(ref_side, True).reference_rgb() if model == "exemplar" else None
warm = inputs.square(64).rgb()
engine.run([ColorizeRequest(warm, reference=reference)])
request = ColorizeRequest(inputs.square(side).rgb(), reference=reference)
estimate = engine.estimate(request)
manager = MemoryManager(device)
with manager.measure() as rss:
    engine.run([request])
with LiveTensorBytes() as tensors:
    engine.run([request])
print(json.dumps({"rss_peak": rss.peak_bytes, "tensor_peak": tensors.peak, "estimate": estimate}))
"""


def measure_one(
    model: str, side: int, weights_dir: Path, mmap_threshold: int | None = None
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if mmap_threshold is not None:
        # glibc: a fixed threshold (which also turns off its dynamic adjustment) serves every
        # allocation above it with its own mmap, returned to the kernel when freed.
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, model, str(side), str(weights_dir), str(REFERENCE_SIDE)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    estimate = figures["estimate"]
    return {
        "engine": model,
        "side": side,
        "malloc_mmap_threshold": mmap_threshold,
        "pixels": side * side,
        "estimate_mb": round(estimate / 1e6, 1),
        "rss_peak_mb": round(figures["rss_peak"] / 1e6, 1),
        "tensor_peak_mb": round(figures["tensor_peak"] / 1e6, 1),
        "estimate_over_rss": round(estimate / figures["rss_peak"], 3)
        if figures["rss_peak"]
        else None,
        "estimate_over_tensors": round(estimate / figures["tensor_peak"], 3)
        if figures["tensor_peak"]
        else None,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    threshold = rows[0]["malloc_mmap_threshold"] if rows else None
    allocator = (
        "glibc's default (dynamic) mmap threshold"
        if threshold is None
        else f"MALLOC_MMAP_THRESHOLD_={threshold}"
    )
    lines = [
        "Estimate (what the worker reserves) against the measured peak, one image per fresh "
        f"process on the CPU ({allocator}); exemplar with a {REFERENCE_SIDE}x{REFERENCE_SIDE} "
        "reference. A ratio under 1.00 means the estimate did not hold.",
        "",
        "| engine | size | estimate MB | RSS growth MB | est / RSS | live tensors MB "
        "| est / tensors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['side']}x{r['side']} | {r['estimate_mb']:.1f} "
            f"| {r['rss_peak_mb']:.1f} | {_f(r['estimate_over_rss'])} "
            f"| {r['tensor_peak_mb']:.1f} | {_f(r['estimate_over_tensors'])} |"
        )
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        help="set MALLOC_MMAP_THRESHOLD_ (bytes) in each measuring process",
    )
    parser.add_argument("--name", default="memory", help="file name stem of the outputs")
    parser.add_argument("--out", type=Path, help="directory for <name>.json and <name>.md")
    args = parser.parse_args()
    from bench.servers import make_weights

    rows = []
    with tempfile.TemporaryDirectory(prefix="colorize-memory-") as tmp:
        weights_dir = make_weights(Path(tmp), ("eccv16", "siggraph17"))
        for model in args.engines.split(","):
            for side in (int(s) for s in args.sizes.split(",")):
                row = measure_one(model, side, weights_dir, args.mmap_threshold)
                print(json.dumps(row), flush=True)
                rows.append(row)
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
        (args.out / f"{args.name}.md").write_text(table)


if __name__ == "__main__":
    main()
