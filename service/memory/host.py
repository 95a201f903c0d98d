"""The host-memory budget: what the service holds in RAM for requests, admitted like the device.

On a CPU device the host and the device are one pool, so one MemoryManager answers for both and
nothing is counted twice. Elsewhere the host gets its own manager over the process's RSS.
"""

from __future__ import annotations

import torch

from service.memory.backends import CpuBackend, backend_for
from service.memory.manager import MemoryManager

CPU = torch.device("cpu")


def device_manager(
    device: torch.device, threshold: float, host_capacity: int | None = None
) -> MemoryManager:
    """The device's MemoryManager; on a CPU its capacity is `host_capacity` when given."""
    return MemoryManager(device, threshold, backend=backend_for(device, host_capacity))


def host_manager(
    device: MemoryManager, threshold: float, host_capacity: int | None = None
) -> MemoryManager:
    """The host's MemoryManager: `device` itself on a CPU, else one over the process's RSS."""
    if device.device.type == "cpu":
        return device
    return MemoryManager(CPU, threshold, backend=CpuBackend(capacity=host_capacity))
