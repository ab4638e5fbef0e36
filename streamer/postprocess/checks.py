"""Input checks shared by the checked decoder entry points."""

from __future__ import annotations

import numpy as np

from streamer.errors import ModelError

_REAL = (np.floating, np.integer, np.bool_)


def as_float32(raw: object, what: str) -> np.ndarray:
    """``raw`` as a C-contiguous float32 array, or ``ModelError`` saying what it was instead."""
    if not isinstance(raw, np.ndarray):
        raise ModelError(f"{what} must be a numpy array, but got {type(raw).__name__}")
    if not issubclass(raw.dtype.type, _REAL):
        raise ModelError(f"{what} must hold real numbers, but got dtype {raw.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf, like the model's
        return np.ascontiguousarray(raw, dtype=np.float32)
