"""An upload as the API receives it: a multipart form (`image`, `reference` and option fields) or
a raw `image/*` body, with options from the form and the query string alike."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import Depends, File, Form, Query, Request, UploadFile

from service.api.errors import OutcomeError
from service.api.lease import lease_of
from service.api.state import ServiceState
from service.outcomes import Failure, Outcome
from service.worker.admission import Upload
from service.worker.options import OptionFields


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
) -> Upload:
    """Accept `multipart/form-data` (fields) or a raw `image/*` body (query parameters); on a
    form, query parameters fill the fields it leaves out."""
    state: ServiceState = request.app.state.svc
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        if image is None:
            _fail(
                Failure(Outcome.MISSING_FIELD, "the multipart field 'image' (a file) is required")
            )
        data = await image.read()
        ref = await reference.read() if reference is not None else None
        fields = form.merged(query)
    elif content_type.startswith("image/"):
        data = await request.body()
        ref = None
        fields = query
    else:
        _fail(
            Failure(
                Outcome.UNSUPPORTED_MEDIA_TYPE,
                "send multipart/form-data with an 'image' file, "
                "or a raw body with Content-Type image/*",
            )
        )
    if isinstance(fields, Failure):
        _fail(fields)
    options = fields.resolve(state.settings.default_model, state.settings.max_hints)
    if isinstance(options, Failure):
        _fail(options)
    lease = lease_of(request)
    if lease is not None and options.model in state.engines:
        lease.model = options.model
    return Upload(image=data, options=options, reference=ref)


UploadDep = Annotated[Upload, Depends(read_upload)]


def _fail(failure: Failure) -> NoReturn:
    raise OutcomeError(failure.outcome, failure.detail, failure.retry_after)
