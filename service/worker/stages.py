"""The CPU stages around the device: prepare (decode, resize) and finish (join, encode).

Each stage reserves the host memory it is about to use before using it, so the pixels of a job
exist only while the host budget covers them. Both report what happened as an Outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch

from service.engines.base import ColorizeRequest, Engine, InvalidRequest
from service.imaging.decode import GRAYSCALE_CHROMA, ImageHeader, chroma_level, decode_image
from service.imaging.errors import ImageError
from service.memory import MemoryManager, MemoryRefused, NeverFits
from service.outcomes import Failure, Outcome
from service.worker.jobs import Job, JobInput

log = logging.getLogger(__name__)

EncodeFn = Callable[[np.ndarray, str, "int | None"], bytes]
RAW = "raw"
"""The output format of a video frame's job: its RGB array, not an encoded image."""

# Host bytes per pixel, measured with `python -m bench.host_memory` (growth of the RSS high-water
# mark while decoding or encoding a 4000x3000 image, one fresh process per case, 2026-12-02):
#   decode: RGB JPEG 10.0, RGB PNG 10.0, grey PNG 11.0, palette PNG 10.0, 16-bit grey PNG 14.0,
#           EXIF-rotated JPEG 14.0, RGBA PNG 29.9 (Pillow keeps 4 bytes per RGB pixel, a
#           transpose copies, the alpha composite works in uint16);
#   encode: PNG 8.5, JPEG 5.3, WebP 29.4 (libwebp converts to YUV and keeps its own buffers).
# Each constant below bounds its cases with 10-30 % to spare.
DECODE_BYTES_PER_PIXEL = 13
"""Opaque 8-bit images that need no transpose (10.0-11.0 measured)."""
DECODE_ROTATED_BYTES_PER_PIXEL = 17
"""EXIF-rotated or 16-bit images (14.0 measured)."""
DECODE_ALPHA_BYTES_PER_PIXEL = 34
"""Images with transparency, composited on white (29.9 measured), or both of the above."""
ENCODE_BYTES_PER_PIXEL: Mapping[str, int] = MappingProxyType({"png": 10, "jpeg": 7, "webp": 34})
HELD_BYTES_PER_PIXEL = 6
"""Held from decode to the result: the photo and its colour output, RGB uint8 each."""
FIXED_BYTES = 4 * 1024 * 1024
"""Per job: decoder and encoder state, the Python objects around the arrays."""


def decode_bytes_per_pixel(header: ImageHeader) -> int:
    """Host bytes per pixel that decoding an image with `header` may take at its peak."""
    if header.transparent:
        return DECODE_ALPHA_BYTES_PER_PIXEL
    if header.rotated or header.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return DECODE_ROTATED_BYTES_PER_PIXEL
    return DECODE_BYTES_PER_PIXEL


def decode_bytes(upload: JobInput) -> int:
    """Host bytes to reserve before decoding `upload` (image and reference)."""
    return FIXED_BYTES + upload.decode_bytes


