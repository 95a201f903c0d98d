"""From an upload to an admitted job: the one path the API and the batch command share.

Every check happens here, before anything is decoded: the engine exists and is ready, the
options suit it, the headers (format, upright size, pixel limit, mode), whether the job could
ever fit the device's and the host's budgets, and a host reservation for the bytes it keeps
while it waits. What comes out is a Job, or a Failure (an outcome and a detail): never a status,
which is the API's to choose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.engines.base import ColorizeRequest, Engine, EngineError
from service.imaging.decode import probe_header
from service.imaging.errors import ImageError
from service.memory import MemoryManager, MemoryRefused, NeverFits, Reservation
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.video import VideoError, VideoInfo, VideoLimits, VideoMemoryPlan, probe
from service.worker import stages
from service.worker.jobs import Job, JobInput
from service.worker.options import JobOptions, VideoOptions


@dataclass(frozen=True)
class Upload:
    """What a client sent: the bytes and how to colour them."""

    image: bytes
    options: JobOptions
    reference: bytes | None = None


@dataclass(frozen=True)
class VideoUpload:
    """A video a client sent: spooled to a file as it arrived (never held in memory), and how
    to colour it."""

    path: Path
    options: VideoOptions
    reference: bytes | None = None


@dataclass(frozen=True)
class AdmittedVideo:
    """A video that passed every check: what it is, and the memory its job will hold."""

    info: VideoInfo
    plan: VideoMemoryPlan
    """Host bytes of the job's buffers (decoder, window, stabiliser, encoder, index)."""
    estimate: int
    """Device bytes one frame's forward pass reserves (the lanes batch frames like photos)."""
    reference_bytes: int = 0
    """Host bytes decoding the reference photo may take (held, as RGB, for the whole job)."""

    @property
    def host_bytes(self) -> int:
        """What the job reserves from the host budget when it starts."""
        return self.plan.total + self.reference_bytes


@dataclass(frozen=True)
class Budgets:
    """The memory a job is admitted against: the device's, and the host's (the same manager on
    a CPU device)."""

    device: MemoryManager
    host: MemoryManager


def admit(
    upload: Upload,
    engines: Mapping[str, Engine],
    budgets: Budgets,
    settings: Settings,
    *,
    held: Reservation | None = None,
    wait_s: float = 0.0,
) -> Job | Failure:
    """An admitted Job for `upload`, or why not.

    `held` is host memory already reserved for the bytes (the request body's lease): it is the
    job's from here, which keeps what it needs of it, or given back with a Failure. Without one,
    the upload's bytes are reserved here, waiting up to `wait_s` (the API waits 0: a busy host
    answers 503 at once).
    """
    outcome = _admit(upload, engines, budgets, settings, held, wait_s)
    if isinstance(outcome, Failure) and held is not None:
        held.release()
    return outcome


def check(
    upload: Upload, engines: Mapping[str, Engine], budgets: Budgets, settings: Settings
) -> Job | Failure:
    """Every check of `admit`, without the host reservation: the Job that would run, unheld.

    The shared job store stores such a job's bytes instead of holding them; the replica that
    pulls it admits it for real.
    """
    options = upload.options
    engine = _engine_for(options.model, upload.reference is not None, engines)
    if isinstance(engine, Failure):
        return engine
    try:
        job_input = read_input(upload, settings)
        job = new_job(engine, job_input, options)
    except ImageError as exc:
        return Failure(exc.outcome, exc.message)
    except EngineError as exc:
        return Failure(Outcome.INVALID_REQUEST, str(exc))
    failure = _never_fits(budgets, engine, job_input, job.estimate)
    return job if failure is None else failure


def _admit(
    upload: Upload,
    engines: Mapping[str, Engine],
    budgets: Budgets,
    settings: Settings,
    held: Reservation | None,
    wait_s: float,
) -> Job | Failure:
    job = check(upload, engines, budgets, settings)
    if isinstance(job, Failure):
        return job
    assert job.input is not None
    job_input = job.input
    try:
        if held is None:
            held = budgets.host.reserve(job_input.nbytes, wait_s, purpose="upload")
        else:
            held.shrink(job_input.nbytes)
            held.purpose = "upload"
    except NeverFits as exc:
        return Failure(Outcome.TOO_LARGE, f"the upload does not fit the host budget: {exc}")
    except MemoryRefused as exc:
        return Failure(Outcome.MEMORY_BUSY, f"host memory is busy: {exc}", 2)
    job.hold(held)
    return job


