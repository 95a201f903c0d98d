"""A colorize request's options: one model for the form fields and the query parameters, parsed
and checked once, resolved into what a job carries."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from service.engines.base import Hint
from service.outcomes import Failure, Outcome

OutputFormat = Literal["png", "jpeg", "webp"]
MAX_TEXT_FIELD = 65536
"""Longest text option (hints): past it the request is malformed, not a job to judge."""

_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
HINTS_DOC = (
    'siggraph17: JSON list of colour hints [{"x": 10, "y": 20, "color": "#c04020"}, ...]; x, y '
    "are pixel coordinates of the (upright) input image, color is #rrggbb or [r, g, b]."
)
RENDER_SIZE_DOC = (
    "DDColor engines: side of the square the network renders at, a multiple of 32 from 64 to "
    "COLORIZE_MAX_RENDER_SIZE (default COLORIZE_DDCOLOR_RENDER_SIZE; see /v1/models). Larger "
    "renders finer colour detail at about the square of the cost."
)

STABILIZE_DOC = (
    "Videos only: hold each shot's colours steady between frames (default true; "
    "`stabilize=false` colours every frame on its own)."
)


class OptionFields(BaseModel):
    """The options as sent: multipart form fields or query parameters (the same model for
    both, so each is declared and validated once)."""

    model: str | None = Field(
        None,
        max_length=64,
        description="Engine (default COLORIZE_DEFAULT_MODEL); GET /v1/models lists them.",
    )
    hints: str | None = Field(None, max_length=MAX_TEXT_FIELD, description=HINTS_DOC)
    format: OutputFormat | None = Field(None, description="Output format (default png).")
    quality: int | None = Field(None, ge=1, le=100, description="JPEG/WebP quality.")
    render_size: int | None = Field(None, description=RENDER_SIZE_DOC)
    stabilize: bool | None = Field(None, description=STABILIZE_DOC)

    def merged(self, other: OptionFields) -> OptionFields | Failure:
        """These fields with `other`'s filling the gaps; a field given in both with two values
        is ambiguous and refused."""
        mine = self.model_dump(exclude_none=True)
        theirs = other.model_dump(exclude_none=True)
        clashes = sorted(k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])
        if clashes:
            return Failure(
                Outcome.BAD_FIELD,
                f"{', '.join(clashes)} given both as a form field and as a query parameter, "
                "with different values",
            )
        return OptionFields.model_validate({**theirs, **mine})

    def resolve(self, default_model: str, max_hints: int) -> JobOptions | Failure:
        """What a job carries: the engine named (or the default), parsed hints."""
        if self.stabilize is not None:
            return Failure(
                Outcome.INVALID_REQUEST, "stabilize applies to videos only, not to a photo"
            )
        hints = parse_hints(self.hints, max_hints)
        if isinstance(hints, Failure):
            return hints
        return JobOptions(
            model=self.model or default_model,
            hints=hints,
            output_format=self.format or "png",
            quality=self.quality,
            render_size=self.render_size,
        )

    def resolve_video(self, default_model: str) -> VideoOptions | Failure:
        """What a video job carries. A video's result is always MP4 and one set of hints cannot
        follow a moving film, so `format`, `quality` and `hints` are refused, not ignored."""
        given = sorted(
            name for name in ("hints", "format", "quality") if getattr(self, name) not in (None, "")
        )
        if given:
            return Failure(
                Outcome.INVALID_REQUEST,
                f"{', '.join(given)} cannot be used with a video: its result is always MP4 "
                "(H.264), and colour hints are for photos",
            )
        return VideoOptions(
            model=self.model or default_model,
            render_size=self.render_size,
            stabilize=True if self.stabilize is None else self.stabilize,
        )


@dataclass(frozen=True)
class VideoOptions:
    """How to colour one video."""

    model: str
    render_size: int | None = None
    stabilize: bool = True


@dataclass(frozen=True)
class JobOptions:
    """How to colour one upload."""

    model: str
    hints: tuple[Hint, ...] = ()
    output_format: OutputFormat = "png"
    quality: int | None = None
    render_size: int | None = None


def parse_hints(text: str | None, max_hints: int) -> tuple[Hint, ...] | Failure:
    """The hints field; any malformation is BAD_HINTS with a detail that says what is wrong."""
    if text is None or not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except RecursionError:
        return _bad("hints is not valid JSON: nested too deeply")
    except ValueError as exc:
        return _bad(f"hints is not valid JSON: {exc}")
    if not isinstance(raw, list):
        return _bad("hints must be a JSON list of {x, y, color} objects")
    if len(raw) > max_hints:
        return _bad(f"at most {max_hints} hints are allowed, got {len(raw)}")
    hints = []
    for index, item in enumerate(raw):
        hint = _hint(index, item)
        if isinstance(hint, Failure):
            return hint
        hints.append(hint)
    return tuple(hints)


def _hint(index: int, item: object) -> Hint | Failure:
    where = f"hints[{index}]"
    if not isinstance(item, dict) or not {"x", "y", "color"} <= item.keys():
        return _bad(f"{where} must be an object with x, y and color")
    x, y, color = item["x"], item["y"], item["color"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (x, y)):
        return _bad(f"{where}: x and y must be integers")
    rgb: tuple[int, int, int]
    if isinstance(color, str) and len(color) == 7 and color.startswith("#"):
        # int(..., 16) alone would accept "+1" or " f": the pattern admits hex digits only.
        if not _HEX_COLOUR.fullmatch(color):
            return _bad(f"{where}: color {color!r} is not #rrggbb")
        rgb = (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))
    elif (
        isinstance(color, list)
        and len(color) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
    ):
        rgb = (color[0], color[1], color[2])
    else:
        return _bad(f"{where}: color must be '#rrggbb' or [r, g, b] in 0..255")
    return Hint(x=x, y=y, color=rgb)


def _bad(detail: str) -> Failure:
    return Failure(Outcome.BAD_HINTS, detail)
