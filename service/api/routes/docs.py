"""What the OpenAPI document says about errors and bodies, shared by the routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.imaging.encode import CONTENT_TYPES


class ErrorBody(BaseModel):
    error: str
    detail: str


_DESCRIPTIONS = {
    400: "Malformed multipart or a bad field (e.g. hints not valid JSON, a field given twice).",
    401: "API key required and missing or wrong.",
    404: "Unknown job or model.",
    408: "The request body stalled, or arrived slower than the minimum rate.",
    409: "The job is not in a state that allows this.",
    413: "Body over the byte limit, image over the pixel limit, a video over a COLORIZE_VIDEO_* "
    "limit, or a job that can never fit the memory budget (the detail names the limit).",
    415: "Not an allowed image format (the detail lists the allowed ones), not a video container "
    "we accept (MP4, MOV, WebM, MKV), or a video sent where a photo is expected "
    "(`video_goes_to_jobs`: post videos to /jobs).",
    422: "Undecodable, truncated or empty image or video; a still image sent as a video; missing "
    "field; unknown model; reference missing or grayscale; hint outside the image.",
    503: "Busy (queue full, memory not admitted in time), weights not installed, shutting down "
    "or worker dead. Retry-After only where waiting helps.",
    504: "The job exceeded its time limit.",
    507: "Out of device memory during the job, after a retry with a smaller batch or chunk.",
    431: "Request line and headers still unfinished after 16 KiB (a very long URL): refused by "
    "the HTTP layer before the app sees the request. Send long values as form fields.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody, "description": _DESCRIPTIONS[c]} for c in codes}


UPLOAD_ERRORS = errors(400, 401, 408, 413, 415, 422, 503)
HTTP_LAYER_ERRORS = errors(431)
"""What any operation can answer before the app sees the request (service/api/http11.py)."""
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The colour image, same size as the input.",
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}} for t in CONTENT_TYPES.values()
        },
    }
}
RAW_BODY = {
    "requestBody": {
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}
JOB_BODY = {
    "requestBody": {
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "video/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
"""/jobs takes a raw photo or a raw video (MP4, MOV, WebM, MKV: told by its bytes)."""
VIDEO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The colour image, or for a video the colour MP4 (H.264, yuv420p) with "
        "the source's frames, timing and audio.",
        "content": {
            **{
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in CONTENT_TYPES.values()
            },
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
