"""What the load-time precision check decides here, and what it costs: speed first, then accuracy.

Run: `python -m bench.precision_check [--precision bf16] [--models eccv16,siggraph17]`. For each
network (generated weights, on the CPU or --device) it times `FastPath.prepare` as an engine's
load runs it and prints the piece timed, both times at the size that decided, the check's own
cost, the whole prepare and the reason. Run it again under `ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2` to see a CPU without native bf16 (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.fastpath import forward_of
from devkit.checkpoints import make_random_network
from service.engines.fast import PRECISIONS, FastPath, Precision


def check(model: str, device: torch.device, precision: Precision) -> dict[str, Any]:
    network = make_random_network(model).to(device).eval()
    started = time.perf_counter()
    acc = FastPath(precision=precision).prepare(network, device, forward_of(model))
    prepare_s = time.perf_counter() - started
    speed = acc.speed
    return {
        "model": model,
        "precision": acc.precision,
        "piece": speed.piece if speed else "-",
        "size": f"{speed.size}x{speed.size}" if speed else "-",
        "fp32_ms": f"{speed.fp32_s * 1e3:.2f}" if speed else "-",
        "reduced_ms": f"{speed.reduced_s * 1e3:.2f}" if speed else "-",
        "speedup": f"{speed.speedup:.2f}x" if speed else "-",
        "check_s": f"{speed.elapsed_s:.2f}" if speed else "-",
        "prepare_s": f"{prepare_s:.2f}",
        "reason": acc.reason,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="bf16", choices=PRECISIONS)
    parser.add_argument("--models", default="eccv16,siggraph17")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"{device}, torch {torch.__version__}, capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
        f"COLORIZE_PRECISION={args.precision}"
    )
    print()
    print(
        "| network | runs in | piece timed | size | fp32 ms | reduced ms | speed-up | check s "
        "| prepare s | reason |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for model in args.models.split(","):
        row = check(model, device, args.precision)
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
