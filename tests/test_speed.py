"""What makes FaceGate fast without changing what it decides: still frames of a stream named
from the last analysed one, identify's detector at the frame's aspect, the embedder's 8-bit
copy, and no second look at faces too small to pass quality. The figures are `make bench`'s."""

import dataclasses
import shutil

import cv2
import numpy as np
import pytest

from conftest import SEED

from appliance.config import from_dict
from appliance.errors import ModelError
from appliance.gallery.enrol import Enroller
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore
from appliance.models import get_spec, int8_path, int8_stamp, installed_path
from appliance.recognition.identify import StreamIdentifier, identify_config
from appliance.vision.pipeline import FacePipeline, model_file, read_image


def _frame(photo, size=(1280, 720), scale=1.0):
    """The photo on a grey 1280x720 frame, `scale` of the largest size that fits."""
    image = read_image(SEED / "probes" / photo)
    frame = np.full((size[1], size[0], 3), 90, np.uint8)
    fit = scale * min(size[0] / image.shape[1], size[1] / image.shape[0])
    small = cv2.resize(image, (int(image.shape[1] * fit), int(image.shape[0] * fit)), interpolation=cv2.INTER_AREA)
    top, left = (size[1] - small.shape[0]) // 2, (size[0] - small.shape[1]) // 2
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    return frame


def _names(results):
    return sorted(decision.match.person.name if decision.accepted else "unknown" for _, decision in results)


@pytest.fixture
def identifier(models_dir, tmp_path):
    config = identify_config(from_dict({"models": {"dir": str(models_dir)}}))
    pipeline = FacePipeline.from_config(config)
    store = GalleryStore(tmp_path / "g.db", model_id=pipeline.embedder.model_id)
    Enroller(config, pipeline, store).enrol_folder(SEED / "gallery")
    yield StreamIdentifier(pipeline, GalleryIndex(store), config), store
    store.close()
    pipeline.close()


def test_still_frames_keep_their_faces_and_a_change_is_analysed_again(identifier):
    identify, store = identifier
    obama = _frame("obama.jpg")
    first = _names(identify.frame(obama))
    assert first == ["obama"]
    noisy = cv2.add(obama, np.random.default_rng(0).integers(0, 3, obama.shape, dtype=np.uint8))
    assert _names(identify.frame(noisy)) == first  # compression-sized noise: still
    assert (identify.analysed, identify.reused) == (1, 1)
    assert _names(identify.frame(_frame("ldh.jpg"))) == ["刘德华"]  # someone else: analysed again
    assert (identify.analysed, identify.reused) == (2, 1)
    # a still frame is still decided against the gallery as it is now
    store.remove(store.find("刘德华").id)
    identify.index.refresh()
    assert _names(identify.frame(_frame("ldh.jpg"))) == ["unknown"]
    assert (identify.analysed, identify.reused) == (2, 2)


def test_a_slow_drift_is_measured_from_the_last_analysed_frame(identifier):
    identify, _ = identifier
    frame = _frame("obama.jpg")
    identify.frame(frame)
    for step in range(1, 8):  # 3 grey levels a frame: each step is still, their sum is not
        identify.frame(cv2.add(frame, np.full(frame.shape, 3 * step, np.uint8)))
    assert identify.analysed == 3 and identify.reused == 5


def test_without_reuse_every_frame_is_analysed(identifier):
    identify, _ = identifier
    identify.reuse_still_frames = False
    frame = _frame("obama.jpg")
    for _ in range(3):
        assert _names(identify.frame(frame)) == ["obama"]
    assert (identify.analysed, identify.reused) == (3, 0)


def test_identify_detects_at_the_frames_aspect_and_an_npu_keeps_its_converted_size(models_dir):
    config = identify_config(from_dict({"models": {"dir": str(models_dir)}}))
    assert (config.detector.input_size, config.detector.keep_frame_aspect) == (640, True)
    assert config.detector.refine_below_pixels == 0
    npu = from_dict({"models": {"backend": "rknnlite"}})
    assert identify_config(npu) == npu
    as_the_door = from_dict({"models": {"dir": str(models_dir)}, "detector": {"identify_input_size": 0}})
    assert identify_config(as_the_door) == as_the_door


def test_identify_finds_small_faces_the_doors_detector_misses(models_dir):
    door = FacePipeline.from_config(from_dict({"models": {"dir": str(models_dir)}}))
    group = _frame("4_3.jpg", scale=0.45)
    identify = FacePipeline.from_config(identify_config(door.config))
    try:
        assert len(identify.detect(group)) == 4
        assert len(door.detect(group)) < 4
    finally:
        identify.close()
        door.close()


def test_the_embedders_8_bit_copy_is_used_where_made_and_refused_when_stale(models_dir, tmp_path):
    config = from_dict({"models": {"dir": str(tmp_path)}})
    for path in models_dir.iterdir():
        if path.is_file():
            (tmp_path / path.name).symlink_to(path)
    source = installed_path(get_spec(config.models.embedder), tmp_path)
    if not int8_path(source).is_file():
        pytest.fail("the 8-bit embedder is missing: run 'make models'")
    assert model_file(config, config.models.embedder, "embedder") == int8_path(source)
    float_config = dataclasses.replace(config, models=dataclasses.replace(config.models, embedder_int8=False))
    assert model_file(float_config, config.models.embedder, "embedder") == source
    stamp = int8_stamp(source)
    stamp.unlink()
    stamp.write_text("0" * 64 + "\n")
    with pytest.raises(ModelError, match="was made from another"):
        model_file(config, config.models.embedder, "embedder")
    stamp.unlink()
    int8_path(source).unlink()
    assert model_file(config, config.models.embedder, "embedder") == source  # none made: the float file


def test_the_8_bit_copy_names_the_same_faces_as_the_float_embedder(models_dir):
    base = from_dict({"models": {"dir": str(models_dir)}})
    pipelines = [FacePipeline.from_config(dataclasses.replace(base, models=dataclasses.replace(
        base.models, embedder_int8=flag))) for flag in (False, True)]
    try:
        assert pipelines[1].embedder.runner.path.name.endswith(".int8.onnx")
        for photo in ("obama.jpg", "ldh.jpg", "4_3.jpg"):
            image = read_image(SEED / "probes" / photo)
            plain, quantised = (p.analyse(image) for p in pipelines)
            assert len(plain) == len(quantised) > 0
            for a, b in zip(plain, quantised):
                assert float(np.dot(a.embedding, b.embedding)) > 0.98
    finally:
        for pipeline in pipelines:
            pipeline.close()


def test_no_second_look_at_a_face_too_small_to_pass_quality(pipeline):
    calls = []
    detect = pipeline.detector.detect
    pipeline.detector.detect = lambda image: calls.append(image.shape) or detect(image)
    try:
        tiny = cv2.resize(read_image(SEED / "probes" / "4_3.jpg"), None, fx=0.2, fy=0.2)  # eyes ~14 px apart
        faces = pipeline.detect(tiny)
        assert faces and all(np.linalg.norm(f.landmarks[0] - f.landmarks[1]) < 19 for f in faces)
        assert len(calls) == 1
        calls.clear()
        pipeline.detect(read_image(SEED / "probes" / "4_3.jpg"))  # eyes ~70 px apart, small in the input
        assert len(calls) == 5
    finally:
        pipeline.detector.detect = detect
