"""Small questions about paths on this machine."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (after resolving links), as far as can be told."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def overwritten(outputs: Iterable[str | None], source: Path | None) -> str | None:
    """The first of ``outputs`` (None: not written) that is the file ``source``, which writing
    it would overwrite; None when there is none, or no local file is read."""
    if source is None:
        return None
    return next((out for out in outputs if out and same_file(Path(out), source)), None)