def read_input(upload: Upload, settings: Settings) -> JobInput:
    """The upload with its upright size from the headers; raises ImageError (415/413/422)."""
    formats, max_pixels = settings.allowed_formats, settings.max_pixels
    header = probe_header(upload.image, allowed_formats=formats, max_pixels=max_pixels)
    pixels = header.width * header.height
    decode = stages.decode_bytes_per_pixel(header) * pixels
    reference_pixels = 0
    if upload.reference is not None:
        ref = probe_header(upload.reference, allowed_formats=formats, max_pixels=max_pixels)
        reference_pixels = ref.width * ref.height
        decode += stages.decode_bytes_per_pixel(ref) * reference_pixels
    return JobInput(
        upload.image,
        header.width,
        header.height,
        upload.reference,
        reference_pixels,
        upload.options.hints,
        render_size=upload.options.render_size,
        decode_bytes=decode,
    )


def new_job(engine: Engine, upload: JobInput, options: JobOptions) -> Job:
    """A Job for `upload`, validated by the engine and sized; raises InvalidRequest.

    The engine judges placeholders of the decoded shapes (no pixels): the image's upright size
    decides whether a hint is inside it, the render size is checked under its one rule.
    """
    reference = None if upload.reference is None else _placeholder(1, 1)
    placeholder = ColorizeRequest(
        image=_placeholder(upload.width, upload.height),
        hints=upload.hints,
        reference=reference,
        render_size=upload.render_size,
    )
    engine.validate(placeholder)
    if upload.reference is None:
        estimate = engine.estimate(placeholder)
    else:
        # The exemplar's estimate counts reference pixels: the placeholder has none.
        estimate = engine.memory_model.estimate(
            upload.width, upload.height, 1, upload.reference_pixels
        )
    return Job(
        model=engine.name,
        input=upload,
        estimate=estimate,
        output_format=options.output_format,
        quality=options.quality,
    )


def _placeholder(width: int, height: int) -> np.ndarray:
    # Shape and dtype of the decoded image without its memory: engines validate against it.
    return np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (height, width, 3))


