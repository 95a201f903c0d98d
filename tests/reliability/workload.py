"""The mixed requests that load and soak send: sizes, engines and options drawn from a fixed
table, every answer classified and timed."""

from __future__ import annotations

import io
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from functools import cache

import httpx
import numpy as np
from PIL import Image

from tests.support.images import photo, png_bytes

SIZES = [(64, 48), (128, 128), (200, 150), (320, 240), (512, 384)]
"""(width, height) of the uploads, small to medium."""


@dataclass(frozen=True)
class Kind:
    """One kind of request: engine, size, options; `weight` is how often it is drawn."""

    name: str
    model: str
    size: tuple[int, int]
    weight: int = 1
    fmt: str = "png"
    raw: bool = False


@cache
def gray(size: tuple[int, int]) -> bytes:
    return png_bytes(np.asarray(Image.fromarray(photo("astronaut.png")).resize(size)))


@cache
def reference() -> bytes:
    return png_bytes(photo("coffee.png")[::4, ::4], mode="RGB")


def hints_for(size: tuple[int, int]) -> str:
    w, h = size
    return json.dumps(
        [
            {"x": w // 4, "y": h // 3, "color": "#c04020"},
            {"x": w - 1, "y": 0, "color": [20, 90, 200]},
        ]
    )


def send(client: httpx.Client, kind: Kind) -> httpx.Response:
    """POST /colorize for `kind`."""
    data: dict[str, str] = {"model": kind.model, "format": kind.fmt}
    if kind.model == "siggraph17":
        data["hints"] = hints_for(kind.size)
    if kind.raw:
        return client.post(
            "/colorize", params=data, content=gray(kind.size), headers={"content-type": "image/png"}
        )
    files = {"image": ("a.png", gray(kind.size), "image/png")}
    if kind.model == "exemplar":
        files["reference"] = ("r.png", reference(), "image/png")
    return client.post("/colorize", files=files, data=data)


def mixed_kinds(exemplar_weight: int = 1) -> list[Kind]:
    kinds = []
    for size in SIZES:
        kinds += [
            Kind(f"eccv16-{size[0]}", "eccv16", size, weight=4),
            Kind(f"eccv16-raw-jpeg-{size[0]}", "eccv16", size, weight=1, fmt="jpeg", raw=True),
            Kind(f"siggraph17-{size[0]}", "siggraph17", size, weight=2, fmt="webp"),
            Kind(f"exemplar-{size[0]}", "exemplar", size, weight=exemplar_weight),
        ]
    return kinds


def draw(rng: random.Random, kinds: list[Kind]) -> Kind:
    return rng.choices(kinds, weights=[k.weight for k in kinds])[0]


@dataclass
class Tally:
    """Answers by outcome, latencies, anything unexpected."""

    ok: int = 0
    busy: int = 0
    latencies: list[float] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.ok + self.busy + len(self.unexpected)

    def record(self, kind: Kind, started: float, r: httpx.Response | Exception) -> None:
        self.latencies.append(time.monotonic() - started)
        if isinstance(r, Exception):
            self.unexpected.append(f"{kind.name}: {type(r).__name__}: {r}")
            return
        if r.status_code == 200:
            problem = check_image(r, kind)
            if problem:
                self.unexpected.append(f"{kind.name}: {problem}")
            else:
                self.ok += 1
                self.by_kind[kind.model] = self.by_kind.get(kind.model, 0) + 1
        elif r.status_code == 503 and r.headers.get("retry-after", "").isdigit():
            if r.json().get("error") in ("queue_full", "memory_busy"):
                self.busy += 1
            else:
                self.unexpected.append(f"{kind.name}: 503 {r.text[:200]}")
        else:
            self.unexpected.append(f"{kind.name}: {r.status_code} {r.text[:200]}")

    def merge(self, other: Tally) -> None:
        self.ok += other.ok
        self.busy += other.busy
        self.latencies += other.latencies
        self.unexpected += other.unexpected
        for k, v in other.by_kind.items():
            self.by_kind[k] = self.by_kind.get(k, 0) + v

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        return (
            f"requests {self.total}, 200 {self.ok}, 503 {self.busy}, other {len(self.unexpected)}; "
            f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
        )


CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def check_image(r: httpx.Response, kind: Kind) -> str | None:
    if r.headers.get("content-type") != CONTENT_TYPES[kind.fmt]:
        return f"content-type {r.headers.get('content-type')}"
    with Image.open(io.BytesIO(r.content)) as im:
        if im.size != kind.size:
            return f"size {im.size} != {kind.size}"
    return None
