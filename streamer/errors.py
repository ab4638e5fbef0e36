"""Exception hierarchy.

Every error streamer raises on purpose derives from :class:`StreamerError` and from the
builtin that matches its meaning, so callers can catch either. The CLI turns a
``StreamerError`` into one line on stderr and exit code 2; anything else is a bug.
"""

from __future__ import annotations

import builtins
import importlib
from types import ModuleType


class StreamerError(Exception):
    """Base class of every error streamer raises on purpose."""


class ConfigError(StreamerError, builtins.ValueError):
    """A pipeline file, a CLI option or an API argument is invalid."""


class SourceOpenError(StreamerError, builtins.OSError):
    """A source (file, folder, camera, URL) cannot be opened or decoded."""


class SourceReadError(StreamerError, builtins.OSError):
    """A source failed while it was being read."""


class AssetError(StreamerError, builtins.LookupError):
    """A named model or sample cannot be found (for example its package is missing)."""


class ModelError(StreamerError, builtins.ValueError):
    """A model file cannot be loaded or produces outputs of an unsupported layout."""


class SinkError(StreamerError, builtins.OSError):
    """An output (video file, JSONL file, window, server) cannot be opened or written."""


class StageError(StreamerError, builtins.RuntimeError):
    """A pipeline stage raised; ``stage`` names it and ``__cause__`` holds the original error."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        self.stage = stage
        self.cause = cause
        detail = str(cause) or type(cause).__name__
        super().__init__(f"stage '{stage}' failed: {detail}")


def interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a Ctrl+C, or an error one turned into. An extension module whose
    set-up a KeyboardInterrupt cuts short raises ImportError with the interrupt as its cause."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def import_optional(name: str, error: type[StreamerError], missing: str) -> ModuleType:
    """Module ``name`` of an optional dependency. Not installed: ``error(missing)``. Installed
    but failing to load (a broken wheel, a missing system library): ``error`` quoting why."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from None
        top = name.partition(".")[0]
        if isinstance(exc, ModuleNotFoundError) and exc.name in (top, name):
            raise error(missing) from None
        why = str(exc).strip().splitlines() or [type(exc).__name__]
        raise error(f"{top} is installed but cannot be loaded: {why[0]}") from None
