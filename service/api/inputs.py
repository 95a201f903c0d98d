"""From an upload (multipart form or raw image body) to a queued-ready Job."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import File, Form, Query, Request, UploadFile

from service.api.errors import ApiError, OutcomeError
from service.api.guard import BODY_RESERVATION
from service.api.state import ServiceState
from service.engines.base import Engine, EngineNotReady, Hint
from service.memory import MemoryRefused, NeverFits, Reservation
from service.outcomes import Outcome
from service.worker import stages
from service.worker.intake import new_job, read_input
from service.worker.jobs import Job, JobInput

OutputFormat = Literal["png", "jpeg", "webp"]

_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
HINTS_DOC = (
    'JSON list of colour hints for siggraph17: [{"x": 10, "y": 20, "color": "#c04020"}, ...]; '
    "x, y are pixel coordinates of the input image, color is #rrggbb or [r, g, b]."
)


@dataclass
class Upload:
    """The raw parts of a colorize request, before decoding."""

    image: bytes
    reference: bytes | None
    model: str
    hints: tuple[Hint, ...]
    output_format: OutputFormat
    quality: int | None
    render_size: int | None = None


RENDER_SIZE_DOC = (
    "DDColor engines: side of the square the network renders at, a multiple of 32 from 64 to "
    "COLORIZE_MAX_RENDER_SIZE (default COLORIZE_DDCOLOR_RENDER_SIZE; see /v1/models). Larger "
    "renders finer colour detail at about the square of the cost."
)


async def read_upload(
    request: Request,
    image: Annotated[
        UploadFile | None,
        File(description="The photo (required with multipart). JPEG, PNG, WebP, BMP or GIF."),
    ] = None,
    reference: Annotated[
        UploadFile | None, File(description="Colour reference photo (exemplar engine).")
    ] = None,
    model: Annotated[str | None, Form(description="Engine: eccv16, siggraph17, exemplar.")] = None,
    hints: Annotated[str | None, Form(description=HINTS_DOC, max_length=65536)] = None,
    format: Annotated[OutputFormat | None, Form(description="Output format.")] = None,
    quality: Annotated[int | None, Form(ge=1, le=100, description="JPEG/WebP quality.")] = None,
    render_size: Annotated[int | None, Form(description=RENDER_SIZE_DOC)] = None,
    q_model: Annotated[str | None, Query(alias="model", description="Engine (raw body).")] = None,
    q_hints: Annotated[
        str | None, Query(alias="hints", max_length=65536, description="Hints (raw body).")
    ] = None,
    q_format: Annotated[
        OutputFormat | None, Query(alias="format", description="Output format (raw body).")
    ] = None,
    q_quality: Annotated[
        int | None, Query(alias="quality", ge=1, le=100, description="Quality (raw body).")
    ] = None,
    q_render_size: Annotated[
        int | None, Query(alias="render_size", description="Render size (raw body, or multipart).")
    ] = None,
) -> Upload:
    """Accept `multipart/form-data` (fields) or a raw `image/*` body (query parameters)."""
    state: ServiceState = request.app.state.svc
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        if image is None:
            raise ApiError(422, "missing_field", "the multipart field 'image' (a file) is required")
        data = await image.read()
        ref = await reference.read() if reference is not None else None
        chosen = (model, hints, format, quality)
        size = render_size if render_size is not None else q_render_size
    elif content_type.startswith("image/"):
        data = await request.body()
        ref = None
        chosen = (q_model, q_hints, q_format, q_quality)
        size = q_render_size
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with an 'image' file, "
            "or a raw body with Content-Type image/*",
        )
    name, hint_text, fmt, qual = chosen
    return Upload(
        image=data,
        reference=ref,
        model=name or state.settings.default_model,
        hints=parse_hints(hint_text, state.settings.max_hints),
        output_format=fmt or "png",
        quality=qual,
        render_size=size,
    )


def parse_hints(text: str | None, max_hints: int) -> tuple[Hint, ...]:
    """Parse the hints field; any malformation is a 400 that says what is wrong."""
    if text is None or not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except RecursionError:
        raise ApiError(400, "bad_hints", "hints is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "bad_hints", f"hints is not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ApiError(400, "bad_hints", "hints must be a JSON list of {x, y, color} objects")
    if len(raw) > max_hints:
        raise ApiError(400, "bad_hints", f"at most {max_hints} hints are allowed, got {len(raw)}")
    return tuple(_hint(i, item) for i, item in enumerate(raw))


def _hint(index: int, item: object) -> Hint:
    where = f"hints[{index}]"
    if not isinstance(item, dict) or not {"x", "y", "color"} <= item.keys():
        raise ApiError(400, "bad_hints", f"{where} must be an object with x, y and color")
    x, y, color = item["x"], item["y"], item["color"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (x, y)):
        raise ApiError(400, "bad_hints", f"{where}: x and y must be integers")
    rgb: tuple[int, int, int]
    if isinstance(color, str) and len(color) == 7 and color.startswith("#"):
        # int(..., 16) alone would accept "+1" or " f": the pattern admits hex digits only.
        if not _HEX_COLOUR.fullmatch(color):
            raise ApiError(400, "bad_hints", f"{where}: color {color!r} is not #rrggbb")
        rgb = (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))
    elif (
        isinstance(color, list)
        and len(color) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
    ):
        rgb = (color[0], color[1], color[2])
    else:
        raise ApiError(400, "bad_hints", f"{where}: color must be '#rrggbb' or [r, g, b] in 0..255")
    return Hint(x=x, y=y, color=rgb)


def take_body_reservation(request: Request) -> Reservation | None:
    """The host reservation Guard made for the body, now the job's to keep (None if none)."""
    held: Reservation | None = getattr(request.state, BODY_RESERVATION, None)
    setattr(request.state, BODY_RESERVATION, None)
    return held


