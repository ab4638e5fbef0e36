"""Classifying detected objects: the real detector's boxes on sample:testimg, classified by the
built-in ImageNet classifier, with the per-track cache counted call by call."""

from __future__ import annotations

import numpy as np
import pytest

import streamer
from streamer.classify import IDS_KEY, PROBS_KEY, ObjectClassifier, check_classifier, check_detector, square_crop
from streamer.errors import ConfigError, StreamerError
from streamer.models import load_model
from streamer.models.efficientnet import EfficientNetLite0
from streamer.types import Detections
from tests import lite0

COCO_PERSON, COCO_BICYCLE, COCO_DOG = 0, 1, 16


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLite0:
    model = EfficientNetLite0(lite0.weights(), cache_dir=lite0.cache_home() / "streamer", threads=2)
    model.ensure_open()
    return model


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, Detections]:
    """sample:testimg and what the default detector finds in it (2 people, a dog, bicycles)."""
    result = next(iter(streamer.stream("sample:testimg")))
    assert result.detections is not None
    return result.frame.image, result.detections


def fresh(detections: Detections, tracker_id: list[int] | None = None) -> Detections:
    tid = None if tracker_id is None else np.array(tracker_id, np.int64)
    return Detections(detections.xyxy.copy(), detections.confidence.copy(), detections.class_id.copy(), tid)


def test_no_detections(classifier: EfficientNetLite0) -> None:
    oc = ObjectClassifier(classifier, None, top_k=3)
    empty = Detections.empty()
    oc.classify(np.zeros((50, 60, 3), np.uint8), empty, 0.0)
    assert empty.data[IDS_KEY].shape == (0, 3) and empty.data[IDS_KEY].dtype == np.int32
    assert empty.data[PROBS_KEY].shape == (0, 3) and empty.data[PROBS_KEY].dtype == np.float32
    assert (oc.calls, oc.crops) == (0, 0)


def test_dog_gets_a_breed_and_the_rest_stay_unclassified(classifier: EfficientNetLite0, scene) -> None:  # type: ignore[no-untyped-def]
    image, detections = scene
    det = fresh(detections)
    oc = ObjectClassifier(classifier, [COCO_DOG], top_k=5)
    oc.classify(image, det, 0.0)
    ids, probs = det.data[IDS_KEY], det.data[PROBS_KEY]
    dogs = det.class_id == COCO_DOG
    assert dogs.sum() == 1 and (oc.calls, oc.crops) == (1, 1)
    assert any(int(c) in lite0.DOG_BREEDS for c in ids[dogs][0]), [classifier.info.names[c] for c in ids[dogs][0]]
    assert (ids[~dogs] == -1).all() and (probs[~dogs] == 0).all()
    assert (np.diff(probs[dogs][0]) <= 0).all() and 0 < probs[dogs].sum() <= 1  # best first, probabilities


def test_bicycles_get_a_bicycle_class(classifier: EfficientNetLite0, scene) -> None:  # type: ignore[no-untyped-def]
    image, detections = scene
    det = fresh(detections)
    oc = ObjectClassifier(classifier, [COCO_BICYCLE], top_k=5)
    oc.classify(image, det, 0.0)
    bikes = np.flatnonzero(det.class_id == COCO_BICYCLE)
    assert len(bikes) >= 2 and (oc.calls, oc.crops) == (1, len(bikes))  # all crops in one model call
    for row in bikes:
        top5 = det.data[IDS_KEY][row].tolist()
        assert set(top5) & set(lite0.BICYCLES), [classifier.info.names[c] for c in top5]


def test_small_boxes_are_skipped(classifier: EfficientNetLite0, scene) -> None:  # type: ignore[no-untyped-def]
    image, detections = scene
    det = fresh(detections)
    oc = ObjectClassifier(classifier, None, min_box=50)  # the dog's box is 43 px wide
    oc.classify(image, det, 0.0)
    short = np.minimum(det.xyxy[:, 2] - det.xyxy[:, 0], det.xyxy[:, 3] - det.xyxy[:, 1])
    assert ((det.data[IDS_KEY][:, 0] >= 0) == (short >= 50)).all() and oc.crops == int((short >= 50).sum())


def test_a_track_is_classified_once_not_every_frame(classifier: EfficientNetLite0, scene) -> None:  # type: ignore[no-untyped-def]
    image, detections = scene
    n = len(detections)
    tracks = list(range(1, n)) + [-1]  # the last row is not a confirmed track
    oc = ObjectClassifier(classifier, None, top_k=2)
    first = fresh(detections, tracks)
    oc.classify(image, first, 0.0)
    assert (oc.calls, oc.crops) == (1, n - 1)
    for frame in range(1, 6):
        det = fresh(detections, tracks)
        oc.classify(image, det, frame / 25)
        assert np.array_equal(det.data[IDS_KEY], first.data[IDS_KEY])
        assert np.array_equal(det.data[PROBS_KEY], first.data[PROBS_KEY])
    assert (oc.calls, oc.crops, oc.reused) == (1, n - 1, 5 * (n - 1))
    assert (first.data[IDS_KEY][-1] == -1).all()
    # A new track: only its crop is classified.
    det = fresh(detections, tracks[:-2] + [99, -1])
    oc.classify(image, det, 0.3)
    assert (oc.calls, oc.crops) == (2, n)
    assert oc.tracks == n  # 1..n-1 and 99


