"""Optional dependencies: missing, broken, or cut short by Ctrl+C are three different things."""

from __future__ import annotations

import importlib

import pytest

from streamer.errors import ModelError, import_optional, interrupted


def fail_with(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def import_module(name: str) -> None:
        raise exc

    monkeypatch.setattr(importlib, "import_module", import_module)


def test_a_missing_package_gets_the_install_hint() -> None:
    with pytest.raises(ModelError, match="^pip install nothing$"):
        import_optional("no_such_package_here", ModelError, "pip install nothing")


def test_a_package_that_fails_to_load_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_with(monkeypatch, ModuleNotFoundError("No module named 'numpy'", name="numpy"))
    with pytest.raises(ModelError, match="^onnxruntime is installed but cannot be loaded: No module named 'numpy'$"):
        import_optional("onnxruntime", ModelError, "pip install onnxruntime")


def test_an_import_cut_short_by_ctrl_c_is_an_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pybind11 module whose set-up a KeyboardInterrupt stops raises ImportError from it."""
    try:
        raise ImportError("initialization failed") from KeyboardInterrupt()
    except ImportError as exc:
        cut_short = exc
    fail_with(monkeypatch, cut_short)
    with pytest.raises(KeyboardInterrupt):
        import_optional("onnxruntime", ModelError, "pip install onnxruntime")


def test_interrupted_follows_causes_and_contexts() -> None:
    try:
        raise ImportError("initialization failed") from KeyboardInterrupt()
    except ImportError as exc:
        caused = exc
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError("cleanup failed")  # raised while handling: the interrupt is its context
    except OSError as exc:
        during = exc
    try:
        raise ImportError("no numpy") from ValueError("y")
    except ImportError as exc:
        unrelated = exc

    assert interrupted(KeyboardInterrupt())
    assert interrupted(caused) and interrupted(during)
    assert not interrupted(unrelated) and not interrupted(None)