async def build_job(state: ServiceState, upload: Upload, request: Request) -> Job:
    """Check an upload's headers (format, size, pixel limit, memory) and make its Job.

    Nothing is decoded here: the queue holds the upload's bytes, and the prepare stage decodes
    them shortly before the device needs the job.
    """
    engine = state.engines.get(upload.model)
    if engine is None:
        raise ApiError(
            422,
            "unknown_model",
            f"unknown model {upload.model!r}; choose from {sorted(state.engines)}",
        )
    if not engine.ready:
        raise EngineNotReady(upload.model, engine.not_ready_reason or "not loaded")
    settings = state.settings
    job_input = read_input(
        upload.image,
        upload.reference,
        upload.hints,
        allowed_formats=settings.allowed_formats,
        max_pixels=settings.max_pixels,
        render_size=upload.render_size,
    )
    job = new_job(upload.model, engine, job_input, upload.output_format, upload.quality)
    _check_fits(state, upload.model, engine, job_input, job.estimate)
    held = take_body_reservation(request)
    try:
        if held is None:
            held = state.host.reserve(job_input.nbytes, 0.0, purpose="upload")
        else:
            held.shrink(job_input.nbytes)
            held.purpose = "upload"
    except MemoryRefused as exc:
        raise OutcomeError(Outcome.MEMORY_BUSY, f"host memory is busy: {exc}") from None
    job.hold(held)
    return job


def _check_fits(
    state: ServiceState, model: str, engine: Engine, job_input: JobInput, estimate: int
) -> None:
    """413 for a job that could never run: its compute or its pixels exceed a whole budget."""
    w, h = job_input.width, job_input.height
    try:
        state.manager.check_fits(estimate)
    except NeverFits as exc:
        if engine.render_limits is not None:
            detail = _render_too_large(model, engine, job_input, estimate, exc.budget)
            raise OutcomeError(Outcome.TOO_LARGE, detail) from None
        side = engine.memory_model.largest_square(exc.budget)
        raise OutcomeError(
            Outcome.TOO_LARGE,
            f"this {w}x{h} image needs about {estimate} bytes on the "
            f"device but the job budget is {exc.budget} bytes; the largest square image that "
            f"fits for {model} is about {side}x{side} pixels",
        ) from None
    pixels = stages.decode_bytes(job_input)
    try:
        state.host.check_fits(pixels)
    except NeverFits as exc:
        per_pixel = max(1, job_input.decode_bytes // max(1, job_input.pixels))
        side = math.isqrt(max(0, exc.budget - stages.FIXED_BYTES) // per_pixel)
        raise OutcomeError(
            Outcome.TOO_LARGE,
            f"decoding this {w}x{h} image needs about {pixels} bytes of host memory but the "
            f"host budget for one job is {exc.budget} bytes (COLORIZE_HOST_MEMORY_BYTES x "
            f"COLORIZE_MEMORY_THRESHOLD, less the idle service); about {side}x{side} pixels fit",
        ) from None


def _render_too_large(
    model: str, engine: Engine, job_input: JobInput, estimate: int, budget: int
) -> str:
    """What to say when a job with a render size can never fit: the largest size that does."""
    limits = engine.render_limits
    w, h = job_input.width, job_input.height
    size = job_input.render_size or (limits.default if limits else None)
    largest = engine.largest_render_size(budget, (w, h))
    if largest is None:
        fits = (
            f"no render size fits with an image this large (the smallest, "
            f"{limits.minimum if limits else 64}, does not): send a smaller image"
        )
    else:
        fits = f"the largest render size that fits is {largest}: send render_size={largest}"
    return (
        f"this {w}x{h} image at render size {size} needs about {estimate} bytes on the device "
        f"but the job budget is {budget} bytes; for {model} {fits}"
    )
