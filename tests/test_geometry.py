import math

import numpy as np
import pytest

from appliance.vision.geometry import (Letterbox, box_iou, decode_boxes, decode_landmarks,
                                       frame_aspect_size, letterbox, nms, prior_boxes)

MIN_SIZES = [[16, 32], [64, 128], [256, 512]]
STEPS = [8, 16, 32]


@pytest.mark.parametrize("height,width,count", [(640, 640, 16800), (320, 320, 4200),
                                                (480, 480, 9450), (240, 320, 3160)])
def test_prior_count_matches_network_anchor_count(height, width, count):
    expected = sum(math.ceil(height / s) * math.ceil(width / s) * 2 for s in STEPS)
    assert expected == count
    assert prior_boxes(height, width, MIN_SIZES, STEPS).shape == (count, 4)


def test_prior_positions_follow_row_column_anchor_order():
    priors = prior_boxes(320, 320, MIN_SIZES, STEPS) * 320
    # first cell of stride 8: two anchors centred at (4, 4) with sizes 16 and 32
    np.testing.assert_allclose(priors[0], [4, 4, 16, 16], atol=1e-4)
    np.testing.assert_allclose(priors[1], [4, 4, 32, 32], atol=1e-4)
    # second cell moves along the row (x), not down the column
    np.testing.assert_allclose(priors[2], [12, 4, 16, 16], atol=1e-4)
    # first anchor of stride 16 comes after all 40x40x2 of stride 8
    np.testing.assert_allclose(priors[3200], [8, 8, 64, 64], atol=1e-4)
    # last anchor: stride 32, bottom-right cell, size 512
    np.testing.assert_allclose(priors[-1], [304, 304, 512, 512], atol=1e-4)


def test_priors_are_cached_and_read_only():
    first = prior_boxes(320, 320, MIN_SIZES, STEPS)
    assert prior_boxes(320, 320, MIN_SIZES, STEPS) is first
    with pytest.raises(ValueError):
        first[0, 0] = 1


def test_priors_for_non_square_input_are_normalised_per_axis():
    priors = prior_boxes(240, 320, MIN_SIZES, STEPS)
    np.testing.assert_allclose(priors[0], [4 / 320, 4 / 240, 16 / 320, 16 / 240], atol=1e-6)


def test_decode_zero_offsets_gives_the_prior_box():
    priors = np.array([[0.5, 0.5, 0.2, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(decode_boxes(np.zeros((1, 4)), priors, [0.1, 0.2]),
                               [[0.4, 0.45, 0.6, 0.55]], atol=1e-6)


def test_decode_known_offsets():
    priors = np.array([[0.5, 0.5, 0.2, 0.2]], dtype=np.float32)
    # dx = 1 moves the centre by variance * width = 0.1 * 0.2; dw = ln(2)/0.2 doubles the width.
    offsets = np.array([[1.0, -1.0, math.log(2) / 0.2, 0.0]])
    np.testing.assert_allclose(decode_boxes(offsets, priors, [0.1, 0.2]),
                               [[0.32, 0.38, 0.72, 0.58]], atol=1e-6)
    points = decode_landmarks(np.tile([1.0, 2.0], 5)[None], priors, [0.1, 0.2])
    assert points.shape == (1, 5, 2)
    np.testing.assert_allclose(points[0, 3], [0.52, 0.54], atol=1e-6)


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.3])
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    # a looser threshold keeps the overlapping one too
    assert nms(boxes, scores, 0.95).tolist() == [1, 0, 2, 3]


def test_box_iou_values():
    box = np.array([0, 0, 10, 10], float)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(box, others), [1.0, 50 / 150, 0.0])


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (250, 250), (101, 333)])
def test_letterbox_round_trip_within_a_pixel(shape):
    image = np.zeros(shape + (3,), np.uint8)
    canvas, fit = letterbox(image, (320, 320), (104, 117, 123))
    assert canvas.shape == (320, 320, 3)
    points = np.array([[0, 0], [shape[1] - 1, shape[0] - 1], [shape[1] / 3, shape[0] / 2]], float)
    back = fit.to_original(fit.to_input(points))
    np.testing.assert_allclose(back, points, atol=1e-3)
    # the image corners land inside the canvas and the padding has the fill colour
    corner = fit.to_input(np.array([[shape[1], shape[0]]], float))[0]
    assert corner[0] <= 320.5 and corner[1] <= 320.5
    if fit.pad_x:
        assert canvas[160, 0].tolist() == [104, 117, 123]


def test_letterbox_keeps_content_where_the_mapping_says():
    image = np.zeros((200, 400, 3), np.uint8)
    image[90:110, 290:310] = 255  # a white square centred at (300, 100)
    canvas, fit = letterbox(image, (320, 320))
    x, y = fit.to_input(np.array([[300.0, 100.0]]))[0]
    assert canvas[int(round(y)), int(round(x))].tolist() == [255, 255, 255]
    assert isinstance(fit, Letterbox)


def test_frame_aspect_size_keeps_aspect_on_multiples_of_32():
    assert frame_aspect_size(480, 640, 320) == (256, 320)
    assert frame_aspect_size(1080, 1920, 640) == (384, 640)
    assert frame_aspect_size(640, 480, 320) == (320, 256)
