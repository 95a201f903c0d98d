"""From uploaded bytes to a Job, checking headers only: shared by the API and the batch command."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from service.engines.base import ColorizeRequest, Engine, Hint
from service.imaging.decode import probe_header
from service.worker.jobs import Job, JobInput
from service.worker.stages import decode_bytes_per_pixel


def read_input(
    image: bytes,
    reference: bytes | None,
    hints: tuple[Hint, ...],
    *,
    allowed_formats: Collection[str],
    max_pixels: int,
    render_size: int | None = None,
) -> JobInput:
    """The upload with its upright size from the headers; raises ImageError (415/413/422)."""
    header = probe_header(image, allowed_formats=allowed_formats, max_pixels=max_pixels)
    pixels = header.width * header.height
    decode = decode_bytes_per_pixel(header) * pixels
    reference_pixels = 0
    if reference is not None:
        ref = probe_header(reference, allowed_formats=allowed_formats, max_pixels=max_pixels)
        reference_pixels = ref.width * ref.height
        decode += decode_bytes_per_pixel(ref) * reference_pixels
    return JobInput(
        image,
        header.width,
        header.height,
        reference,
        reference_pixels,
        hints,
        render_size=render_size,
        decode_bytes=decode,
    )


def _placeholder(width: int, height: int) -> np.ndarray:
    # Shape and dtype of the decoded image without its memory: engines validate against it.
    return np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (height, width, 3))


def new_job(
    model: str,
    engine: Engine,
    upload: JobInput,
    output_format: str = "png",
    quality: int | None = None,
) -> Job:
    """A Job for `upload`, validated by the engine and sized; raises InvalidRequest."""
    reference = None
    if upload.reference is not None:
        # The reference's shape does not matter to validation, only that there is one.
        reference = _placeholder(1, 1)
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
        model=model, input=upload, estimate=estimate, output_format=output_format, quality=quality
    )
