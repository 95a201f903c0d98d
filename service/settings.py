"""Every limit and knob of the service, read from `COLORIZE_*` environment variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from platformdirs import user_cache_dir
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from service.engines.catalog import ENGINE_NAMES

RENDER_SIZE_MULTIPLE = 32
"""DDColor's encoder stride: render sizes are multiples of it."""
MIN_RENDER_SIZE = 64
OUTPUT_FORMATS = ("png", "jpeg", "webp")
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
WEIGHTS_URL_SCHEMES = ("http://", "https://", "file://")
REDIS_URL_SCHEMES = ("redis", "rediss")
OBJECT_STORE_URL_SCHEMES = ("http", "https")
SHARED_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A key namespace: safe in Redis keys and S3 object keys alike."""
# S3's bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
SECRET_FIELDS = frozenset({"api_key", "redis_url"})
"""Settings whose value is never echoed in an error (it may carry a password)."""
VIDEO_CONTAINERS = ("mp4", "mov", "webm", "matroska")
"""Video containers `service.video` can accept (by signature; see service/video/sniff.py)."""
GiB = 1024 * 1024 * 1024


def default_weights_dir() -> Path:
    """`$XDG_CACHE_HOME/colorize-service` (or the platform's cache dir)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "colorize-service"
    return Path(user_cache_dir("colorize-service"))


class Settings(BaseSettings):
    """Service configuration; each field is read from `COLORIZE_<NAME>`."""

    # hide_input_in_errors: a ValidationError's text would otherwise echo a rejected value, and
    # COLORIZE_REDIS_URL carries the Redis password. load_settings() echoes non-secret values.
    model_config = SettingsConfigDict(
        env_prefix="COLORIZE_", extra="ignore", hide_input_in_errors=True
    )

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

    body_idle_timeout_s: float = Field(default=10.0, gt=0.0)
    """A request body with no bytes for this long is answered 408 and its memory returned."""
    body_min_rate_bytes_s: int = Field(default=16 * 1024, ge=0)
    """Slowest average rate a body may arrive at, once its grace period is over (408 below)."""
    body_rate_grace_s: float = Field(default=5.0, ge=0.0)
    """How long a body may arrive slower than the minimum rate (a slow start, a short stall)."""
    body_memory_share: float = Field(default=0.5, gt=0.0, le=1.0)
    """Share of the host budget that request bodies in flight may hold together; the rest
    stays for the jobs whatever clients send."""
    body_memory_floor: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of the host budget that jobs leave free for request bodies, so an upload finds
    room however busy the jobs are (a /jobs upload during a flood of large /colorize jobs)."""
    client_body_share: float = Field(default=0.25, gt=0.0, le=1.0)
    """Share of the host budget that the bodies in flight of one client address may hold."""
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    """The request line and headers must arrive within this long (408 and close, otherwise)."""
    keepalive_timeout_s: float = Field(default=5.0, gt=0.0)
    """An idle keep-alive connection is closed after this long."""
    max_connections: int = Field(default=1000, ge=16)
    """Open connections at most; past it, a new one evicts the oldest connection still
    waiting for its request head, or is refused with 503 at once. Must stay under the
    process's file-descriptor limit (checked at start)."""
    max_requests_per_connection: int = Field(default=1000, ge=1)
    """Requests served on one keep-alive connection before it is closed."""

    api_key: SecretStr | None = None
    """If set, upload and job endpoints need `Authorization: Bearer <key>`."""
    protect_metrics: bool = False
    """Also require the API key on /metrics."""

    redis_url: SecretStr | None = None
    """Redis of the shared job store (redis:// or rediss://, AUTH in the URL); unset: in-process."""
    object_store_url: str | None = None
    """S3-compatible endpoint (http or https) for uploads and results; needs COLORIZE_REDIS_URL."""
    object_store_bucket: str | None = None
    """Bucket holding uploads and results; required with COLORIZE_REDIS_URL."""
    object_store_create_bucket: bool = True
    """Create the bucket at start-up if it is missing (and the credentials allow it)."""
    shared_prefix: str = "colorize"
    """Namespace of every Redis key and object key (one Redis and bucket, several deployments)."""
    shared_queue_jobs: int = Field(default=1000, ge=1)
    """Jobs queued or running in the shared queue; one more gets 503 with Retry-After."""
    shared_queue_bytes: int = Field(default=4 * 1024**3, ge=1024)
    """Upload bytes of the jobs queued or running in the shared queue; past it, 503."""
    shared_heartbeat_s: float = Field(default=5.0, gt=0.0)
    """How often a replica refreshes its heartbeat key and looks for a dead replica's work."""
    shared_claim_after_s: float = Field(default=20.0, gt=0.0)
    """A replica silent this long is dead: its jobs are claimed (within this plus one heartbeat)."""
    shared_max_deliveries: int = Field(default=3, ge=1)
    """Deliveries of one job before it ends failed (dead letter) instead of being retried."""
    shared_record_ttl_s: float = Field(default=3600.0, gt=0.0)
    """How long a finished job's record and result are kept (and an idle queued one's record)."""
    shared_timeout_s: float = Field(default=3.0, gt=0.0)
    """Network timeout of one Redis or object store call, so an outage answers in seconds."""

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
    def _default_render_size_is_allowed(self) -> Settings:
        if self.ddcolor_render_size > self.max_render_size:
            raise ValueError(
                f"COLORIZE_DDCOLOR_RENDER_SIZE ({self.ddcolor_render_size}) exceeds "
                f"COLORIZE_MAX_RENDER_SIZE ({self.max_render_size})"
            )
        return self

    @field_validator("api_key", "redis_url", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("object_store_url", "object_store_bucket", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_redis(cls, value: SecretStr | None) -> SecretStr | None:
        # The messages never quote the value: it may carry the password.
        if value is None:
            return None
        url = urlsplit(value.get_secret_value())
        if url.scheme not in REDIS_URL_SCHEMES or not url.hostname:
            raise ValueError("expected redis://[:password@]host[:port][/db] or rediss://...")
        return value

    @field_validator("object_store_url")
    @classmethod
    def _object_store_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value.strip())
        if url.scheme not in OBJECT_STORE_URL_SCHEMES or not url.hostname:
            raise ValueError("expected an http:// or https:// endpoint")
        if url.username is not None or url.password is not None:
            raise ValueError(
                "credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
        return value.strip().rstrip("/")

    @field_validator("object_store_bucket")
    @classmethod
    def _bucket_is_valid(cls, value: str | None) -> str | None:
        if value is not None and not BUCKET_PATTERN.fullmatch(value.strip()):
            raise ValueError("expected an S3 bucket name: 3-63 lowercase letters, digits, '.', '-'")
        return value.strip() if value is not None else None

    @field_validator("shared_prefix")
    @classmethod
    def _prefix_is_safe(cls, value: str) -> str:
        if not SHARED_PREFIX_PATTERN.fullmatch(value):
            raise ValueError("expected 1-64 letters, digits, '_', '.', '-' (starting alphanumeric)")
        return value

    @model_validator(mode="after")
    def _shared_store_is_complete(self) -> Settings:
        # Shared mode needs all three; half a configuration would start a replica whose /jobs
        # silently stays in-process while its peers share theirs.
        given = {
            "COLORIZE_REDIS_URL": self.redis_url is not None,
            "COLORIZE_OBJECT_STORE_URL": self.object_store_url is not None,
            "COLORIZE_OBJECT_STORE_BUCKET": self.object_store_bucket is not None,
        }
        if any(given.values()) and not all(given.values()):
            missing = [name for name, present in given.items() if not present]
            have = [name for name, present in given.items() if present]
            raise ValueError(
                f"{', '.join(have)} set but {', '.join(missing)} missing: the shared job store "
                "needs all of COLORIZE_REDIS_URL, COLORIZE_OBJECT_STORE_URL and "
                "COLORIZE_OBJECT_STORE_BUCKET"
            )
        # A live replica refreshes its heartbeat key every heartbeat; the key must outlive a
        # couple of refreshes, or a busy but healthy replica would have its jobs claimed.
        if self.shared_claim_after_s < 2 * self.shared_heartbeat_s:
            raise ValueError(
                f"COLORIZE_SHARED_CLAIM_AFTER_S ({self.shared_claim_after_s:g}) must be at least "
                f"twice COLORIZE_SHARED_HEARTBEAT_S ({self.shared_heartbeat_s:g})"
            )
        return self

    # -- video (service/video; docs/video.md) ---------------------------------------------------
    # Defaults are for an 8 GiB pod: every limit is checked against the container's headers
    # before a frame is decoded, and the counts again as frames are decoded (containers lie).

    video_containers: Annotated[tuple[str, ...], NoDecode] = VIDEO_CONTAINERS
    """Video containers accepted, by signature: mp4, mov, webm, matroska (MKV: the same demuxer
    as WebM, so refusing it would protect nothing)."""
    video_max_long_side: int = Field(default=3840, ge=16, le=16384)
    """Longer side of the upright frame, in pixels (3840: UHD in either orientation)."""
    video_max_short_side: int = Field(default=2160, ge=16, le=16384)
    """Shorter side of the upright frame, in pixels."""
    video_max_duration_s: float = Field(default=3 * 3600.0, gt=0.0)
    """Longest video, in seconds, as declared and as decoded."""
    video_max_frames: int = Field(default=3 * 3600 * 60, ge=1)
    """Most frames in a video (3 h at 60 fps), as declared and as decoded."""
    video_max_pixel_rate: int = Field(default=3840 * 2160 * 60, ge=1)
    """Width x height x frames per second: the decode and colour work per second of video."""
    video_max_audio_streams: int = Field(default=4, ge=0, le=64)
    """Audio streams copied to the result; more is refused (413), never silently dropped."""
    video_max_streams: int = Field(default=8, ge=1, le=64)
    """Streams of any kind in the container (one video stream is coloured, audio is copied)."""
    video_decoder_threads: int = Field(default=2, ge=1, le=16)
    """Threads FFmpeg may decode one video with (each frame thread holds a frame)."""
    video_encoder_threads: int = Field(default=2, ge=1, le=16)
    """Threads libx264 may encode one video with."""
    video_encoder_lookahead: int = Field(default=10, ge=0, le=60)
    """libx264 rc-lookahead: frames the encoder holds to plan its bit rate (each costs memory:
    about 3.3 bytes per pixel, measured; docs/video.md)."""
    video_crf: int = Field(default=18, ge=0, le=51)
    """libx264 constant rate factor of the result (lower: better and larger; 18 is visually
    lossless for most material)."""
    video_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"
    ] = "veryfast"
    """libx264 speed preset of the result."""
    video_batch_frames: int = Field(default=8, ge=1, le=256)
    """Frames coloured per engine call; the decoded window holds this many."""
    video_max_job_disk_bytes: int = Field(default=16 * GiB, ge=1024 * 1024)
    """Disk one video job may use: the spooled upload plus the result being written."""
    video_max_upload_bytes: int = Field(default=4 * GiB, ge=1024)
    """Largest video upload, in bytes (the `video` part or a raw video/* body). It is spooled to
    disk as it arrives, never held in RAM, so it is bounded by disk, not by
    COLORIZE_MAX_UPLOAD_BYTES (which still bounds photos, references and form fields)."""
    video_workers: int = Field(default=1, ge=1, le=16)
    """Video jobs run at once; each feeds its frames through the shared device lanes."""
    video_queue_size: int = Field(default=4, ge=0)
    """Video jobs waiting for a free video worker; one more gets 503 with Retry-After."""
    video_spool_dir: Path | None = None
    """Where video uploads and results are written (a sub-directory per process, removed when it
    stops); unset: the system's temporary directory. Needs room for (COLORIZE_VIDEO_WORKERS +
    COLORIZE_VIDEO_QUEUE_SIZE) uploads, their results, and the kept results."""
    video_result_max_bytes: int = Field(default=32 * GiB, ge=0)
    """Disk that finished /jobs video results may hold together; the oldest are deleted past it
    (COLORIZE_RESULT_TTL_S deletes them anyway)."""

    @field_validator("video_containers", mode="before")
    @classmethod
    def _video_containers_are_known(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        names = tuple(str(i).strip().lower() for i in items if str(i).strip())
        unknown = [n for n in names if n not in VIDEO_CONTAINERS]
        if unknown or not names:
            raise ValueError(
                f"unknown container(s) {unknown}; choose from {list(VIDEO_CONTAINERS)}"
            )
        return names

    @model_validator(mode="after")
    def _video_upload_fits_a_job(self) -> Settings:
        if self.video_max_upload_bytes > self.video_max_job_disk_bytes:
            raise ValueError(
                f"COLORIZE_VIDEO_MAX_UPLOAD_BYTES ({self.video_max_upload_bytes}) exceeds "
                f"COLORIZE_VIDEO_MAX_JOB_DISK_BYTES ({self.video_max_job_disk_bytes}): an upload "
                "that large could never be accepted"
            )
        return self

    @property
    def shared_store(self) -> bool:
        """Whether /jobs uses the shared job store (Redis and an object store)."""
        return self.redis_url is not None


def _shown(value: object) -> object:
    """`value` as an error may quote it: a URL's password (a misplaced credential) masked."""
    if isinstance(value, str) and "@" in value:
        url = urlsplit(value)
        if url.password:
            return value.replace(url.password, "***")
    return value


class SettingsError(RuntimeError):
    """A `COLORIZE_*` variable has an invalid value; the message names it."""


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one message naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:
                # A check across fields: its message names them; its input is every setting
                # (the API key included), so it is not echoed.
                problems.append(str(err["msg"]))
                continue
            field = str(err["loc"][0])
            got = "value hidden" if field in SECRET_FIELDS else f"got {_shown(err.get('input'))!r}"
            problems.append(f"COLORIZE_{field.upper()}: {err['msg']} ({got})")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
    except SourceError as exc:  # a value the environment source could not even parse
        raise SettingsError(f"invalid configuration: {exc}") from None
