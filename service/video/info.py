"""What a probed video is: the numbers the limits, the memory plan and the encoder work from."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from service.video.sniff import Container


@dataclass(frozen=True)
class Orientation:
    """How the stored picture is turned to be shown upright (the container's display matrix).

    `rotation` is FFmpeg's `av_display_rotation_get` (what PyAV's `VideoFrame.rotation` reads),
    rounded to a quarter turn; `matrix` keeps the four entries that tell mirrors apart.
    """

    rotation: int = 0
    """Degrees, counter-clockwise, one of 0, 90, 180, 270."""
    matrix: tuple[int, int, int, int] = (1, 0, 0, 1)
    """Signs of the display matrix's a, b, c, d (16.16 entries 0, 1, 3, 4)."""

    @property
    def quarter_turn(self) -> bool:
        """The upright picture swaps width and height."""
        return self.rotation in (90, 270)

    @property
    def identity(self) -> bool:
        return self.rotation == 0 and self.matrix == (1, 0, 0, 1)


UPRIGHT = Orientation()


@dataclass(frozen=True)
class VideoInfo:
    """A video, as probed: declared by its headers, confirmed by FFmpeg and by its first frame."""

    container: Container
    codec: str
    """FFmpeg's name of the video codec (h264, hevc, vp9, ...)."""
    width: int
    """Upright width (after the display rotation), as the decoder yields frames."""
    height: int
    stored_width: int
    """Width as coded in the stream, before rotation."""
    stored_height: int
    orientation: Orientation
    frame_rate: Fraction
    """Average frames per second (frames over duration for variable frame rate)."""
    frames: int
    """Frame count: from the container where it declares one, else duration x frame rate."""
    frames_declared: bool
    """True when `frames` is the container's own count rather than an estimate."""
    duration_s: float
    time_base: Fraction
    """The video stream's time base: decoded timestamps are in it, and the result keeps it."""
    audio_codecs: tuple[str, ...]
    """One entry per audio stream, each copied unchanged into the result."""
    file_bytes: int
    audio_packets: int = 0
    """Packets in all audio streams: the container's count (MP4/MOV sample tables), else
    AUDIO_PACKETS_PER_SECOND per stream over the duration (Matroska declares none)."""

    @property
    def rotation(self) -> int:
        """Degrees counter-clockwise the stored picture is turned to be upright."""
        return self.orientation.rotation

    @property
    def audio_streams(self) -> int:
        return len(self.audio_codecs)

    @property
    def pixels(self) -> int:
        """Pixels per frame."""
        return self.width * self.height

    @property
    def pixel_rate(self) -> float:
        """Pixels per second of video (width x height x frame rate)."""
        return self.pixels * float(self.frame_rate)

    @property
    def frame_bytes(self) -> int:
        """One upright RGB uint8 frame."""
        return self.pixels * 3
