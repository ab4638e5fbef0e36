from __future__ import annotations

import numpy as np
import pytest

from streamer.preprocess import letterbox, letterbox_into, letterbox_params, letterbox_reference


@pytest.mark.parametrize(
    ("source_hw", "rect", "want_input", "want_pad", "want_scale"),
    [
        ((272, 640), True, (288, 640), (0, 8), 1.0),  # bikes: rect mode pads 16 rows, 8 on top
        ((272, 640), False, (640, 640), (0, 184), 1.0),
        ((144, 176), True, (544, 640), (0, 10), 640 / 176),  # carphone: scaled up, 524 rows + 20
        ((720, 1280), True, (384, 640), (0, 12), 0.5),  # bigbuckbunny
        ((1080, 1920), True, (384, 640), (0, 12), 1 / 3),
        ((640, 640), True, (640, 640), (0, 0), 1.0),
        ((500, 300), True, (640, 384), (0, 0), 1.28),
    ],
)
def test_params_follow_ultralytics(source_hw, rect, want_input, want_pad, want_scale) -> None:  # type: ignore[no-untyped-def]
    lb = letterbox_params(source_hw, 640, rect=rect)
    assert lb.input_hw == want_input
    assert (lb.pad_x, lb.pad_y) == want_pad
    assert lb.scale == pytest.approx(want_scale)


@pytest.mark.parametrize("seed", range(20))
def test_kernel_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(8, 400)), int(rng.integers(8, 400))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for rect in (True, False):
        lb = letterbox_params((h, w), int(rng.choice([160, 320, 640])), rect=rect)
        out = letterbox_into(image, lb, np.empty((3, *lb.input_hw), np.float32))
        np.testing.assert_array_equal(out, letterbox_reference(image, lb))


def test_pad_value_and_channel_order() -> None:
    image = np.zeros((272, 640, 3), np.uint8)
    image[..., 0] = 255  # pure blue in BGR
    x, lb = letterbox(image, 640)
    assert x.shape == (3, 288, 640) and x.dtype == np.float32
    assert x[:, 0, 0] == pytest.approx([114 / 255] * 3)  # padding row
    assert x[:, 8, 0].tolist() == [0.0, 0.0, 1.0]  # RGB order: blue is the last channel


def test_rejects_wrong_shapes() -> None:
    lb = letterbox_params((10, 10), 32)
    with pytest.raises(ValueError, match="image must be"):
        letterbox_into(np.zeros((10, 10), np.uint8), lb, np.empty((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        letterbox_into(np.zeros((10, 10, 3), np.uint8), lb, np.empty((3, 16, 16), np.float32))
