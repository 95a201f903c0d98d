"""Measure the default per-pixel memory model: peak RSS growth of the full-resolution colour path.

Run: `python bench/calibrate_memory.py` (CPU). Each size runs in a fresh subprocess so that memory
freed by earlier sizes and kept by the C allocator does not hide growth.
"""

from __future__ import annotations

import json
import subprocess
import sys

SIZES = (1024, 2048, 4096)

_CHILD = r"""
import json, sys
import numpy as np, torch
import torch.nn.functional as F
from service.imaging.lab import lab_to_rgb, rgb_to_lab
from service.memory import MemoryManager

side = int(sys.argv[1])
manager = MemoryManager(torch.device("cpu"))
rgb = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
small_ab = torch.zeros(1, 2, 256, 256)
# Warm up kernels and thread pools so their one-off allocations are not counted.
warm = rgb_to_lab(torch.rand(3, 64, 64)); lab_to_rgb(warm)
with torch.inference_mode(), manager.measure() as m:
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
    lightness = rgb_to_lab(x)[:1]
    ab = F.interpolate(small_ab, size=(side, side), mode="bilinear", align_corners=False)[0]
    out = lab_to_rgb(torch.cat((lightness, ab), 0))
    result = out.mul(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
print(json.dumps({"side": side, "peak_bytes": m.peak_bytes, "per_pixel": m.peak_bytes / side**2}))
"""


def main() -> None:
    rows = []
    for side in SIZES:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(side)], check=True, capture_output=True, text=True
        )
        rows.append(json.loads(out.stdout))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
