"""Liveness at the door: on by default, fused over an attempt, a printed photo of an enrolled
person refused; and the threshold's protocol (`facegate eval-liveness`) on hand-made scores.

The door test uses nuaa-dev's real frames (a webcam's live frames of one person and its frames
of that person's printed photo), played as videos in capture order."""

import numpy as np
import pytest

from conftest import SHARED
from test_service import door_config, emulator  # noqa: F401 (fixture)

from appliance.audit import AuditStore
from appliance.config import Config
from appliance.gallery.enrol import Enroller
from appliance.gallery.store import GalleryStore
from appliance.service import build_service
from facegate_host.eval import liveness

NUAA = SHARED / "data" / "nuaa-dev"
SUBJECT = "0006"


def frames_of(kind: str):
    return sorted((NUAA / kind / SUBJECT).glob("*.jpg"), key=liveness.capture_order)


def video(path, frames, fps=15):
    import cv2

    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.shape[1], first.shape[0]))
    for frame in frames:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    return path


def test_liveness_is_on_by_default_with_the_threshold_eval_liveness_chose():
    assert Config().liveness.enabled and Config().liveness.threshold == 0.2 and Config().liveness.frames == 3


def test_a_printed_photo_of_an_enrolled_person_is_refused_and_the_person_is_let_in(tmp_path, pipeline, emulator):
    live = frames_of("live")
    gallery = tmp_path / "gallery.db"
    store = GalleryStore(gallery, model_id=pipeline.embedder.model_id)
    Enroller(pipeline.config, pipeline, store).enrol("subject", live[:3])
    store.close()
    outcomes = {}
    for name, frames in (("photo", frames_of("attack")[40:70]), ("person", live[60:90])):
        folder = tmp_path / name
        folder.mkdir()
        config = door_config(folder, gallery, video(folder / "door.mp4", frames), emulator.path,
                             camera={"every_frame": True})
        build_service(config, pipeline=pipeline).run()
        outcomes[name] = [e for e in AuditStore(folder / "audit.db").events() if e.kind in ("grant", "deny")]
    photo, person = outcomes["photo"], outcomes["person"]
    assert photo and all(e.kind == "deny" for e in photo), [(e.kind, e.detail) for e in photo]
    refused = photo[0].detail
    assert refused["reason"].startswith("not live") and refused["liveness"] < 0.2
    assert refused["nearest"]["name"] == "subject"  # the face matched: liveness alone refused it
    assert person and person[0].kind == "grant" and person[0].person_name == "subject"
    assert person[0].detail["liveness"] >= 0.2


def test_a_door_whose_pipeline_lacks_the_liveness_models_refuses_to_run(tmp_path, emulator):
    from appliance.config import from_dict
    from appliance.errors import ConfigError
    from appliance.vision.pipeline import FacePipeline
    from conftest import MODELS

    without = FacePipeline.from_config(from_dict({"models": {"dir": str(MODELS)}, "liveness": {"enabled": False}}))
    try:
        config = door_config(tmp_path, tmp_path / "g.db", video(tmp_path / "door.mp4", frames_of("live")[:3]),
                             emulator.path)
        with pytest.raises(ConfigError, match="liveness is on but the face pipeline has no liveness models"):
            build_service(config, pipeline=without)
    finally:
        without.close()


# -- the threshold's protocol -------------------------------------------------------------------

def test_attempts_average_consecutive_frames_and_drop_a_short_tail():
    assert liveness.attempts(np.array([0.1, 0.3, 0.5, 0.7, 0.9]), 2).tolist() == pytest.approx([0.2, 0.6])


def test_the_threshold_is_chosen_on_some_subjects_and_measured_on_the_others():
    # four subjects: attacks score up to 0.3 on subject a only; subject d's live frames score low
    frames = {("attack", s): np.full(6, 0.01) for s in "abcd"}
    frames[("attack", "a")] = np.array([0.3, 0.3, 0.01, 0.01, 0.01, 0.01])
    frames.update({("live", s): np.full(6, 0.9) for s in "abc"})
    frames[("live", "d")] = np.array([0.2, 0.2, 0.9, 0.9, 0.9, 0.9])
    result = liveness.evaluate(liveness.Scores(frames), frames=2)
    assert result["splits"] == 6 and result["shipped_threshold"] == 0.301
    # held out, a threshold chosen without subject a lets a's photo in: the rate says so
    apcer = result["held_out"]["APCER (printed photo)"]
    assert 0 < apcer["rate"] < 1 and apcer["worst_split"] == pytest.approx(1 / 6)
    bpcer = result["held_out"]["BPCER"]
    assert bpcer["worst_split"] == pytest.approx(1 / 6)  # d's first attempt, under a's 0.301


def test_the_upper_bound_covers_what_was_seen():
    assert liveness.upper_95(0, 100) == pytest.approx(0.0295, abs=1e-3)  # the "rule of three"
    assert 0.05 < liveness.upper_95(5, 100) < 0.12
    assert liveness.upper_95(3, 10) > 0.3


def test_the_rv1126s_cpu_backend_scores_liveness_as_the_host_does():
    """The RV1126 runs liveness on OpenCV's DNN (board/rv1126/meta): the same probabilities."""
    import cv2

    from appliance.config import from_dict
    from appliance.vision.pipeline import FacePipeline
    from conftest import MODELS

    frames = [cv2.imread(str(path)) for path in frames_of("live")[:2] + frames_of("attack")[:2]]
    scores = {}
    for backend in ("onnxruntime", "opencv"):
        built = FacePipeline.from_config(from_dict({"models": {"dir": str(MODELS), "backend": "onnxruntime",
                                                               "liveness_backend": backend}}))
        scores[backend] = [built.liveness.score(frame, built.detect(frame)[0].box) for frame in frames]
        built.close()
    assert scores["opencv"] == pytest.approx(scores["onnxruntime"], abs=1e-4)
    assert min(scores["opencv"][:2]) > 0.5 > max(scores["opencv"][2:])  # live frames, then the photo's


def test_a_door_with_liveness_turned_off_says_so_at_start(tmp_path, pipeline, emulator, caplog):
    import logging

    clip = video(tmp_path / "door.mp4", frames_of("live")[:2])
    for enabled in (False, True):
        caplog.clear()
        config = door_config(tmp_path, tmp_path / "g.db", clip, emulator.path, liveness={"enabled": enabled})
        with caplog.at_level(logging.WARNING, logger="appliance.service"):
            build_service(config, pipeline=pipeline).run()
        said = any("liveness is OFF" in r.getMessage() for r in caplog.records)
        assert said is not enabled
