"""Video: colour a film of any length inside a fixed memory budget, with less flicker.

- `sniff`: which container the bytes are (MP4, MOV, WebM, Matroska), never the name;
- `headers`: what the container declares, read by a bounded walk before FFmpeg opens it;
- `probe`: `probe(path, limits) -> VideoInfo`, every limit checked before decoding;
- `decode`: `VideoSource`, upright RGB frames streamed one at a time, counted and bounded.

Errors carry their Outcome (errors.py); limits live in `VideoLimits` (limits.py).
"""

from service.video.errors import (
    InvalidVideo,
    UnsupportedVideo,
    VideoCancelled,
    VideoEncodeFailed,
    VideoError,
    VideoTooLarge,
)
from service.video.info import Orientation, VideoInfo
from service.video.limits import VideoLimits
from service.video.probe import probe
from service.video.sniff import Container, sniff

__all__ = [
    "Container",
    "InvalidVideo",
    "Orientation",
    "UnsupportedVideo",
    "VideoCancelled",
    "VideoEncodeFailed",
    "VideoError",
    "VideoInfo",
    "VideoLimits",
    "VideoTooLarge",
    "probe",
    "sniff",
]
