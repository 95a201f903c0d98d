"""Why a video job was refused or stopped; each error names its outcome (the API picks the status).

The message is the detail the client reads: it names the limit or the defect, never a path on
this machine or an FFmpeg object's address.
"""

from __future__ import annotations

from typing import ClassVar

from service.outcomes import Outcome


class VideoError(Exception):
    """A video the client must fix, or a job that ended early; `message` is the detail."""

    outcome: ClassVar[Outcome] = Outcome.INVALID_VIDEO
    title: ClassVar[str] = "invalid video"
    """Short, fixed summary for the response's `error` field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedVideo(VideoError):
    """Not a video container we accept: markup, text, an unknown or refused format (415)."""

    outcome = Outcome.UNSUPPORTED_FORMAT
    title = "unsupported video format"


class InvalidVideo(VideoError):
    """An accepted container that cannot be decoded, or an image sent as a video (422)."""

    outcome = Outcome.INVALID_VIDEO
    title = "undecodable video"


class VideoTooLarge(VideoError):
    """Over one of the `VideoLimits` (413); `limit` is the setting's name."""

    outcome = Outcome.VIDEO_TOO_LARGE
    title = "video too large"

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit
        """The VideoLimits field that refused it (its COLORIZE_VIDEO_* variable is in the
        message), or `frames_declared` / `audio_packets_declared`: a stream that outgrew, as
        decoded, the count its container declared and the job's memory was reserved for."""


class VideoCancelled(VideoError):
    """The job was cancelled (DELETE, client gone, shutdown) while it ran."""

    outcome = Outcome.CANCELLED
    title = "cancelled"


class VideoEncodeFailed(VideoError):
    """The encoder or the muxer failed for a reason of ours, not the client's video."""

    outcome = Outcome.ENCODE_FAILED
    title = "encode failed"
