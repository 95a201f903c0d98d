"""Video jobs: containers, limits, the encoder, the executor (service/video; docs/video.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode
from typing_extensions import Self

VIDEO_CONTAINERS = ("mp4", "mov", "webm", "matroska")
"""Video containers `service.video` can accept (by signature; see service/video/sniff.py)."""
GiB = 1024 * 1024 * 1024


class VideoSettings(BaseSettings):
    """Limits and knobs of video jobs."""

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
    def _video_upload_fits_a_job(self) -> Self:
        if self.video_max_upload_bytes > self.video_max_job_disk_bytes:
            raise ValueError(
                f"COLORIZE_VIDEO_MAX_UPLOAD_BYTES ({self.video_max_upload_bytes}) exceeds "
                f"COLORIZE_VIDEO_MAX_JOB_DISK_BYTES ({self.video_max_job_disk_bytes}): an upload "
                "that large could never be accepted"
            )
        return self