def hold_bytes(upload: JobInput, output_format: str) -> int:
    """Host bytes a decoded job keeps until its result is encoded (the encoder's peak too)."""
    per_pixel = HELD_BYTES_PER_PIXEL + ENCODE_BYTES_PER_PIXEL.get(output_format, 34)
    return FIXED_BYTES + per_pixel * upload.pixels + 3 * upload.reference_pixels


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding checks again (the API checked the headers at upload)."""

    allowed_formats: Collection[str]
    max_pixels: int
    admission_wait_s: float


def prepare(job: Job, engine: Engine, host: MemoryManager, limits: DecodeLimits) -> Failure | None:
    """Decode `job`'s upload inside a host reservation and let the engine prepare it.

    On success the job holds its pixels (`job.request`, `job.prepared`) and the upload's bytes
    are gone; otherwise the returned Failure says why.
    """
    upload = job.input
    if upload is None:
        return Failure(Outcome.ERROR, "the job has no upload to decode")
    started = time.monotonic()
    try:
        pixels = host.reserve(decode_bytes(upload), limits.admission_wait_s, purpose="pixels")
    except NeverFits as exc:
        return Failure(Outcome.TOO_LARGE, f"decoding this image needs more host memory: {exc}")
    except MemoryRefused as exc:
        return Failure(Outcome.MEMORY_BUSY, f"host memory could not be reserved: {exc}", 2)
    job.hold(pixels)
    try:
        request = _decode(upload, limits)
        # Admission validated the request against the header's upright size: not again here.
        prepared = engine.prepare(request)
    except ImageError as exc:
        return Failure(exc.outcome, exc.message)
    except InvalidRequest as exc:
        return Failure(Outcome.INVALID_REQUEST, str(exc))
    except _GrayscaleReference as exc:
        return Failure(Outcome.GRAYSCALE_REFERENCE, str(exc))
    except MemoryError:
        return Failure(Outcome.OOM, "out of host memory while decoding the image")
    except Exception as exc:
        log.exception("preparing job %s failed", job.id)
        return Failure(Outcome.ERROR, f"preparing the image failed: {exc}")
    # From here the job keeps its pixels, not the upload: shrink to what stays.
    pixels.shrink(hold_bytes(upload, job.output_format))
    job.request, job.prepared, job.input = request, prepared, None
    job.release_hold("upload")
    job.timings["decode"] = time.monotonic() - started
    return None


class _GrayscaleReference(Exception):
    """The reference photo has no colour to transfer."""


def _decode(upload: JobInput, limits: DecodeLimits) -> ColorizeRequest:
    image = decode_image(
        upload.image, allowed_formats=limits.allowed_formats, max_pixels=limits.max_pixels
    )
    reference = None
    if upload.reference is not None:
        reference = decode_image(
            upload.reference, allowed_formats=limits.allowed_formats, max_pixels=limits.max_pixels
        )
        if chroma_level(reference) < GRAYSCALE_CHROMA:
            raise _GrayscaleReference(
                "the reference image has no colour to transfer (it is grayscale)"
            )
    return ColorizeRequest(
        image=image, hints=upload.hints, reference=reference, render_size=upload.render_size
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, MPS/CPU allocator failures and Python's MemoryError."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class EngineContractError(RuntimeError):
    """An engine answered something other than one RGB image per request, each of its size."""


def checked_image(engine: Engine, request: ColorizeRequest, out: np.ndarray) -> np.ndarray:
    """`out` if it is an RGB uint8 image of the request's size; else EngineContractError."""
    w, h = request.size
    if out.shape != (h, w, 3) or out.dtype != np.uint8:
        raise EngineContractError(
            f"{engine.name} returned {out.dtype} {out.shape} for a {w}x{h} image"
        )
    return out


def finish(
    job: Job,
    engine: Engine,
    output: object,
    host: MemoryManager,
    encode: EncodeFn,
    admission_wait_s: float,
    chunk_bytes: int | None,
) -> bytes | np.ndarray | Failure:
    """The encoded result of the device's output (colour join on CPU devices, encode); a frame
    of a video (output format RAW) stays an RGB array, for the video's own encoder."""
    request = job.request
    if request is None:
        return Failure(Outcome.ERROR, "the job lost its pixels before finishing")
    started = time.monotonic()
    try:
        need = engine.finish_estimate(request)
        reservation = host.reserve(need, admission_wait_s, purpose="finish") if need else None
        try:
            rgb = checked_image(engine, request, engine.finish(request, output, chunk_bytes))
        finally:
            if reservation is not None:
                reservation.release()
    except NeverFits as exc:
        return Failure(Outcome.TOO_LARGE, f"finishing this image needs more host memory: {exc}")
    except MemoryRefused as exc:
        return Failure(Outcome.MEMORY_BUSY, f"host memory could not be reserved: {exc}", 2)
    except Exception as exc:
        if is_out_of_memory(exc):
            log.warning("job %s ran out of memory while finishing: %r", job.id, exc)
            return Failure(Outcome.OOM, str(exc) or "out of memory while joining colour")
        log.exception("finishing job %s failed", job.id)
        return Failure(Outcome.ERROR, f"the engine failed: {exc}")
    del output
    job.timings["finish"] = time.monotonic() - started
    if job.output_format == RAW:
        return rgb
    started = time.monotonic()
    try:
        data = encode(rgb, job.output_format, job.quality)
    except Exception as exc:
        if is_out_of_memory(exc):
            log.warning("job %s ran out of memory while encoding: %r", job.id, exc)
            # A bare MemoryError() has no message: say what happened ourselves.
            return Failure(Outcome.OOM, str(exc) or "out of memory while encoding")
        log.exception("encoding job %s failed", job.id)
        return Failure(Outcome.ENCODE_FAILED, str(exc) or f"encoding failed ({type(exc).__name__})")
    job.timings["encode"] = time.monotonic() - started
    return data
