"""``--device auto`` without PyTorch where no accelerator can be there."""

from __future__ import annotations

import pytest

import streamer.models as models
from streamer.errors import ConfigError


@pytest.mark.parametrize(
    ("device", "driver", "accelerated_build", "expected"),
    [
        ("cpu", True, True, "cpu"),
        ("cuda:1", False, False, "cuda:1"),
        ("auto", False, True, "cpu"),  # no driver: PyTorch is never asked
        ("auto", True, False, "cpu"),  # a driver, but PyTorch is a CPU-only build
    ],
)
def test_resolve_device(monkeypatch: pytest.MonkeyPatch, device: str, driver: bool, accelerated_build: bool,
                        expected: str) -> None:
    monkeypatch.setattr(models, "_cuda_driver_present", lambda: driver)
    monkeypatch.setattr(models, "_torch_build_has_accelerator", lambda: accelerated_build)
    monkeypatch.setattr(models.sys, "platform", "linux")
    assert models.resolve_device(device) == expected


def test_invalid_device_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"invalid device 'gpu', expecting one of \['auto', 'cpu'"):
        models.resolve_device("gpu")


def test_this_torch_build_is_read_without_importing_it() -> None:
    import importlib.metadata

    version = importlib.metadata.version("torch")
    assert models._torch_build_has_accelerator() == ("+cpu" not in version)
