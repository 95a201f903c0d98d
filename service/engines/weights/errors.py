"""What can go wrong with a checkpoint: missing, unreadable, misfit, or not fetched."""

from __future__ import annotations


class WeightsError(Exception):
    """A checkpoint is missing, unreadable, does not fit its network, or could not be fetched."""


class UnknownModel(WeightsError):
    """The name has no entry in the weights manifest."""


class WeightsNotFound(WeightsError):
    """The checkpoint is not in the weights directory."""


class WeightsCorrupt(WeightsError):
    """The file is not a readable state dict of tensors."""


class WeightsMismatch(WeightsError):
    """The state dict's keys or shapes differ from the network's."""


class DownloadError(WeightsError):
    """The URL could not be reached or answered with an HTTP error."""


class IntegrityError(DownloadError):
    """The downloaded bytes have the wrong size or SHA-256."""


class StorageError(WeightsError):
    """Writing the file failed (disk full, read-only directory, ...)."""
