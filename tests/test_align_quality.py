import numpy as np
import pytest

from appliance.config import QualityConfig
from appliance.vision.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from appliance.vision.quality import assess, pose_from_landmarks


def _transform(points, angle_degrees, scale, shift):
    angle = np.radians(angle_degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ (scale * rotation).T + shift


@pytest.mark.parametrize("angle,scale,shift", [(0, 1, (0, 0)), (25, 2.5, (300, 120)),
                                               (-40, 0.7, (10, 400))])
def test_similarity_maps_landmarks_onto_template_within_a_pixel(angle, scale, shift):
    landmarks = _transform(ARCFACE_TEMPLATE, angle, scale, np.array(shift, float))
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 1.0


def test_align_face_moves_a_marked_pixel_to_the_template_point():
    image = np.zeros((600, 800, 3), np.uint8)
    landmarks = _transform(ARCFACE_TEMPLATE, 20, 3.0, np.array([350.0, 200.0]))
    x, y = landmarks[2].round().astype(int)  # the nose
    image[y - 2:y + 3, x - 2:x + 3] = 255
    aligned = align_face(image, landmarks)
    assert aligned.shape == (112, 112, 3)
    ys, xs = np.nonzero(aligned[..., 0] > 100)
    assert abs(xs.mean() - ARCFACE_TEMPLATE[2, 0]) < 1.0
    assert abs(ys.mean() - ARCFACE_TEMPLATE[2, 1]) < 1.0


def test_pose_of_template_is_frontal_and_of_turned_face_is_not():
    interocular, yaw, pitch, roll = pose_from_landmarks(ARCFACE_TEMPLATE)
    assert interocular == pytest.approx(35.24, abs=0.01)
    assert abs(yaw) < 0.02 and abs(pitch) < 0.02 and abs(roll) < 1
    turned = ARCFACE_TEMPLATE.copy()
    turned[2, 0] += 18  # nose far to one side: a head turned away
    assert pose_from_landmarks(turned)[1] > 0.45
    # a rotated but frontal face reads as roll, not yaw
    rotated = _transform(ARCFACE_TEMPLATE, 35, 1.0, np.zeros(2))
    _, yaw, pitch, roll = pose_from_landmarks(rotated)
    assert abs(yaw) < 0.02 and abs(pitch) < 0.02 and roll == pytest.approx(35, abs=0.5)


def _textured(mean=128):
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(mean, 40, (112, 112, 3)), 0, 255).astype(np.uint8)


def test_quality_reasons_name_each_failure():
    limits = QualityConfig()
    good = assess(ARCFACE_TEMPLATE * 2, _textured(), limits)
    assert good.passed, good.reasons
    small = assess(ARCFACE_TEMPLATE * 0.5, _textured(), limits)
    assert any(r.startswith("too small") for r in small.reasons)
    flat = np.full((112, 112, 3), 128, np.uint8)
    assert any(r.startswith("blurred") for r in assess(ARCFACE_TEMPLATE * 2, flat, limits).reasons)
    dark = assess(ARCFACE_TEMPLATE * 2, _textured(15), limits)
    assert any(r.startswith("too dark") for r in dark.reasons)
    bright = assess(ARCFACE_TEMPLATE * 2, _textured(245), limits)
    assert any(r.startswith("overexposed") for r in bright.reasons)
    turned = ARCFACE_TEMPLATE * 2
    turned[2, 0] += 40
    assert any(r.startswith("turned") for r in assess(turned, _textured(), limits).reasons)
