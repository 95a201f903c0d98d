"""Reading eccv16 and siggraph17 checkpoints strictly: every key and shape must fit the network.

Loading checks key names and shapes but not the hash, so a generated checkpoint
(`devkit.checkpoints`) works for tests and demos; fetching (download.py) checks size and SHA-256.
The DDColor checkpoints are located by the manifest but read by their own package, which
reports misfits through `layout_problems`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from service.engines.networks import ECCV16Net, SIGGRAPH17Net
from service.engines.weights.errors import UnknownModel, WeightsCorrupt, WeightsMismatch
from service.engines.weights.manifest import OFFICIAL, WeightsFile, fix_command, locate

MAX_LISTED_KEYS = 8
"""A mismatch message names at most this many keys per kind, then says how many more."""

NETWORKS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {"eccv16": ECCV16Net, "siggraph17": SIGGRAPH17Net}
)
"""The networks whose checkpoints `load_state_dict` reads (DDColor's has its own reader)."""


def check_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise WeightsMismatch listing missing, unexpected and mis-shaped keys of `state`."""
    problems = layout_problems(state, expected)
    if problems:
        raise WeightsMismatch(f"{source} does not fit the network: " + "; ".join(problems))


def layout_problems(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    may_lack: Collection[str] = (),
    may_add: Collection[str] = (),
) -> list[str]:
    """Missing, unexpected and mis-shaped keys of `state`, each kind listed briefly.

    `may_lack` keys may be absent and `may_add` keys may be extra (a published file's leftovers).
    """
    missing = [k for k in expected if k not in state and k not in may_lack]
    unexpected = [k for k in state if k not in expected and k not in may_add]
    misshaped = [
        f"{k} (file {tuple(state[k].shape)}, network {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    return [
        f"{label}: {_listing(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        )
        if keys
    ]


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return f"{shown} (and {more} more)" if more > 0 else shown


def load_state_dict(
    model: str,
    weights_dir: Path,
    manifest: Mapping[str, WeightsFile] = OFFICIAL,
) -> dict[str, torch.Tensor]:
    """Read `model`'s checkpoint on the CPU and check it fits the network's keys and shapes.

    eccv16 and siggraph17 only (NETWORKS): a DDColor checkpoint has another layout and is read
    by its own engine package.
    """
    network = network_for(model)
    path = locate(model, weights_dir, manifest)
    fix = f"run `{fix_command(model, path.parent)}` to replace it"
    try:
        # weights_only: a checkpoint is data; never let it run code through pickle.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsCorrupt(
            f"{model} weights {path.name!r} in {path.parent} are unreadable "
            f"({type(exc).__name__}: {_first_line(exc)}); {fix}"
        ) from exc
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise WeightsCorrupt(
            f"{model} weights {path.name!r} in {path.parent} are not a state dict of tensors; {fix}"
        )
    state = dict(loaded)
    # Built on the meta device: shapes only, no memory, no time spent on random init.
    with torch.device("meta"):
        expected = network().state_dict()
    try:
        check_state_dict(state, expected, f"{model} weights {path}")
    except WeightsMismatch as exc:
        raise WeightsMismatch(f"{exc}; {fix}") from None
    return state


def network_for(model: str) -> type[nn.Module]:
    """The network class of an eccv16 or siggraph17 checkpoint; UnknownModel for any other."""
    try:
        return NETWORKS[model]
    except KeyError:
        raise UnknownModel(
            f"no network for model {model!r} here; the fixed-input networks cover "
            f"{', '.join(NETWORKS)} checkpoints only"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
