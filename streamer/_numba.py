"""Numba set-up shared by every kernel module; import it before ``numba``.

Numba's ``cache=True`` writes compiled kernels next to the module. Where the package folder
is read-only (a system-wide install), Numba would silently recompile every run, costing
seconds at start-up; in that case the cache moves to the user's cache folder.
"""

from __future__ import annotations

import os
from pathlib import Path

if "NUMBA_CACHE_DIR" not in os.environ:
    _package = Path(__file__).resolve().parent
    if not os.access(_package, os.W_OK):
        _base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["NUMBA_CACHE_DIR"] = str(_base / "streamer" / "numba")
