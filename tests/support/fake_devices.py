"""Stand-ins for `torch.cuda` and `torch.mps` that report what a device would; no logic of ours."""

from __future__ import annotations

GiB = 1024**3


class FakeCuda:
    """Answers the torch.cuda memory calls for a device with `total` bytes and other tenants."""

    def __init__(self, total: int = 16 * GiB, others: int = 0) -> None:
        self.total = total
        self.others = others
        self.allocated = 0
        self.reserved = 0
        self.peak = 0
        self.empty_cache_calls = 0

    def alloc(self, nbytes: int) -> None:
        self.allocated += nbytes
        self.reserved = max(self.reserved, self.allocated)
        self.peak = max(self.peak, self.allocated)

    def free(self, nbytes: int) -> None:
        self.allocated -= nbytes  # the caching allocator keeps the block reserved

    def mem_get_info(self, index: int = 0) -> tuple[int, int]:
        return self.total - self.others - self.reserved, self.total

    def memory_allocated(self, index: int = 0) -> int:
        return self.allocated

    def memory_reserved(self, index: int = 0) -> int:
        return self.reserved

    def max_memory_allocated(self, index: int = 0) -> int:
        return self.peak

    def reset_peak_memory_stats(self, index: int = 0) -> None:
        self.peak = self.allocated

    def empty_cache(self) -> None:
        self.empty_cache_calls += 1
        self.reserved = self.allocated


class FakeMps:
    """Answers the torch.mps memory calls."""

    def __init__(self, recommended: int = 8 * GiB) -> None:
        self.recommended = recommended
        self.current = 0
        self.driver = 0
        self.empty_cache_calls = 0

    def recommended_max_memory(self) -> int:
        return self.recommended

    def current_allocated_memory(self) -> int:
        return self.current

    def driver_allocated_memory(self) -> int:
        return self.driver

    def empty_cache(self) -> None:
        self.empty_cache_calls += 1
        self.driver = self.current
