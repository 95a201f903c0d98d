"""Why a reservation was refused: never (413) or not now (503)."""

from __future__ import annotations


class AdmissionError(Exception):
    """A memory reservation was refused."""

    def __init__(self, message: str, requested: int, budget: int) -> None:
        super().__init__(message)
        self.requested = requested
        self.budget = budget


class NeverFits(AdmissionError):
    """The request exceeds the whole job budget: waiting cannot help."""


class MemoryRefused(AdmissionError):
    """The request would fit an idle device, but not now, and the wait ran out."""
