"""Every limit of a video job, in one frozen dataclass the probe, decoder, encoder and runner share.

The defaults suit an 8 GiB pod (docs/video.md); `from_settings` reads the COLORIZE_VIDEO_*
variables. A limit is checked against the container's headers before a frame is decoded, and the
frame count and duration again as frames are decoded, because containers lie.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import VIDEO_CONTAINERS, Settings

GiB = 1024 * 1024 * 1024


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be, and how many threads and how much disk a job may use."""

    containers: tuple[str, ...] = VIDEO_CONTAINERS
    """Containers accepted by signature (COLORIZE_VIDEO_CONTAINERS)."""
    max_long_side: int = 3840
    """Longer side of the upright frame (COLORIZE_VIDEO_MAX_LONG_SIDE)."""
    max_short_side: int = 2160
    """Shorter side of the upright frame (COLORIZE_VIDEO_MAX_SHORT_SIDE)."""
    max_duration_s: float = 3 * 3600.0
    """Longest video in seconds (COLORIZE_VIDEO_MAX_DURATION_S)."""
    max_frames: int = 3 * 3600 * 60
    """Most frames (COLORIZE_VIDEO_MAX_FRAMES): 3 h at 60 fps."""
    max_pixel_rate: int = 3840 * 2160 * 60
    """Width x height x frames per second (COLORIZE_VIDEO_MAX_PIXEL_RATE): UHD at 60 fps."""
    max_video_streams: int = 1
    """Video streams: the one that is coloured. A second would be dropped from the result, so it
    is refused instead (a cover picture or timecode track is not a video stream)."""
    max_audio_streams: int = 4
    """Audio streams, each copied unchanged (COLORIZE_VIDEO_MAX_AUDIO_STREAMS)."""
    max_streams: int = 8
    """Streams of any kind (COLORIZE_VIDEO_MAX_STREAMS); subtitles and data are not carried."""
    decoder_threads: int = 2
    """FFmpeg decoder threads per job (COLORIZE_VIDEO_DECODER_THREADS)."""
    encoder_threads: int = 2
    """libx264 threads per job (COLORIZE_VIDEO_ENCODER_THREADS)."""
    encoder_lookahead: int = 10
    """libx264 rc-lookahead frames (COLORIZE_VIDEO_ENCODER_LOOKAHEAD)."""
    max_job_disk_bytes: int = 16 * GiB
    """The spooled upload plus the result being written (COLORIZE_VIDEO_MAX_JOB_DISK_BYTES)."""
    open_timeout_s: float = 30.0
    """FFmpeg's interrupt callback ends an open that reads for longer (a pathological index)."""
    read_timeout_s: float = 30.0
    """... and any single read of the demuxer that takes longer: a job never hangs on a file."""
    max_header_boxes: int = 100_000
    """Boxes (ISO) or elements (Matroska) the header walk visits before it gives up (422)."""

    def __post_init__(self) -> None:
        if self.max_short_side > self.max_long_side:
            raise ValueError(
                f"max_short_side {self.max_short_side} exceeds max_long_side {self.max_long_side}"
            )
        for name in ("max_frames", "max_pixel_rate", "max_streams", "decoder_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def max_frame_pixels(self) -> int:
        """The largest frame the decoder may allocate (FFmpeg's `max_pixels` option)."""
        return self.max_long_side * self.max_short_side

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        """The limits the COLORIZE_VIDEO_* variables set."""
        return cls(
            containers=settings.video_containers,
            max_long_side=settings.video_max_long_side,
            max_short_side=settings.video_max_short_side,
            max_duration_s=settings.video_max_duration_s,
            max_frames=settings.video_max_frames,
            max_pixel_rate=settings.video_max_pixel_rate,
            max_audio_streams=settings.video_max_audio_streams,
            max_streams=settings.video_max_streams,
            decoder_threads=settings.video_decoder_threads,
            encoder_threads=settings.video_encoder_threads,
            encoder_lookahead=settings.video_encoder_lookahead,
            max_job_disk_bytes=settings.video_max_job_disk_bytes,
        )

    @staticmethod
    def name(field: str) -> str:
        """How a detail names the limit `field`: its COLORIZE_VIDEO_* variable where it has one."""
        if field in _FROM_SETTINGS:
            return f"COLORIZE_VIDEO_{field.upper()}"
        return f"VideoLimits.{field}"


_FROM_SETTINGS = frozenset(
    {
        "containers",
        "max_long_side",
        "max_short_side",
        "max_duration_s",
        "max_frames",
        "max_pixel_rate",
        "max_audio_streams",
        "max_streams",
        "decoder_threads",
        "encoder_threads",
        "encoder_lookahead",
        "max_job_disk_bytes",
    }
)
