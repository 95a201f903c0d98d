"""Does a shared forward pass pay? Per-image time of the bare engine at batch sizes 1, 2, 4, 8.

Run: `python -m bench.batching [--device cpu] [--repeats 3] [--size 256] [--out DIR]`. This is
the compute side of COLORIZE_BATCH_MAX_SIZE with no HTTP, queue or encoding in the way: each
round runs every batch size once (interleaved, so drift in machine load hits all alike), and the
figure is the median per-image time over rounds. bench/run.py measures the same through the
service under concurrent load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import inputs
from bench.servers import make_weights
from service.device import resolve_device
from service.engines.base import ColorizeRequest
from service.engines.registry import create_engine

BATCH_SIZES = (1, 2, 4, 8)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model: str, device: torch.device, weights_dir: Path, size: int, repeats: int
) -> dict[str, Any]:
    engine = create_engine(model, device, weights_dir)
    engine.load()
    image = inputs.square(size).rgb()
    request = ColorizeRequest(image)
    engine.run([request] * max(BATCH_SIZES))  # warm-up at the largest batch, then each size
    for b in BATCH_SIZES:
        engine.run([request] * b)
    per_image: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    cpu_per_image: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    for _ in range(repeats):
        for b in BATCH_SIZES:
            _sync(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            engine.run([request] * b)
            _sync(device)
            per_image[b].append((time.perf_counter() - started) / b)
            cpu_per_image[b].append((time.process_time() - cpu_started) / b)
    base = statistics.median(per_image[1])
    cpu_base = statistics.median(cpu_per_image[1])
    return {
        str(b): {
            "per_image_s": round(statistics.median(times), 4),
            "images_per_s": round(1.0 / statistics.median(times), 3),
            "gain_vs_batch_1": round(base / statistics.median(times), 3),
            "cpu_s_per_image": round(statistics.median(cpu_per_image[b]), 4),
            "cpu_gain_vs_batch_1": round(cpu_base / statistics.median(cpu_per_image[b]), 3),
            "rounds_s": [round(t, 4) for t in times],
        }
        for b, times in per_image.items()
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Bare engine, {result['size']}x{result['size']} input, {result['device']} "
        f"({result['threads']} threads), median of {result['repeats']} interleaved rounds. "
        "CPU s is the process's CPU time per image: on a shared machine it moves less with other "
        "tenants' load than the wall time does.",
        "",
        "| engine | batch | s per image | images/s | gain vs batch 1 | CPU s per image "
        "| CPU-time gain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, rows in result["engines"].items():
        for b, row in rows.items():
            lines.append(
                f"| {model} | {b} | {row['per_image_s']:.3f} | {row['images_per_s']:.3f} "
                f"| {row['gain_vs_batch_1']:.2f}x | {row['cpu_s_per_image']:.3f} "
                f"| {row['cpu_gain_vs_batch_1']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", default="eccv16,siggraph17")
    parser.add_argument("--out", type=Path, help="directory for batching.json and batching.md")
    args = parser.parse_args()
    device = resolve_device(args.device)
    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="colorize-batching-") as tmp:
        weights_dir = make_weights(Path(tmp), models)
        result: dict[str, Any] = {
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "size": args.size,
            "repeats": args.repeats,
            "engines": {
                m: measure(m, device, weights_dir, args.size, args.repeats) for m in models
            },
        }
    table = markdown(result)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "batching.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "batching.md").write_text(table)


if __name__ == "__main__":
    main()
