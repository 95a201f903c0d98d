"""Video: colour a film of any length inside a fixed memory budget, with less flicker.

The modules, in the order a job uses them:

- `sniff`: which container the bytes are (MP4, MOV, WebM, Matroska), never the name;
- `headers`: what the container declares, read by a bounded walk before FFmpeg opens it;
- `probe`: `probe(path, limits) -> VideoInfo`, every limit checked before decoding;
- `decode`: `VideoSource`, upright RGB frames streamed one at a time, counted and bounded;
- `stabilize`: `ChromaStabilizer`, scene cuts and a bounded chroma blend;
- `encode`: `VideoEncoder`, H.264 yuv420p MP4 with the source's timestamps and audio;
- `plan`: `VideoMemoryPlan`, the bytes of every buffer for a frame size;
- `runner`: `colorize_video`, the job; `flicker`: the metrics (CDC, static |delta ab|).

Errors carry their Outcome (errors.py); limits live in `VideoLimits` (limits.py).
"""

from service.video.encode import EncodeOptions
from service.video.errors import (
    InvalidVideo,
    UnsupportedVideo,
    VideoCancelled,
    VideoEncodeFailed,
    VideoError,
    VideoTooLarge,
)
from service.video.flicker import CdcMeter, StaticAbMeter, cdc, static_delta_ab
from service.video.info import Orientation, VideoInfo
from service.video.limits import VideoLimits
from service.video.plan import VideoMemoryPlan
from service.video.probe import probe
from service.video.runner import VideoProgress, VideoResult, colorize_video
from service.video.sniff import Container, sniff
from service.video.stabilize import ChromaStabilizer, StabilizerSettings

__all__ = [
    "CdcMeter",
    "ChromaStabilizer",
    "Container",
    "EncodeOptions",
    "InvalidVideo",
    "Orientation",
    "StabilizerSettings",
    "StaticAbMeter",
    "UnsupportedVideo",
    "VideoCancelled",
    "VideoEncodeFailed",
    "VideoError",
    "VideoInfo",
    "VideoLimits",
    "VideoMemoryPlan",
    "VideoProgress",
    "VideoResult",
    "VideoTooLarge",
    "cdc",
    "colorize_video",
    "probe",
    "sniff",
    "static_delta_ab",
]
