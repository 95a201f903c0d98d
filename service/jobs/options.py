"""A job's options as the shared store keeps them (JSON in its record) and back."""

from __future__ import annotations

from typing import Any, cast

from service.engines.base import Hint
from service.worker.options import JobOptions, OutputFormat, VideoOptions


def options_json(options: JobOptions) -> dict[str, Any]:
    """What a replica needs to run the job as it was asked for."""
    return {
        "format": options.output_format,
        "quality": options.quality,
        "render_size": options.render_size,
        "hints": [[h.x, h.y, list(h.color)] for h in options.hints],
    }


def options_from_json(model: str, fields: dict[str, Any]) -> JobOptions:
    hints = tuple(
        Hint(x=int(x), y=int(y), color=(int(c[0]), int(c[1]), int(c[2])))
        for x, y, c in fields.get("hints") or ()
    )
    return JobOptions(
        model=model,
        hints=hints,
        output_format=cast(OutputFormat, fields.get("format") or "png"),
        quality=fields.get("quality"),
        render_size=fields.get("render_size"),
    )


def video_options_json(options: VideoOptions, frames: int) -> dict[str, Any]:
    """What a replica needs to run a video job as it was asked for (and its probed length, for
    the progress shown before it starts)."""
    return {"render_size": options.render_size, "stabilize": options.stabilize, "frames": frames}


def video_options_from_json(model: str, fields: dict[str, Any]) -> VideoOptions:
    render_size = fields.get("render_size")
    return VideoOptions(
        model=model,
        render_size=int(render_size) if render_size is not None else None,
        stabilize=bool(fields.get("stabilize", True)),
    )
