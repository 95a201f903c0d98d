"""Measuring the peak bytes of live tensors, op by op, on any device."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Peak bytes of tensor storages created inside the block, counted while they are alive.

    Every op's outputs pass through here; a storage is counted once (views share it) and uncounted
    when it is freed. Storages an op receives that were made before the block are marked as seen
    at no cost, so a view of an outside tensor is not mistaken for an allocation. On a GPU this is
    what `torch.cuda.max_memory_allocated` reports, less kernel workspaces.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        for tensor in tree_leaves((args, kwargs)):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor.untyped_storage(), counted=False)
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor.untyped_storage(), counted=True)
        return out

    def _track(self, storage: torch.UntypedStorage, counted: bool) -> None:
        key = id(storage)
        if key in self._sizes:
            return
        nbytes = storage.nbytes() if counted else 0
        self._sizes[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)
