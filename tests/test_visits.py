"""A visit: a face that keeps being denied is locked out after `attempts_per_visit`, whether it
stays, steps away and back, or leaves before its decision; the lockout is in the audit trail,
lifts after `visit_seconds` away, and never touches anybody else. Real models, a real gallery."""

import subprocess
import sys

import cv2
import numpy as np

from conftest import ROOT
from test_service import PROBES, STRANGERS, door_config, emulator, gallery_path  # noqa: F401 (fixtures)

from appliance.audit import AuditStore
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore
from appliance.recognition.verification import DENY, GRANT, Verifier
from appliance.recognition.visits import MAX_FACES, Visits
from appliance.service import build_service


def unit(rng, dims=128):
    vector = rng.standard_normal(dims).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_a_visit_continues_for_the_same_face_within_its_window_and_memory_is_bounded():
    rng = np.random.default_rng(4)
    visits = Visits(attempts_per_visit=3, visit_seconds=60, same_face_distance=0.5)
    face, other = unit(rng), unit(rng)
    nearby = face + 0.2 * unit(rng)
    nearby /= np.linalg.norm(nearby)
    for attempt, now in enumerate((0.0, 30.0, 80.0), start=1):  # each within 60 s of the last
        assert visits.ended_without_grant(face if attempt != 2 else nearby, now).attempts == attempt
    assert visits.locked(visits.find(face, 100.0)) and visits.find(other, 100.0) is None
    assert visits.find(face, 141.0) is None  # a minute away: a new visit
    visits.ended_without_grant(face, 200.0)
    visits.ended_without_grant(other, 200.5)
    visits.granted(other, 201.0)  # a grant ends that face's visit, and no other
    assert visits.find(other, 202.0) is None and visits.find(face, 202.0).attempts == 1
    for number in range(MAX_FACES + 50):  # a crowd of strangers
        visits.ended_without_grant(unit(rng), 300.0 + number * 0.01)
    assert len(visits) == MAX_FACES


def framed(photo, size=(480, 640)):
    """The photo in the middle of a grey camera frame, its face well over min_face_pixels."""
    image = cv2.resize(cv2.imread(str(photo)), None, fx=1.6, fy=1.6)
    frame = np.full(size + (3,), 120, np.uint8)
    top, left = (size[0] - image.shape[0]) // 2, (size[1] - image.shape[1]) // 2
    frame[top:top + image.shape[0], left:left + image.shape[1]] = image
    return frame


def test_attempts_that_leave_before_their_decision_count_and_the_lockout_lifts_after_the_window(
        pipeline, gallery_path):
    store = GalleryStore(gallery_path, model_id=pipeline.embedder.model_id)
    config = pipeline.config
    verifier = Verifier(config, pipeline, GalleryIndex(store))
    rules = config.verification
    stranger, empty = framed(STRANGERS[1]), np.full((480, 640, 3), 120, np.uint8)
    clock, number = [0.0], [0]

    def show(image, frames):
        kinds = []
        for _ in range(frames):
            clock[0] += 1 / 15
            number[0] += 1
            kinds.append(verifier.step(image, clock[0], number[0]))
        return kinds

    for _ in range(rules.attempts_per_visit):  # a few looks each, then away before any decision
        outcomes = show(stranger, rules.deny_frames - 3)
        assert not {o.kind for o in outcomes} & {GRANT, DENY}
        show(empty, 15)  # a second away: the track is lost undecided
    outcomes = show(stranger, 2)
    denied = [o for o in outcomes if o.kind == DENY]
    assert denied and denied[0].decision.reason.startswith("locked out")
    assert denied[0].decision.match.person is None  # no look at the gallery
    show(empty, 15)
    clock[0] += rules.visit_seconds  # away longer than the window: a new visit, an ordinary attempt
    outcomes = show(stranger, rules.deny_frames + 2)
    denied = [o for o in outcomes if o.kind == DENY]
    assert len(denied) == 1 and denied[0].decision.reason.startswith("unknown")
    assert denied[0].track.visit == {"attempt": 1, "of": rules.attempts_per_visit}
    store.close()


def test_a_stranger_coming_back_is_locked_out_in_the_audit_trail_and_an_enrolled_person_still_gets_in(
        tmp_path, gallery_path, pipeline, emulator):
    visitors = [STRANGERS[0]] * 5 + [PROBES / "obama.jpg", STRANGERS[0]]
    clip = tmp_path / "returns.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip), *map(str, visitors),
                    "--seconds", "2.5", "--fps", "15", "--gap", "1.0", "--approach", "0"], check=True)
    # played in real time (the door's deny and cooldown run on the real clock); photos pasted on a
    # background: liveness would refuse them all, and this is about identity
    config = door_config(tmp_path, gallery_path, clip, emulator.path, verification={"attempts_per_visit": 3},
                         liveness={"enabled": False})
    build_service(config, pipeline=pipeline).run()
    decided = [e for e in AuditStore(tmp_path / "audit.db").events() if e.kind in ("grant", "deny")]
    assert [(e.kind, e.person_name) for e in decided] == [("deny", None)] * 5 + [("grant", "obama"),
                                                                                  ("deny", None)]
    visits = [e.detail.get("visit") for e in decided]
    assert visits[:3] == [{"attempt": 1, "of": 3}, {"attempt": 2, "of": 3},
                          {"attempt": 3, "of": 3, "locked_out_seconds": 60.0}]
    for event in decided[3:5] + decided[6:]:
        assert event.detail["reason"].startswith("locked out: 3 attempts") and event.distance is None
    assert all("nearest" in e.detail and e.distance is not None for e in decided[:3])
    assert sum(c.on for c in emulator.changes()) == 1  # the relay moved for obama alone
