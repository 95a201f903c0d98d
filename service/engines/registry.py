"""The engines by name; each module is imported only when its engine is built."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch

from service.engines.base import Engine
from service.engines.fast import FastPath

ENGINE_NAMES = ("eccv16", "siggraph17", "exemplar")

_CLASSES = {
    "eccv16": ("service.engines.eccv16", "Eccv16Engine"),
    "siggraph17": ("service.engines.siggraph17", "Siggraph17Engine"),
    "exemplar": ("service.engines.exemplar", "ExemplarEngine"),
}


class UnknownEngine(KeyError):
    """No engine has that name."""


def create_engine(
    name: str, device: torch.device, weights_dir: Path, fast: FastPath | None = None
) -> Engine:
    """Build (but do not load) the engine called `name`; `fast` applies to the networks."""
    try:
        module_name, class_name = _CLASSES[name]
    except KeyError:
        raise UnknownEngine(f"unknown model {name!r}; choose from {list(ENGINE_NAMES)}") from None
    cls = getattr(import_module(module_name), class_name)
    engine: Engine = cls(device, weights_dir, fast) if cls.needs_weights else cls(device)
    return engine
