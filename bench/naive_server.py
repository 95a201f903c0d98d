"""The baseline: a colorization server the way people write one today.

A tiny FastAPI app whose request handler decodes the upload, calls the same engine and encodes
the answer. No queue, no batching, no memory admission: FastAPI runs the synchronous handler in
its thread pool (40 threads), so concurrent requests run concurrent forward passes on one device.
Same engines and weights as the service, same PNG encoder, served by uvicorn the same way.

Run: `python -m bench.naive_server --port 8001` (COLORIZE_WEIGHTS_DIR and COLORIZE_DEVICE are
read as the service reads them).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, Response, UploadFile
from PIL import Image

from service.device import resolve_device
from service.engines.base import ColorizeRequest, Engine, EngineNotReady
from service.engines.catalog import ENGINE_NAMES
from service.engines.registry import create_engine
from service.imaging.encode import encode_image
from service.settings import load_settings

ENGINES: dict[str, Engine] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = load_settings()
    device = resolve_device(settings.device)
    for name in ENGINE_NAMES:
        engine = create_engine(name, device, settings.weights_dir)
        try:
            engine.load()
        except EngineNotReady:
            continue
        ENGINES[name] = engine
    yield
    ENGINES.clear()


app = FastAPI(lifespan=lifespan)


def _rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@app.post("/colorize")
def colorize(
    image: Annotated[UploadFile, File()],
    model: Annotated[str, Form()] = "eccv16",
    reference: Annotated[UploadFile | None, File()] = None,
) -> Response:
    ref = _rgb(reference.file.read()) if reference is not None else None
    request = ColorizeRequest(_rgb(image.file.read()), reference=ref)
    rgb = ENGINES[model].run([request])[0]
    return Response(encode_image(rgb, "png"), media_type="image/png")


@app.get("/healthz")
def healthz() -> dict[str, list[str]]:
    return {"engines": sorted(ENGINES)}


def main() -> None:
    parser = argparse.ArgumentParser(description="the naive baseline server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", workers=1)


if __name__ == "__main__":
    main()
