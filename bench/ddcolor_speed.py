"""DDColor forward time on this machine per render size, with random weights (speed does not
depend on them): `python -m bench.ddcolor_speed --variants tiny,large --sizes 64,128,256,512`.

Prints the median of `--repeats` forward passes after one warm-up, fp32 and (where the CPU has
bfloat16) bf16 autocast, one image per pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from service.engines.ddcolor.network import DDColor


def timed(network: DDColor, size: int, repeats: int, dtype: torch.dtype | None) -> float:
    grey = torch.rand(1, 3, size, size)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            started = time.perf_counter()
            if dtype is None:
                network(grey)
            else:
                with torch.autocast("cpu", dtype=dtype):
                    network(grey)
            if i:  # the first pass warms up oneDNN's kernels
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", default="tiny,large")
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    for variant in args.variants.split(","):
        network = DDColor(variant).eval()  # type: ignore[arg-type]
        for size in (int(s) for s in args.sizes.split(",")):
            fp32 = timed(network, size, args.repeats, None)
            line = f"{variant} S={size}: fp32 {fp32:.2f} s"
            if args.bf16:
                bf16 = timed(network, size, args.repeats, torch.bfloat16)
                line += f", bf16 {bf16:.2f} s ({fp32 / bf16:.2f}x)"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
