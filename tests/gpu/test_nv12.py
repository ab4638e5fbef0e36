"""NV12 → letterboxed input against OpenCV's conversion and the CPU letterbox, on CPU tensors.

The reference is the chain a BGR frame goes through today: ``cv2.cvtColor(COLOR_YUV2BGR_NV12)``
then ``letterbox_reference`` (``cv2.resize`` INTER_LINEAR, grey-114 padding, RGB, /255).
Real frames come from the sample clips decoded by PyAV as NV12, as NVDEC hands them over.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import torch

from streamer import assets
from streamer.gpu.nv12 import Nv12Image, Nv12Letterbox, linear_taps
from streamer.preprocess import PAD_VALUE, letterbox_params, letterbox_reference

ONE_LEVEL = 1 / 255


def decoded_nv12(sample: str, indices: tuple[int, ...]) -> list[np.ndarray]:
    """Packed NV12 arrays (H·3/2, W) of frames ``indices`` of a sample clip."""
    wanted = set(indices)
    out = []
    with av.open(str(assets.sample_path(sample))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out.append(frame.to_ndarray(format="nv12"))
            if i >= max(indices):
                break
    assert len(out) == len(indices)
    return out


def bgr_to_nv12(bgr: np.ndarray) -> np.ndarray:
    """Packed NV12 of a BGR picture (even size), through OpenCV's I420."""
    h, w = bgr.shape[:2]
    flat = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).ravel()  # Y, then U and V planes (H/2, W/2)
    quarter = h * w // 4
    u = flat[h * w : h * w + quarter].reshape(h // 2, w // 2)
    v = flat[h * w + quarter :].reshape(h // 2, w // 2)
    return np.concatenate([flat[: h * w].reshape(h, w), np.stack([u, v], axis=-1).reshape(h // 2, w)])


def reference(packed: np.ndarray, lb: object) -> np.ndarray:
    return letterbox_reference(cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_NV12), lb)  # type: ignore[arg-type]


def assert_within_one_level(got: torch.Tensor, want: np.ndarray) -> None:
    diff = np.abs(got.float().numpy() - want)
    assert got.shape == want.shape
    assert diff.max() <= ONE_LEVEL, f"max diff {diff.max() * 255:.3f} grey levels"
    assert diff.mean() <= 0.3 * ONE_LEVEL, f"mean diff {diff.mean() * 255:.3f} grey levels"


@pytest.mark.parametrize("seed", range(4))
def test_colour_conversion_is_opencvs_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 2 * int(rng.integers(1, 40)), 2 * int(rng.integers(1, 40))
    packed = rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)  # every Y, U, V, saturation included
    got = Nv12Image.from_packed(packed).to_bgr().numpy()
    np.testing.assert_array_equal(got, cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_NV12))


@pytest.mark.parametrize(
    ("sample", "indices"),
    [("bikes", (0, 43)), ("carphone", (0, 60)), ("bigbuckbunny", (0, 100))],
)
def test_real_frames_within_one_grey_level(sample: str, indices: tuple[int, ...]) -> None:
    letterbox = Nv12Letterbox("cpu")
    for packed in decoded_nv12(sample, indices):
        image = Nv12Image.from_packed(packed)
        np.testing.assert_array_equal(image.to_bgr().numpy(), cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_NV12))
        for rect in (True, False):
            lb = letterbox_params(image.shape, 640, rect=rect)
            assert_within_one_level(letterbox([image], [lb])[0], reference(packed, lb))


@pytest.mark.parametrize(
    "size",
    [(1080, 1920), (1088, 1920), (720, 1280), (58, 100), (480, 270), (2, 2)],
    ids=["1080p-one-in-three", "1088p", "720p", "tiny-up", "portrait", "2x2"],
)
def test_sizes_within_one_grey_level(size: tuple[int, int]) -> None:
    """Camera sizes (1080p → 640x360 samples every third pixel), up- and downscales, extremes."""
    source = decoded_nv12("bigbuckbunny", (30,))[0]
    bgr = cv2.resize(cv2.cvtColor(source, cv2.COLOR_YUV2BGR_NV12), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    packed = bgr_to_nv12(bgr)
    image = Nv12Image.from_packed(packed)
    for imgsz in (640, (384, 640)):
        lb = letterbox_params(size, imgsz, rect=True)
        assert_within_one_level(Nv12Letterbox("cpu")([image], [lb])[0], reference(packed, lb))


@pytest.mark.parametrize(
    ("src", "dst", "index", "weight"),
    [
        (4, 4, [[0, 1], [1, 2], [2, 3], [3, 3]], [[1, 0], [1, 0], [1, 0], [1, 0]]),
        (6, 2, [[1, 2], [4, 5]], [[1, 0], [1, 0]]),  # a factor of 3: the middle pixel, one tap
        (4, 2, [[0, 1], [2, 3]], [[0.5, 0.5], [0.5, 0.5]]),
        (2, 4, [[0, 1], [0, 1], [0, 1], [1, 1]], [[1, 0], [0.75, 0.25], [0.25, 0.75], [1, 0]]),
    ],
    ids=["same", "third", "half", "double"],
)
def test_linear_taps(src: int, dst: int, index: list[list[int]], weight: list[list[float]]) -> None:
    got_index, got_weight = linear_taps(src, dst)
    np.testing.assert_array_equal(got_index, index)
    np.testing.assert_array_equal(got_weight, np.array(weight, np.float32))


def test_empty_batch() -> None:
    out = torch.full((2, 3, 8, 8), float("nan"))
    assert Nv12Letterbox("cpu")([], [], out) is out
    assert torch.isnan(out).all()
    assert tuple(Nv12Letterbox("cpu")([], []).shape) == (0, 3, 0, 0)


def test_mixed_batch_into_given_slots_pads_and_leaves_the_rest() -> None:
    """Frames of two sizes, out of order, into a larger preallocated batch (a graph's input)."""
    a, b = decoded_nv12("bikes", (10, 20))
    c = decoded_nv12("carphone", (5,))[0]
    images = [Nv12Image.from_packed(p) for p in (a, c, b)]
    boxes = [letterbox_params(im.shape, 640) for im in images]
    out = torch.full((4, 3, 576, 640), float("nan"))
    Nv12Letterbox("cpu")(images, boxes, out)
    for slot, (packed, lb) in enumerate(zip((a, c, b), boxes, strict=True)):
        want = np.full((3, 576, 640), PAD_VALUE / 255, np.float32)  # below the letterbox: padding
        want[:, : lb.input_hw[0], : lb.input_hw[1]] = reference(packed, lb)
        assert_within_one_level(out[slot], want)
    assert torch.isnan(out[3]).all(), "a slot past the frames was written"


def test_group_equals_one_by_one_and_half_precision() -> None:
    frames = [Nv12Image.from_packed(p) for p in decoded_nv12("bigbuckbunny", (0, 1, 2))]
    boxes = [letterbox_params(f.shape, 640) for f in frames]
    together = Nv12Letterbox("cpu")(frames, boxes)
    for i, (frame, lb) in enumerate(zip(frames, boxes, strict=True)):
        torch.testing.assert_close(Nv12Letterbox("cpu")([frame], [lb])[0], together[i], rtol=0, atol=0)
    half = Nv12Letterbox("cpu", torch.float16)(frames, boxes)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), together, rtol=0, atol=2**-11)


