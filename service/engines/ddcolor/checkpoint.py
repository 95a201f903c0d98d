"""DDColor checkpoint files: strict loading of the published layout.

The published files (`ddcolor_modelscope.pth`, `ddcolor_artistic.pth`, `ddcolor_paper.pth`,
`ddcolor_paper_tiny.pth`) are BasicSR saves, `{'params': state_dict}`. Besides the network's
keys they carry the ConvNeXt classifier head `encoder.arch.head_cls` (a Linear from the last
stage to 4 classes in the ModelScope ConvNeXt the models were trained with), which the published
architecture no longer has; exactly those two keys may be extra. The `mean`/`std` buffers may
be absent (they are ImageNet constants, filled in). Every other difference is an error that
lists the keys, because upstream's `load_state_dict(strict=False)` would otherwise run a
half-random network without a word.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from service.engines.ddcolor.network import DDColor, Variant, normalisation_buffers
from service.engines.weights import layout_problems

PARAMS_KEY = "params"
"""BasicSR saves the network's state dict under this key."""
HEAD_CLS_KEYS = ("encoder.arch.head_cls.weight", "encoder.arch.head_cls.bias")
"""Unused by the network, present in the published files: accepted and dropped."""
CONSTANT_KEYS = ("mean", "std")
"""The ImageNet normalisation buffers: constants, so a file without them still loads."""


class CheckpointError(ValueError):
    """A DDColor checkpoint cannot be used."""


class CheckpointCorrupt(CheckpointError):
    """The file is not a readable checkpoint of tensors."""


class CheckpointMismatch(CheckpointError):
    """The state dict's keys or shapes differ from the network's."""


def expected_state(variant: Variant) -> dict[str, torch.Tensor]:
    """The network's keys and shapes (meta tensors: no memory, no initialisation time)."""
    with torch.device("meta"):
        return DDColor(variant).state_dict()


def check_state_dict(state: Mapping[str, torch.Tensor], variant: Variant, source: str) -> None:
    """Raise CheckpointMismatch listing missing, unexpected and mis-shaped keys of `state`."""
    problems = layout_problems(state, expected_state(variant), CONSTANT_KEYS, HEAD_CLS_KEYS)
    if problems:
        raise CheckpointMismatch(f"{source} does not fit DDColor-{variant}: " + "; ".join(problems))


def load_checkpoint(path: Path, variant: Variant) -> dict[str, torch.Tensor]:
    """Read a checkpoint on the CPU: the state dict `DDColor(variant)` loads with strict=True.

    Accepts BasicSR's `{'params': state_dict}` and a bare state dict; drops the unused
    classifier head; fills in `mean`/`std` if a file lacks them.
    """
    try:
        # weights_only: a checkpoint is data; never let it run code through pickle.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointCorrupt(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if isinstance(loaded, Mapping) and PARAMS_KEY in loaded:
        loaded = loaded[PARAMS_KEY]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointCorrupt(f"{path} does not hold a state dict of tensors")
    state = dict(loaded)
    check_state_dict(state, variant, str(path))
    for key in HEAD_CLS_KEYS:
        state.pop(key, None)
    for key, value in normalisation_buffers().items():
        state.setdefault(key, value)
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
