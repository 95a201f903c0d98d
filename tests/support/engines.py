"""A real (tiny) engine whose timing and failures a test scripts: the only stand-in for the
networks in the HTTP suites, used where a test must hold, fail or overload a job on purpose."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from devkit.engines import JitterEngine as JitterEngine  # re-exported: devkit owns it
from service.engines.base import ColorizeRequest, Engine, InvalidRequest, MemoryModel
from service.imaging.lab import lab_to_rgb, rgb_to_lab, to_tensor, to_uint8

MiB = 1024 * 1024


class KillWorker(BaseException):
    """Escapes every per-job handler, as a bug in the worker loop would."""


class ScriptedEngine(Engine):
    """Tints the input's own luminance (a fixed a/b), on the device, with scripted behaviour."""

    needs_weights = False

    def __init__(
        self,
        device: torch.device,
        name: str = "eccv16",
        batchable: bool = True,
        per_pixel_bytes: int = 64,
        per_item_bytes: int = MiB,
        needs_reference: bool = False,
        takes_hints: bool = False,
        cheap: bool = False,
    ) -> None:
        super().__init__(device)
        self.name = name
        self.batchable = batchable
        self.needs_reference = needs_reference
        self.takes_reference = needs_reference
        self.takes_hints = takes_hints
        self.cheap = cheap
        """Tint in uint8 with numpy (milliseconds at any size) instead of through Lab: for
        suites about memory and queues, where a full-resolution Lab pass would only cost time."""
        self._model = MemoryModel(per_item_bytes=per_item_bytes, per_pixel_bytes=per_pixel_bytes)
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.failures: list[BaseException] = []
        """Raised, one per forward pass, before computing."""
        self.hold_bytes = 0
        """Host memory the forward pass keeps while it waits at the gate (moves the usage ratio)."""
        self.batches: list[int] = []
        self.loaded = True
        self.stage_gates = {"prepare": threading.Event(), "finish": threading.Event()}
        """Close one to hold a job in that stage (the device stage has `gate`)."""
        self.reached = {"prepare": threading.Event(), "finish": threading.Event()}
        for gate in self.stage_gates.values():
            gate.set()

    @property
    def memory_model(self) -> MemoryModel:
        return self._model

    def load(self) -> None:
        self.loaded = True

    @property
    def ready(self) -> bool:
        return self.loaded

    def validate(self, request: ColorizeRequest) -> None:
        if self.needs_reference and request.reference is None:
            raise InvalidRequest(f"the {self.name} engine needs a reference image")
        if request.hints and not self.takes_hints:
            raise InvalidRequest(f"engine {self.name!r} does not take hints")
        w, h = request.size
        for hint in request.hints:
            if not (0 <= hint.x < w and 0 <= hint.y < h):
                raise InvalidRequest(f"hint {hint.where} is outside the {w}x{h} image")

    def prepare(self, request: ColorizeRequest) -> object | None:
        self._pause("prepare")
        return super().prepare(request)

    def finish(
        self, request: ColorizeRequest, output: object, chunk_bytes: int | None = None
    ) -> np.ndarray:
        self._pause("finish")
        return super().finish(request, output, chunk_bytes)

    def _pause(self, stage: str) -> None:
        self.reached[stage].set()
        if not self.stage_gates[stage].wait(timeout=60):
            raise RuntimeError(f"test gate of the {stage} stage never opened")

    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        self.batches.append(len(requests))
        held = np.ones(self.hold_bytes, dtype=np.uint8) if self.hold_bytes else None
        self.started.set()
        if not self.gate.wait(timeout=60):
            raise RuntimeError("test gate never opened")
        del held
        if self.failures:
            raise self.failures.pop(0)
        outputs: list[object] = []
        for request in requests:
            if self.cheap:
                tinted = request.image.copy()
                tinted[:, :, 0] //= 2
                tinted[:, :, 2] = 255 - tinted[:, :, 2] // 2
                outputs.append(tinted)
                continue
            lab = rgb_to_lab(to_tensor(request.image, self.device))
            lab[1].fill_(20.0)
            lab[2].fill_(35.0)
            outputs.append(to_uint8(lab_to_rgb(lab)))
        return outputs