def test_strided_planes_read_like_contiguous_ones() -> None:
    """NVDEC's planes have a row pitch wider than the picture (DLPack strides)."""
    packed = decoded_nv12("bikes", (7,))[0]
    h, w = 272, 640
    pitched = np.zeros((h * 3 // 2, 768), np.uint8)
    pitched[:, :w] = packed
    tensor = torch.from_numpy(pitched)
    image = Nv12Image(tensor[:h, :w], tensor[h:, :w].reshape(h // 2, -1)[:, :w].unflatten(1, (w // 2, 2)))
    assert not image.y.is_contiguous()
    lb = letterbox_params((h, w), 640)
    plain = Nv12Letterbox("cpu")([Nv12Image.from_packed(packed)], [lb])
    torch.testing.assert_close(Nv12Letterbox("cpu")([image], [lb]), plain, rtol=0, atol=0)


def y_uv(h: int, w: int, dtype: torch.dtype = torch.uint8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros((h, w), dtype=dtype), torch.zeros((h // 2, w // 2, 2), dtype=dtype)


@pytest.mark.parametrize(
    ("planes", "message"),
    [
        (y_uv(4, 6, torch.float32), r"NV12 planes must be uint8, but got y torch.float32"),
        ((torch.zeros((4, 6, 1), dtype=torch.uint8), y_uv(4, 6)[1]), r"y must have shape \(H, W\), but got shape \(4, 6, 1\)"),
        ((torch.zeros((5, 6), dtype=torch.uint8), y_uv(4, 6)[1]), r"even, non-zero width and height, but got 6x5"),
        ((y_uv(4, 6)[0], torch.zeros((2, 3), dtype=torch.uint8)), r"uv must have shape \(2, 3, 2\) for a 6x4 picture"),
    ],
    ids=["dtype", "ndim", "odd", "uv-shape"],
)
def test_bad_planes_say_what_was_expected(planes: tuple[torch.Tensor, torch.Tensor], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Nv12Image(*planes)


def test_bad_batches_say_what_was_expected() -> None:
    image = Nv12Image(*y_uv(4, 6))
    lb = letterbox_params((4, 6), 64)
    with pytest.raises(ValueError, match=r"got 1 images but 0 letterboxes"):
        Nv12Letterbox("cpu")([image], [])
    with pytest.raises(ValueError, match=r"image 0 is 6x4, but its letterbox is for 8x4"):
        Nv12Letterbox("cpu")([image], [letterbox_params((4, 8), 64)])
    with pytest.raises(ValueError, match=r"out must be a float tensor of shape \(>=1, 3, >=64, >=64\), but got shape \(1, 3, 32, 64\)"):
        Nv12Letterbox("cpu")([image], [lb], torch.zeros((1, 3, 32, 64)))
    with pytest.raises(ValueError, match=r"packed NV12 must be a \(H\*3/2, W\) uint8 array, but got shape \(4, 6\)"):
        Nv12Image.from_packed(np.zeros((4, 6), np.uint8))
