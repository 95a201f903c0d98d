"""The engines by name; each module is imported only when its engine is built."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch

from service.engines.base import Engine, RenderLimits
from service.engines.fast import FastPath
from service.settings import MIN_RENDER_SIZE, RENDER_SIZE_MULTIPLE, Settings

ENGINE_NAMES = ("eccv16", "siggraph17", "exemplar", "ddcolor", "ddcolor-artistic", "ddcolor-tiny")

_CLASSES = {
    "eccv16": ("service.engines.eccv16", "Eccv16Engine"),
    "siggraph17": ("service.engines.siggraph17", "Siggraph17Engine"),
    "exemplar": ("service.engines.exemplar", "ExemplarEngine"),
    "ddcolor": ("service.engines.ddcolor.engine", "DDColorLarge"),
    "ddcolor-artistic": ("service.engines.ddcolor.engine", "DDColorArtistic"),
    "ddcolor-tiny": ("service.engines.ddcolor.engine", "DDColorTiny"),
}


def render_limits(settings: Settings) -> RenderLimits:
    """The render sizes the DDColor engines accept (COLORIZE_DDCOLOR_RENDER_SIZE and _MAX_)."""
    return RenderLimits(
        default=settings.ddcolor_render_size,
        maximum=settings.max_render_size,
        minimum=MIN_RENDER_SIZE,
        multiple=RENDER_SIZE_MULTIPLE,
    )


class UnknownEngine(KeyError):
    """No engine has that name."""


def create_engine(
    name: str,
    device: torch.device,
    weights_dir: Path,
    fast: FastPath | None = None,
    render: RenderLimits | None = None,
) -> Engine:
    """Build (but do not load) the engine called `name`; `fast` applies to the networks,
    `render` to the engines that take a render size (DDColor)."""
    try:
        module_name, class_name = _CLASSES[name]
    except KeyError:
        raise UnknownEngine(f"unknown model {name!r}; choose from {list(ENGINE_NAMES)}") from None
    cls = getattr(import_module(module_name), class_name)
    engine: Engine
    if not cls.needs_weights:
        engine = cls(device)
    elif cls.takes_render_size:
        engine = cls(device, weights_dir, fast, render)
    else:
        engine = cls(device, weights_dir, fast)
    return engine
