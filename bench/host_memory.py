"""`python -m bench.host_memory`: host bytes per pixel of decoding and encoding, by image kind.

Each case runs in a fresh process (so freed heap from an earlier case cannot hide a peak) and
reports the growth of the kernel's RSS high-water mark (VmHWM) over the baseline taken just
before the work, divided by the image's pixels. These figures size the prepare and finish
stages' host reservations (service/worker/stages.py).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
from PIL import Image

SIDE = (4000, 3000)
"""12 megapixels: large enough that fixed costs vanish in the per-pixel figure."""


def _noise(mode: str, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    w, h = size
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return _noise("L", size).convert("P")
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _file(mode: str, fmt: str, rotate: bool = False) -> bytes:
    im = _noise(mode, SIDE)
    buf = io.BytesIO()
    if rotate:
        exif = Image.Exif()
        exif[0x0112] = 6
        im.save(buf, format=fmt, exif=exif.tobytes(), quality=90)
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


DECODE_CASES: dict[str, Callable[[], bytes]] = {
    "RGB JPEG": lambda: _file("RGB", "JPEG"),
    "RGB PNG": lambda: _file("RGB", "PNG"),
    "grey PNG": lambda: _file("L", "PNG"),
    "palette PNG": lambda: _file("P", "PNG"),
    "RGBA PNG": lambda: _file("RGBA", "PNG"),
    "16-bit grey PNG": lambda: _file("I;16", "PNG"),
    "EXIF-rotated JPEG": lambda: _file("RGB", "JPEG", rotate=True),
}
ENCODE_CASES = ("png", "jpeg", "webp")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _measure_one(kind: str, case: str) -> float:
    """Bytes per pixel of one case, in this process."""
    from service.imaging.decode import decode_image
    from service.imaging.encode import encode_image

    pixels = SIDE[0] * SIDE[1]
    if kind == "decode":
        data = DECODE_CASES[case]()
        _reset_hwm()
        before = _hwm()
        image = decode_image(data, allowed_formats=("JPEG", "PNG"), max_pixels=10**9)
        peak = _hwm() - before
        del image
    else:
        rgb = np.asarray(_noise("RGB", SIDE))
        _reset_hwm()
        before = _hwm()
        encoded = encode_image(rgb, case, None)
        peak = _hwm() - before
        del encoded
    return peak / pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.stdout.write(json.dumps(_measure_one(*args.one)) + "\n")
        return
    rows = [("decode", c) for c in DECODE_CASES] + [("encode", c) for c in ENCODE_CASES]
    sys.stdout.write(f"| stage | case | bytes/pixel ({SIDE[0]}x{SIDE[1]}) |\n| --- | --- | --- |\n")
    for kind, case in rows:
        out = subprocess.run(
            [sys.executable, "-m", "bench.host_memory", "--one", kind, case],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sys.stdout.write(f"| {kind} | {case} | {json.loads(out):.1f} |\n")


if __name__ == "__main__":
    main()
