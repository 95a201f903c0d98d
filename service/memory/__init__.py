"""Device memory: measurement, admission budget, cache clearing and garbage collection."""

from service.memory import heap
from service.memory.backends import (
    CpuBackend,
    CudaBackend,
    DeviceBackend,
    DeviceReading,
    MpsBackend,
)
from service.memory.errors import AdmissionError, MemoryRefused, NeverFits
from service.memory.manager import MemoryManager, MemorySnapshot, MemoryStats
from service.memory.reservation import Measurement, Reservation

__all__ = [
    "AdmissionError",
    "CpuBackend",
    "CudaBackend",
    "DeviceBackend",
    "DeviceReading",
    "Measurement",
    "MemoryManager",
    "MemoryRefused",
    "MemorySnapshot",
    "MemoryStats",
    "MpsBackend",
    "NeverFits",
    "Reservation",
    "heap",
]