def test_every_s_reclassifies_a_track(classifier: EfficientNetLite0, scene) -> None:  # type: ignore[no-untyped-def]
    image, detections = scene
    tracks = list(range(len(detections)))
    oc = ObjectClassifier(classifier, [COCO_BICYCLE], every_s=0.5)
    bikes = int((detections.class_id == COCO_BICYCLE).sum())
    calls = []
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2):
        oc.classify(image, fresh(detections, tracks), t)
        calls.append(oc.calls)
    assert calls == [1, 1, 1, 2, 2, 2, 3]  # at 0.0, then 0.6 (>= 0.5 after), then 1.2
    assert oc.crops == 3 * bikes


def test_cache_is_bounded_and_forgets(classifier: EfficientNetLite0, scene) -> None:  # type: ignore[no-untyped-def]
    image, detections = scene
    n = len(detections)
    oc = ObjectClassifier(classifier, None, max_tracks=3, forget_s=1.0)
    oc.classify(image, fresh(detections, list(range(n))), 0.0)
    assert oc.tracks == 3 and oc.evicted == n - 3
    det = fresh(detections)
    oc.classify(image, Detections(det.xyxy[:1], det.confidence[:1], det.class_id[:1], np.array([500], np.int64)), 2.0)
    assert oc.tracks == 1  # the others were not seen for 2 s > forget_s


def test_without_tracks_every_frame_is_classified(classifier: EfficientNetLite0, scene) -> None:  # type: ignore[no-untyped-def]
    image, detections = scene
    oc = ObjectClassifier(classifier, [COCO_PERSON])
    for t in range(3):
        oc.classify(image, fresh(detections), float(t))
    assert (oc.calls, oc.crops) == (3, 3 * int((detections.class_id == COCO_PERSON).sum()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": [-1]}, "classes must be detector class ids >= 0"),
        ({"classes": None, "top_k": 0}, "top_k must be an integer >= 1"),
        ({"classes": None, "min_box": -1}, "min_box must be >= 0"),
        ({"classes": None, "every_s": 0}, "every_s must be > 0"),
        ({"classes": None, "max_tracks": 0}, "max_tracks must be >= 1"),
        ({"classes": None, "forget_s": 0}, "forget_s must be > 0"),
    ],
)
def test_bad_settings(classifier: EfficientNetLite0, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        ObjectClassifier(classifier, **kwargs)


def test_top_k_beyond_the_classes(classifier: EfficientNetLite0) -> None:
    with pytest.raises(ConfigError, match="at most the classifier's 1000 classes"):
        ObjectClassifier(classifier, None, top_k=1001).open()


@pytest.mark.parametrize(
    ("box", "expected"),  # (top, left, side) in a 100x200 frame
    [
        ((50, 40, 70, 60), (40, 50, 20)),  # inside: square on the box
        ((0, 0, 10, 40), (0, 0, 40)),  # at the corner: shifted into the frame
        ((190, 10, 200, 30), (10, 180, 20)),  # at the right edge
        ((-50, -50, 300, 300), (0, 75, 100)),  # bigger than the frame: the short side, on the centre
        ((20, 20, 20, 20), (20, 20, 1)),  # empty box: one pixel
    ],
)
def test_square_crop(box: tuple[float, float, float, float], expected: tuple[int, int, int]) -> None:
    frame = np.arange(100 * 200, dtype=np.int32).reshape(100, 200, 1).repeat(3, axis=2)
    out = square_crop(frame, np.array(box, np.float32))
    top, left, side = expected
    assert out.shape[:2] == (side, side)
    assert int(out[0, 0, 0]) == top * 200 + left


def test_check_classifier_and_detector_name_the_key(classifier: EfficientNetLite0) -> None:
    detector = load_model("yolo11n", device="cpu")
    check_classifier(classifier, "classify.model")
    check_detector(detector, "model.name")
    with pytest.raises(ConfigError, match=r"^classify\.model: .*yolo11n\.onnx is a detect model .* needs an image classifier"):
        check_classifier(detector, "classify.model")
    with pytest.raises(ConfigError, match=r"^model\.name: .*efficientnet-lite0.*is a classify model .* needs an object detector") as err:
        check_detector(classifier, "model.name")
    assert isinstance(err.value, StreamerError) and "\n" not in str(err.value)  # one line; the CLI exits 2
    detector.ensure_closed()
