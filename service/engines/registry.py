"""Engines built by name (service/engines/catalog.py); each module is imported only when its
engine is built."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import torch

from service.engines.base import Engine, RenderLimits
from service.engines.catalog import ENGINE_NAMES, ENGINES
from service.engines.fast import FastPath
from service.settings import MIN_RENDER_SIZE, RENDER_SIZE_MULTIPLE, Settings


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


def engine_class(name: str) -> type[Engine]:
    """The class of the engine called `name` (its module imported now); UnknownEngine if none."""
    try:
        module_name, class_name = ENGINES[name]
    except KeyError:
        raise UnknownEngine(f"unknown model {name!r}; choose from {list(ENGINE_NAMES)}") from None
    cls: type[Engine] = getattr(import_module(module_name), class_name)
    return cls


def create_engine(
    name: str,
    device: torch.device,
    weights_dir: Path,
    fast: FastPath | None = None,
    render: RenderLimits | None = None,
) -> Engine:
    """Build (but do not load) the engine called `name`; `fast` applies to the networks,
    `render` to the engines that take a render size (DDColor)."""
    cls = engine_class(name)
    # Constructors take what their engine needs, which its flags say.
    build: Callable[..., Engine] = cls
    if not cls.needs_weights:
        return build(device)
    if cls.takes_render_size:
        return build(device, weights_dir, fast, render)
    return build(device, weights_dir, fast)
