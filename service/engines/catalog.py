"""The engines by name: the one place a model name is written.

It imports nothing (no torch, no engine), so that settings can check COLORIZE_DEFAULT_MODEL and
the command line can offer its choices without loading an engine's module; the registry
imports an engine's module only when that engine is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

ENGINES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "eccv16": ("service.engines.eccv16", "Eccv16Engine"),
        "siggraph17": ("service.engines.siggraph17", "Siggraph17Engine"),
        "exemplar": ("service.engines.exemplar", "ExemplarEngine"),
        "ddcolor": ("service.engines.ddcolor.engine", "DDColorLarge"),
        "ddcolor-artistic": ("service.engines.ddcolor.engine", "DDColorArtistic"),
        "ddcolor-tiny": ("service.engines.ddcolor.engine", "DDColorTiny"),
    }
)
"""Each engine's name -> (module, class) of its implementation."""

ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)
"""Every engine's name, in the order the service builds them and lists them (/v1/models)."""
