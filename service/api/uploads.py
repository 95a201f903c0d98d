"""An upload as the API receives it: a multipart form (`image` or `video`, `reference` and option
fields) or a raw `image/*` or `video/*` body, with options from the form and the query string
alike.

Photos are read into memory (the body middleware bounded and reserved them). A video never is:
a raw `video/*` body is written to a spool file as it arrives, and a multipart `video` part,
which Starlette already spooled to disk past 1 MiB, is copied from its file into the spool. What
a file *is* is decided by its bytes, never its name or declared type: a video sent where a photo
is expected is refused with `video_goes_to_jobs` (415), pointing to /jobs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO, Annotated, NoReturn

import anyio
from fastapi import Depends, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from service.api.errors import OutcomeError
from service.api.lease import lease_of
from service.api.state import ServiceState
from service.jobs.spool import remove
from service.outcomes import Failure, Outcome
from service.settings import VIDEO_CONTAINERS
from service.video import VideoError, sniff
from service.video.sniff import SNIFF_BYTES
from service.worker.admission import Upload, VideoUpload
from service.worker.options import OptionFields

SPOOL_WRITE_BYTES = 1024 * 1024
"""A raw video body is written to its spool file in pieces of about this size."""
COPY_BYTES = 1024 * 1024
VIDEO_PATH = "/jobs"
"""The one route that takes videos."""


def jobs_pointer(what: str) -> str:
    """The detail of a video sent where a photo is expected."""
    return (
        f"{what}: videos are coloured as asynchronous jobs; POST it to /jobs as the multipart "
        "field 'video' (or as a raw video/* body), then follow GET /jobs/{id}"
    )


async def read_upload(
    request: Request,
    form: Annotated[OptionFields, Form()],
    query: Annotated[OptionFields, Query()],
    image: Annotated[
        UploadFile | None,
        File(description="The photo (required with multipart). JPEG, PNG, WebP, BMP or GIF."),
    ] = None,
    reference: Annotated[
        UploadFile | None, File(description="Colour reference photo (exemplar engine only).")
    ] = None,
    video: Annotated[
        UploadFile | None,
        File(
            description=(
                "POST /jobs only, instead of `image`: a video (MP4, MOV, WebM or MKV, told by its "
                "bytes), up to COLORIZE_VIDEO_MAX_UPLOAD_BYTES. The result is an MP4."
            )
        ),
    ] = None,
) -> Upload | VideoUpload:
    """Accept `multipart/form-data` (fields) or a raw `image/*` or `video/*` body (query
    parameters); on a form, query parameters fill the fields it leaves out."""
    state: ServiceState = request.app.state.svc
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    takes_video = request.url.path == VIDEO_PATH
    if content_type == "multipart/form-data":
        if video is not None:
            if not takes_video:
                _fail(Failure(Outcome.VIDEO_ON_IMAGE_PATH, jobs_pointer("a 'video' field")))
            if image is not None:
                _fail(
                    Failure(
                        Outcome.INVALID_REQUEST,
                        "send either an 'image' or a 'video' field, not both",
                    )
                )
            return await _video_part(request, state, form.merged(query), video, reference)
        if image is None:
            also = " (or 'video', for a video)" if takes_video else ""
            _fail(
                Failure(
                    Outcome.MISSING_FIELD, f"the multipart field 'image' (a file) is required{also}"
                )
            )
        data = await _read_part(state, image, "image")
        ref = await _read_part(state, reference, "reference") if reference is not None else None
        fields = form.merged(query)
    elif content_type.startswith("video/"):
        if not takes_video:
            _fail(Failure(Outcome.VIDEO_ON_IMAGE_PATH, jobs_pointer("a video/* body")))
        return await _video_body(request, state, query)
    elif content_type.startswith("image/"):
        data = await request.body()
        ref = None
        fields = query
    else:
        body = "image/* (or video/* on /jobs)" if takes_video else "image/*"
        field = "an 'image' or 'video' file" if takes_video else "an 'image' file"
        _fail(
            Failure(
                Outcome.UNSUPPORTED_MEDIA_TYPE,
                f"send multipart/form-data with {field}, or a raw body with Content-Type {body}",
            )
        )
    if isinstance(fields, Failure):
        _fail(fields)
    _refuse_a_video(request, data, takes_video)
    options = fields.resolve(state.settings.default_model, state.settings.max_hints)
    if isinstance(options, Failure):
        _fail(options)
    _name_model(request, state, options.model)
    return Upload(image=data, options=options, reference=ref)


UploadDep = Annotated[Upload | VideoUpload, Depends(read_upload)]


async def _read_part(state: ServiceState, part: UploadFile, name: str) -> bytes:
    """A photo part's bytes: its size is known before it is read (Starlette spooled it), so a
    part over the photo limit is refused without bringing it into memory."""
    limit = state.settings.max_upload_bytes
    if part.size is not None and part.size > limit:
        _fail(
            Failure(
                Outcome.BODY_TOO_LARGE,
                f"the '{name}' part exceeds the {limit}-byte upload limit "
                "(COLORIZE_MAX_UPLOAD_BYTES)",
            )
        )
    return await part.read()


def _refuse_a_video(request: Request, data: bytes, takes_video: bool) -> None:
    """415 `video_goes_to_jobs` for a video sent as a photo (told by its bytes; counted as a
    video upload's answer)."""
    try:
        container = sniff(data[:SNIFF_BYTES], VIDEO_CONTAINERS)
    except VideoError:
        return  # not a video: the image path judges it
    lease = lease_of(request)
    if lease is not None:
        lease.video = True
    what = f"this upload is a video ({container.label}), not a photo"
    if takes_video:
        _fail(
            Failure(
                Outcome.VIDEO_ON_IMAGE_PATH,
                f"{what}: send it as the multipart field 'video' (or a raw video/* body), not "
                "as 'image'",
            )
        )
    _fail(Failure(Outcome.VIDEO_ON_IMAGE_PATH, jobs_pointer(what)))


async def _video_part(
    request: Request,
    state: ServiceState,
    fields: OptionFields | Failure,
    video: UploadFile,
    reference: UploadFile | None,
) -> VideoUpload:
    if isinstance(fields, Failure):
        await video.close()
        _fail(fields)
    options = fields.resolve_video(state.settings.default_model)
    if isinstance(options, Failure):
        _fail(options)
    _name_model(request, state, options.model, video=True)
    ref = await _read_part(state, reference, "reference") if reference is not None else None
    path = state.spool.path("upload")
    try:
        await run_in_threadpool(_copy, video.file, path)
    except BaseException:
        remove(path)
        raise
    finally:
        await video.close()
    return VideoUpload(path, options, ref)


async def _video_body(request: Request, state: ServiceState, query: OptionFields) -> VideoUpload:
    options = query.resolve_video(state.settings.default_model)
    if isinstance(options, Failure):
        _fail(options)
    _name_model(request, state, options.model, video=True)
    path = state.spool.path("upload")
    try:
        await _spool_stream(request, path)
    except BaseException:
        remove(path)
        raise
    return VideoUpload(path, options)


async def _spool_stream(request: Request, path: Path) -> None:
    """Write the request body to `path` as it arrives, a piece at a time (the body middleware
    bounds its bytes and times)."""
    pending = bytearray()
    async with await anyio.open_file(path, "wb") as out:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= SPOOL_WRITE_BYTES:
                await out.write(bytes(pending))
                pending.clear()
        if pending:
            await out.write(bytes(pending))


def _copy(source: IO[bytes], path: Path) -> None:
    source.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(source, out, COPY_BYTES)


def _name_model(request: Request, state: ServiceState, model: str, video: bool = False) -> None:
    lease = lease_of(request)
    if lease is None:
        return
    if video:
        lease.video = True
    if model in state.engines:
        lease.model = model


def _fail(failure: Failure) -> NoReturn:
    raise OutcomeError(failure.outcome, failure.detail, failure.retry_after)
