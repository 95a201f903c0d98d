"""What a benchmark run measures: its sections, cells and request counts (full and --quick)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.inputs import MIXED
from service.settings import Settings

Size = int | str

SECTIONS = ("concurrency", "size", "engine", "batch", "wait")
"""Load-test sections; `direct` (the in-process baseline) runs beside the first three."""


SWEEP_WAIT_MS = 5.0
"""The batching window while the batch size is swept."""
SWEEP_BATCH = 8
"""The batch limit while the window is swept (with a limit of 1 the worker never waits)."""


def default_batching() -> tuple[int | None, float | None]:
    """The service's COLORIZE_BATCH_MAX_SIZE and _WAIT_MS defaults (None: not a plain number)."""
    fields = Settings.model_fields
    size, wait = fields["batch_max_size"].default, fields["batch_max_wait_ms"].default
    return (
        size if isinstance(size, int) else None,
        float(wait) if isinstance(wait, int | float) else None,
    )


@dataclass(frozen=True)
class Cell:
    """One measurement: `requests` uploads of `size` to `engine` from `concurrency` clients."""

    section: str
    engine: str
    size: Size
    concurrency: int
    requests: int


@dataclass(frozen=True)
class Plan:
    """Every cell of a run; sweeps vary one setting of our server at fixed load."""

    name: str
    models: tuple[str, ...]
    """Checkpoints to generate (the exemplar engine needs none)."""
    cells: tuple[Cell, ...]
    """Run against both servers (ours and naive), with a direct baseline per (engine, size)."""
    direct_repeats: dict[Size, int]
    batch_sizes: tuple[int, ...]
    batch_cell: Cell
    """The COLORIZE_BATCH_MAX_SIZE sweep's load, at COLORIZE_BATCH_MAX_WAIT_MS = SWEEP_WAIT_MS."""
    waits_ms: tuple[float, ...]
    wait_cell: Cell
    """The COLORIZE_BATCH_MAX_WAIT_MS sweep's load, at COLORIZE_BATCH_MAX_SIZE = SWEEP_BATCH."""
    max_cell_seconds: float
    warm_up: bool
    """Send one request per engine to each server before its first cell (not counted)."""

    @property
    def direct_groups(self) -> list[tuple[str, Size]]:
        """(engine, size) pairs measured in-process, in the order they first appear."""
        seen: list[tuple[str, Size]] = []
        for cell in self.cells:
            if (cell.engine, cell.size) not in seen:
                seen.append((cell.engine, cell.size))
        return seen


def _requests(size: Size, concurrency: int) -> int:
    # Four rounds of every client at small sizes (at least 8 requests); 2048 sends a 12 MB PNG
    # back each time, so only 4; the mixed set twice through its 8 photos.
    if size == 2048:
        return max(4, concurrency)
    if size == MIXED:
        return max(16, concurrency)
    return max(8, 4 * concurrency)


def full_plan() -> Plan:
    """About five minutes on an idle 2-core CPU (each cell stops early past 40 s under load)."""
    cells: list[Cell] = []
    for c in (1, 2, 4, 8):
        cells.append(Cell("concurrency", "eccv16", 512, c, _requests(512, c)))
    for size in (256, 1024, 2048, MIXED):
        cells.append(Cell("size", "eccv16", size, 2, _requests(size, 2)))
    for c in (1, 4):
        cells.append(Cell("engine", "siggraph17", 256, c, _requests(256, c)))
    cells.append(Cell("engine", "exemplar", 512, 2, _requests(512, 2)))
    return Plan(
        name="full",
        models=("eccv16", "siggraph17"),
        cells=tuple(cells),
        direct_repeats={256: 4, 512: 4, 1024: 4, 2048: 2, MIXED: 8},
        batch_sizes=(1, 2, 4, 8),
        batch_cell=Cell("batch", "eccv16", 256, 8, 32),
        waits_ms=(0.0, 5.0, 20.0),
        wait_cell=Cell("wait", "eccv16", 256, 1, 8),
        max_cell_seconds=40.0,
        warm_up=True,
    )


def quick_plan() -> Plan:
    """Every section on tiny inputs with a handful of requests: for tests, well under a minute."""
    return Plan(
        name="quick",
        models=("eccv16",),
        cells=(
            Cell("concurrency", "eccv16", 64, 2, 2),
            Cell("engine", "exemplar", 64, 1, 1),
        ),
        direct_repeats={64: 1},
        batch_sizes=(1, SWEEP_BATCH),
        batch_cell=Cell("batch", "eccv16", 64, 2, 2),
        waits_ms=(0.0, SWEEP_WAIT_MS),
        wait_cell=Cell("wait", "eccv16", 64, 1, 1),
        max_cell_seconds=60.0,
        warm_up=False,
    )
