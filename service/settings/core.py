"""The core settings: device, weights, engines, memory, the pipeline, uploads and results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_cache_dir
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode
from typing_extensions import Self

from service.engines.catalog import ENGINE_NAMES

RENDER_SIZE_MULTIPLE = 32
"""DDColor's encoder stride: render sizes are multiples of it."""
MIN_RENDER_SIZE = 64
OUTPUT_FORMATS = ("png", "jpeg", "webp")
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
WEIGHTS_URL_SCHEMES = ("http://", "https://", "file://")


def default_weights_dir() -> Path:
    """`$XDG_CACHE_HOME/colorize-service` (or the platform's cache dir)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "colorize-service"
    return Path(user_cache_dir("colorize-service"))


class CoreSettings(BaseSettings):
    """Device, weights, engines, memory, the staged pipeline, uploads, results and the key."""

    device: str = "auto"
    """auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."""
    weights_dir: Path = Field(default_factory=default_weights_dir)
    """Directory holding checkpoints under their official file names."""
    weights_base_url: str | None = None
    """A mirror holding every checkpoint under one base URL (`<base>/<file name>`); unset, each
    file comes from its official source (richzhang's bucket, DDColor's Hugging Face repository)."""
    fetch_missing: bool = True
    """At start-up, download the default model's checkpoint if it is missing (verified); turn
    off for air-gapped deployments, where `fetch-weights` fills the weights directory instead."""
    fetch_missing_timeout_s: float = Field(default=300.0, gt=0.0)
    """How long that start-up download may take in all; past it the service starts without the
    model, and the part downloaded so far is resumed by the next start or `fetch-weights`."""
    default_model: str = "eccv16"
    """The engine a request names none gets (any name in service/engines/catalog.py)."""
    ddcolor_render_size: int = 256
    """Side of the square the DDColor engines render at when a request names none (a multiple
    of 32 from 64 to COLORIZE_MAX_RENDER_SIZE). 256 is the size the models were trained at;
    upstream's demo uses 512, which costs about 4x the time and memory (docs/performance.md)."""
    max_render_size: int = 1024
    """The largest render size a request may ask for (a multiple of 32, at least 64)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    memory_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    """Share of device capacity that jobs may use; above it GC runs after a job."""
    clear_cache: Literal["always", "threshold", "never"] = "always"
    """When the worker empties the allocator cache after a job (see README, Memory policy)."""
    clear_cache_idle_s: float = Field(default=5.0, ge=0.0)
    """On a CPU, after a job that leaves the worker idle, how long the freed heap stays for the
    next job before it is cleared (`always`); 0 clears it after every job. Admission clears it
    at once whenever it needs the room (service/memory/idle_clear.py)."""
    malloc_arenas: int = Field(default=1, ge=0, le=1024)
    """glibc malloc arenas the threads share (0: glibc's default, 8 per core). With one, a job's
    large buffers come back from the heap on the next job whichever stage thread freed them,
    instead of being mapped and faulted in again (service/memory/heap.py)."""
    malloc_mmap_threshold_bytes: int = Field(default=256 * 1024 * 1024, ge=0, le=1 << 30)
    """Blocks at least this large are mapped on their own and unmapped when freed; smaller ones
    stay in the heap for the next job until the cache is cleared. 0: glibc's dynamic threshold
    (at most 32 MiB, so a 2048 px job's buffers were mapped afresh every time)."""
    admission_wait_s: float = Field(default=10.0, ge=0.0)
    """How long a job waits for its memory reservation before the request gets 503."""
    host_memory_bytes: int | None = Field(default=None, ge=64 * 1024 * 1024)
    """Host RAM the service may count on; unset: the cgroup limit, else physical RAM. Uploads,
    decoded pixels, working buffers and kept results are admitted against threshold x this."""
    device_workers: Literal["auto"] | Annotated[int, Field(ge=1, le=16)] = "auto"
    """Threads that run forward passes; `auto`: 1 on a GPU or MPS (one thread owns the device),
    2 on a CPU (two forward passes fill each other's serial stretches; docs/performance.md)."""
    prepare_workers: int = Field(default=2, ge=1, le=64)
    """Threads that decode and prepare jobs shortly before the device needs them."""
    finish_workers: int = Field(default=2, ge=1, le=64)
    """Threads that finish jobs after the device (colour join on CPU devices, encoding)."""
    lookahead: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    """Jobs decoded ahead of the device; `auto`: the batch size plus the prepare threads."""

    queue_size: int = Field(default=32, ge=1)
    """Jobs waiting for the worker; one more gets 503 with Retry-After."""
    job_timeout_s: float = Field(default=120.0, gt=0.0)
    """Queue wait plus compute; past it the request gets 504."""
    batch_max_size: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    """Jobs of one fixed-input engine that share a forward pass; `auto`: 8 on CUDA, else 1.

    Measured on a 2-core CPU (docs/performance.md): batches gain nothing there (0.89-1.01x
    images/s in-process, 0.90-0.94x through HTTP at 8 clients) and hold every job of a batch
    until the last is done, so the CPU default is 1. GPUs are where batching pays (not measured
    yet: `python -m bench.run --device cuda` does)."""
    batch_max_wait_ms: float = Field(default=5.0, ge=0.0)
    """How long the worker waits for a batch to fill once the queue runs dry (a lone request
    pays all of it: measured +5.2 ms queue time at 5, +20.3 ms at 20)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Network precision: fp32, or autocast to bf16/fp16 where the device supports it and the
    outputs stay within tolerance of fp32 (checked at load; see service/engines/fast.py)."""
    channels_last: bool = False
    """Run the networks' convolutions in NHWC memory format (CPU forward: 1.02x eccv16, 1.12x
    siggraph17; outputs within one 8-bit level)."""
    shutdown_grace_s: float = Field(default=20.0, ge=0.0)
    """On SIGTERM, how long the running job may take before the process exits."""

    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    """Request body limit, enforced while streaming."""
    # Pillow refuses anything above 2 x its own bomb limit (178,956,970 px) before we could.
    max_pixels: int = Field(default=40_000_000, ge=1, le=178_956_970)
    """Width x height limit, checked before pixels are decoded."""
    allowed_formats: Annotated[tuple[str, ...], NoDecode] = INPUT_FORMATS
    """Pillow format names accepted on upload."""
    max_hints: int = Field(default=256, ge=0)

    result_ttl_s: float = Field(default=600.0, gt=0.0)
    """How long a finished /jobs result is kept."""
    result_max_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    """Total size of kept /jobs results; the oldest are dropped past it."""
    max_jobs_kept: int = Field(default=10_000, ge=1)

    api_key: SecretStr | None = None
    """If set, upload and job endpoints need `Authorization: Bearer <key>`."""
    protect_metrics: bool = False
    """Also require the API key on /metrics."""

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, value: str) -> str:
        v = value.strip().lower()
        if v in ("auto", "cpu", "cuda", "mps"):
            return v
        if v.startswith("cuda:") and v[5:].isdigit():
            return v
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {value!r}")

    @field_validator("default_model")
    @classmethod
    def _model_is_known(cls, value: str) -> str:
        if value not in ENGINE_NAMES:
            raise ValueError(f"unknown model {value!r}; choose from {', '.join(ENGINE_NAMES)}")
        return value

    @field_validator("allowed_formats", mode="before")
    @classmethod
    def _formats_are_known(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        names = tuple(str(i).strip().upper() for i in items if str(i).strip())
        names = tuple("JPEG" if n == "JPG" else n for n in names)
        unknown = [n for n in names if n not in INPUT_FORMATS]
        if unknown or not names:
            raise ValueError(f"unsupported format(s) {unknown}; choose from {list(INPUT_FORMATS)}")
        return names

    @field_validator("weights_base_url", mode="before")
    @classmethod
    def _base_url_is_a_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # empty: each file's official source
        if isinstance(value, str) and not value.strip().lower().startswith(WEIGHTS_URL_SCHEMES):
            raise ValueError(f"expected a URL starting with {', '.join(WEIGHTS_URL_SCHEMES)}")
        return value.strip() if isinstance(value, str) else value

    @field_validator("ddcolor_render_size", "max_render_size")
    @classmethod
    def _render_size_is_a_multiple(cls, value: int) -> int:
        if value < MIN_RENDER_SIZE or value % RENDER_SIZE_MULTIPLE:
            raise ValueError(
                f"expected a multiple of {RENDER_SIZE_MULTIPLE} of at least {MIN_RENDER_SIZE}"
            )
        return value

    @model_validator(mode="after")
    def _default_render_size_is_allowed(self) -> Self:
        if self.ddcolor_render_size > self.max_render_size:
            raise ValueError(
                f"COLORIZE_DDCOLOR_RENDER_SIZE ({self.ddcolor_render_size}) exceeds "
                f"COLORIZE_MAX_RENDER_SIZE ({self.max_render_size})"
            )
        return self

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value