def _never_fits(
    budgets: Budgets, engine: Engine, job_input: JobInput, estimate: int
) -> Failure | None:
    """TOO_LARGE for a job that could never run: its compute or its pixels exceed a whole
    budget (the detail names the largest image, or render size, that fits)."""
    w, h = job_input.width, job_input.height
    try:
        budgets.device.check_fits(estimate)
    except NeverFits as exc:
        if engine.render_limits is not None:
            return Failure(Outcome.TOO_LARGE, _render_too_large(engine, job_input, estimate, exc))
        side = engine.memory_model.largest_square(exc.budget)
        return Failure(
            Outcome.TOO_LARGE,
            f"this {w}x{h} image needs about {estimate} bytes on the device but the job budget "
            f"is {exc.budget} bytes; the largest square image that fits for {engine.name} is "
            f"about {side}x{side} pixels",
        )
    pixels = stages.decode_bytes(job_input)
    try:
        budgets.host.check_fits(pixels)
    except NeverFits as exc:
        per_pixel = max(1, job_input.decode_bytes // max(1, job_input.pixels))
        side = math.isqrt(max(0, exc.budget - stages.FIXED_BYTES) // per_pixel)
        return Failure(
            Outcome.TOO_LARGE,
            f"decoding this {w}x{h} image needs about {pixels} bytes of host memory but the "
            f"host budget for one job is {exc.budget} bytes (COLORIZE_HOST_MEMORY_BYTES x "
            f"COLORIZE_MEMORY_THRESHOLD, less the idle service); about {side}x{side} pixels fit",
        )
    return None


def _render_too_large(engine: Engine, job_input: JobInput, estimate: int, exc: NeverFits) -> str:
    """What to say when a job with a render size can never fit: the largest size that does."""
    limits = engine.render_limits
    w, h = job_input.width, job_input.height
    size = job_input.render_size or (limits.default if limits else None)
    largest = engine.largest_render_size(exc.budget, (w, h))
    if largest is None:
        fits = (
            f"no render size fits with an image this large (the smallest, "
            f"{limits.minimum if limits else 64}, does not): send a smaller image"
        )
    else:
        fits = f"the largest render size that fits is {largest}: send render_size={largest}"
    return (
        f"this {w}x{h} image at render size {size} needs about {estimate} bytes on the device "
        f"but the job budget is {exc.budget} bytes; for {engine.name} {fits}"
    )


def check_video(
    upload: VideoUpload, engines: Mapping[str, Engine], budgets: Budgets, settings: Settings
) -> AdmittedVideo | Failure:
    """Every check of a video before it is accepted: the engine and its options, the reference
    photo's header, the video itself (`probe`: container, streams, size, duration, frame count,
    pixel rate, the per-job disk; 415/422/413 naming the limit) and whether its job could ever
    fit the budgets. Reads the file's headers (blocking: call it from a thread)."""
    options = upload.options
    engine = _engine_for(options.model, upload.reference is not None, engines)
    if isinstance(engine, Failure):
        return engine
    formats, max_pixels = settings.allowed_formats, settings.max_pixels
    reference_pixels = reference_bytes = 0
    try:
        if upload.reference is not None:
            ref = probe_header(upload.reference, allowed_formats=formats, max_pixels=max_pixels)
            reference_pixels = ref.width * ref.height
            reference_bytes = stages.decode_bytes_per_pixel(ref) * reference_pixels
        info = probe(upload.path, VideoLimits.from_settings(settings))
    except ImageError as exc:
        return Failure(exc.outcome, f"the reference photo: {exc.message}")
    except VideoError as exc:
        return Failure(exc.outcome, exc.message)
    frame = ColorizeRequest(
        image=_placeholder(info.width, info.height),
        reference=None if upload.reference is None else _placeholder(1, 1),
        render_size=options.render_size,
    )
    try:
        engine.validate(frame)
    except EngineError as exc:
        return Failure(Outcome.INVALID_REQUEST, str(exc))
    if upload.reference is None:
        estimate = engine.estimate(frame)
    else:
        estimate = engine.memory_model.estimate(info.width, info.height, 1, reference_pixels)
    # Pipelined: the next window colours while this one is stabilised and encoded.
    plan = VideoMemoryPlan.for_video(
        info,
        settings.video_batch_frames,
        options.stabilize,
        VideoLimits.from_settings(settings),
        pipeline=True,
    )
    video = AdmittedVideo(info, plan, estimate, reference_bytes)
    frame_input = JobInput(
        b"", info.width, info.height, render_size=options.render_size, decode_bytes=0
    )
    try:
        budgets.device.check_fits(estimate)
    except NeverFits as exc:
        if engine.render_limits is not None:
            detail = _render_too_large(engine, frame_input, estimate, exc)
        else:
            detail = (
                f"a {info.width}x{info.height} frame needs about {estimate} bytes on the device "
                f"but the job budget is {exc.budget} bytes"
            )
        return Failure(Outcome.TOO_LARGE, detail.replace("image", "video"))
    # On a CPU the device's budget is the host's: the frames' forward pass comes on top.
    host_need = video.host_bytes + (estimate if budgets.device is budgets.host else 0)
    try:
        budgets.host.check_fits(host_need)
    except NeverFits as exc:
        return Failure(
            Outcome.TOO_LARGE,
            f"colouring this {info.width}x{info.height} video needs about {host_need} bytes of "
            f"host memory (its decoder, a window of {settings.video_batch_frames} frames "
            f"(COLORIZE_VIDEO_BATCH_FRAMES), the stabiliser and the encoder) but the host "
            f"budget for one job is {exc.budget} bytes (COLORIZE_HOST_MEMORY_BYTES x "
            "COLORIZE_MEMORY_THRESHOLD, less the idle service)",
        )
    return video


def _engine_for(
    model: str, with_reference: bool, engines: Mapping[str, Engine]
) -> Engine | Failure:
    """The engine a photo or a video names, if it exists, is ready and takes what was sent."""
    engine = engines.get(model)
    if engine is None:
        return Failure(
            Outcome.UNKNOWN_MODEL, f"unknown model {model[:64]!r}; choose from {sorted(engines)}"
        )
    if not engine.ready:
        return Failure(
            Outcome.NOT_READY,
            f"engine {model!r} is not ready: {engine.not_ready_reason or 'not loaded'}",
        )
    if with_reference and not engine.takes_reference:
        # Decoding a reference the engine ignores would spend memory (and a grayscale one
        # would fail the request) for nothing.
        return Failure(
            Outcome.INVALID_REQUEST,
            f"engine {model!r} takes no reference photo; only exemplar uses one",
        )
    return engine
