"""Count the floating-point work of one 256x256 forward pass of each network, and this CPU's rate.

Run: `python -m bench.flops [--json]`. Two independent counts that must agree: forward hooks on
every convolution (2 x multiply-accumulates, the usual convention) and PyTorch's own
`FlopCounterMode`. The matmul rate (4096x4096 float32) is the ceiling a convolution network can
approach on this machine, so images/s <= rate / FLOPs-per-image is the compute limit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from service.engines.networks import INPUT_SIZE, ECCV16Net, SIGGRAPH17Net

PUBLISHED_GFLOPS = {"eccv16": 84.0, "siggraph17": 150.0}
"""The rough figures quoted for the published networks (per 256x256 image)."""


def _inputs(model: str, batch: int = 1) -> tuple[torch.Tensor, ...]:
    size = (batch, 1, INPUT_SIZE, INPUT_SIZE)
    lightness = torch.full(size, 50.0)
    if model == "siggraph17":
        return lightness, torch.zeros(batch, 2, INPUT_SIZE, INPUT_SIZE), torch.zeros(size)
    return (lightness,)


def _network(model: str) -> nn.Module:
    # Random weights do not change the work; meta tensors would not run hooks with shapes on
    # every PyTorch version, so a real (untrained) network is built.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return (ECCV16Net() if model == "eccv16" else SIGGRAPH17Net()).eval()


def conv_flops(model: str) -> dict[str, float]:
    """2 x MACs of every Conv2d/ConvTranspose2d that runs in one forward pass, by kind."""
    network = _network(model)
    totals = {"conv": 0.0, "conv_transpose": 0.0}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.ConvTranspose2d):
            # Each input element is scattered into out_channels x kernel outputs.
            x = args[0]
            k = module.kernel_size[0] * module.kernel_size[1]
            macs = x.numel() * module.out_channels * k / module.groups
            totals["conv_transpose"] += 2.0 * macs
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs = out.numel() * (module.in_channels // module.groups) * k
            totals["conv"] += 2.0 * macs

    handles = [
        m.register_forward_hook(hook)
        for m in network.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
    try:
        with torch.inference_mode():
            network(*_inputs(model))
    finally:
        for handle in handles:
            handle.remove()
    return totals


def torch_counted_flops(model: str) -> float:
    """FLOPs of one forward pass as PyTorch's FlopCounterMode counts them (convs and matmuls)."""
    network = _network(model)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network(*_inputs(model))
    return float(counter.get_total_flops())


def matmul_gflops(n: int = 4096, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Median GFLOP/s of an n x n matmul on the CPU (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up: thread pool, packing buffers
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2.0 * n**3 / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


def report(matmul: bool = True) -> dict[str, Any]:
    """FLOPs per image for both networks and (optionally) the CPU's matmul rate."""
    result: dict[str, Any] = {"networks": {}}
    for model in ("eccv16", "siggraph17"):
        by_kind = conv_flops(model)
        hooked = sum(by_kind.values())
        counted = torch_counted_flops(model)
        result["networks"][model] = {
            "gflops_per_image": round(hooked / 1e9, 2),
            "gflops_by_kind": {k: round(v / 1e9, 2) for k, v in by_kind.items()},
            "gflops_torch_counter": round(counted / 1e9, 2),
            "gflops_published": PUBLISHED_GFLOPS[model],
        }
    if matmul:
        rate = matmul_gflops()
        result["matmul_gflops_fp32"] = round(rate, 1)
        result["threads"] = torch.get_num_threads()
        for row in result["networks"].values():
            row["images_per_s_limit"] = round(rate / row["gflops_per_image"], 3)
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| network | GFLOPs per 256x256 image | of which transposed convs | FlopCounterMode "
        "| published | compute limit (images/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, row in result["networks"].items():
        lines.append(
            f"| {model} | {row['gflops_per_image']} | {row['gflops_by_kind']['conv_transpose']} "
            f"| {row['gflops_torch_counter']} | ~{row['gflops_published']:g} "
            f"| {row.get('images_per_s_limit', '-')} |"
        )
    if "matmul_gflops_fp32" in result:
        lines += [
            "",
            f"torch.matmul 4096x4096 float32: {result['matmul_gflops_fp32']} GFLOP/s "
            f"(median of 5, {result['threads']} threads). Compute limit = that rate / FLOPs per "
            "image: the network alone, at the rate of a large matrix product.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--no-matmul", action="store_true", help="skip the matmul timing")
    parser.add_argument("--out", type=Path, help="directory for flops.json and flops.md")
    args = parser.parse_args()
    result = report(matmul=not args.no_matmul)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "flops.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "flops.md").write_text(markdown(result))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(markdown(result))


if __name__ == "__main__":
    main()
