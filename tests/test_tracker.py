"""The IoU tracker and the choice of the face to verify, on hand-made boxes; the watchdog file."""

import numpy as np

from appliance.door.watchdog import Watchdog
from appliance.vision.detector import Face
from appliance.recognition.tracker import Tracker, choose_face


def face(x1, y1, x2, y2):
    return Face(np.array([x1, y1, x2, y2], np.float32), np.zeros((5, 2), np.float32), 0.9)


FRAME = (480, 640, 3)


def test_choose_face_ignores_small_faces_and_picks_by_rule():
    near, far, corner = face(300, 100, 420, 240), face(200, 200, 260, 270), face(0, 0, 150, 160)
    assert choose_face([far], FRAME, 80, "largest") is None
    assert choose_face([near, far, corner], FRAME, 80, "largest") is corner
    assert choose_face([near, far, corner], FRAME, 80, "central") is near


def test_track_continues_while_boxes_overlap_and_restarts_for_another_face():
    tracker = Tracker(iou_threshold=0.3, lost_after_seconds=0.5)
    first = tracker.update(face(100, 100, 200, 220), 0.0, 1)
    same = tracker.update(face(110, 105, 210, 225), 0.04, 2)
    assert same is first and first.frames == [1, 2]
    other = tracker.update(face(400, 100, 500, 220), 0.08, 3)
    assert other is not first and other.id != first.id and other.first_captured == 0.08


def test_track_survives_short_gaps_and_is_lost_after_the_timeout():
    tracker = Tracker(iou_threshold=0.3, lost_after_seconds=0.5)
    track = tracker.update(face(100, 100, 200, 220), 0.0, 1)
    assert tracker.update(None, 0.3, 2) is track  # a missed detection is not a departure
    assert tracker.update(face(100, 100, 200, 220), 0.4, 3) is track
    assert tracker.update(None, 1.0, 4) is None


def test_watchdog_is_fed_at_its_interval_and_closed_with_the_magic_character(tmp_path):
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    watchdog = Watchdog(str(device), interval=1.0)
    for now in (10.0, 10.5, 11.2, 11.4, 12.3):
        watchdog.feed(now)
    watchdog.close()
    assert device.read_bytes() == b"111V"
