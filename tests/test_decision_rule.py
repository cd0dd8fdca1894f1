"""The door's decision rule: a threshold from the false-accept target, the embedder's calibration
and the gallery as it is now; an explicit threshold as an override that is reported when loose."""

import logging

import numpy as np
import pytest

from appliance.config import from_dict
from appliance.recognition.verification import Verifier
from appliance.errors import ConfigError
from appliance.recognition.decision import looks_per_attempt, looks_per_visit, threshold_for
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore, Template


def random_templates(rng, count):
    vectors = rng.standard_normal((count, 128)).astype(np.float32)
    return [Template(v / np.linalg.norm(v)) for v in vectors]


def test_the_threshold_tightens_as_people_are_enrolled_and_is_logged(tmp_path, pipeline, caplog):
    model_id = pipeline.embedder.model_id
    store = GalleryStore(tmp_path / "g.db", model_id=model_id)
    rng = np.random.default_rng(1)
    store.enrol("first", random_templates(rng, 3), model_id)
    index = GalleryIndex(store)
    verifier = Verifier(pipeline.config, pipeline, index)
    with caplog.at_level(logging.INFO, logger="appliance.recognition.verification"):
        small = verifier.threshold
        for number in range(60):  # a second connection would do the same: the index notices the change
            store.enrol("person %d" % number, random_templates(rng, 2), model_id)
        index.refresh()
        large = verifier.threshold
    assert (small.people, small.templates) == (1, 3) and (large.people, large.templates) == (61, 123)
    assert large.value < small.value - 0.03 and large.source == small.source == "target"
    logged = [r.getMessage() for r in caplog.records]
    assert any("for 61 people, 123 templates" in line for line in logged)
    store.close()


def test_an_override_looser_than_the_target_is_said_and_zero_returns_to_the_target(tmp_path, pipeline, caplog):
    model_id = pipeline.embedder.model_id
    store = GalleryStore(tmp_path / "g.db", model_id=model_id)
    store.enrol("only", random_templates(np.random.default_rng(2), 3), model_id)
    verifier = Verifier(pipeline.config, pipeline, GalleryIndex(store))
    target = verifier.threshold.value
    with pytest.raises(ConfigError, match="looser than the"):  # refused unless forced (it lets strangers in)
        verifier.set_matching(target + 0.1, 0.05)
    assert verifier.threshold.source == "target"
    with caplog.at_level(logging.WARNING, logger="appliance.recognition.verification"):
        verifier.set_matching(target + 0.1, 0.05, force=True)
    loose = verifier.threshold
    assert loose.source == "override" and loose.looser_than_target and loose.as_dict()["looser_than_target"]
    assert any("LOOSER than" in r.getMessage() for r in caplog.records)
    verifier.set_matching(target - 0.1, 0.05)
    assert not verifier.threshold.looser_than_target
    verifier.set_matching(0.0, 0.05)
    assert verifier.threshold.source == "target" and verifier.threshold.value == target
    store.close()


def test_the_target_sets_the_threshold_and_an_embedder_without_calibration_needs_one():
    strict = from_dict({"matching": {"false_accept_target": 1e-5}})
    lenient = from_dict({"matching": {"false_accept_target": 1e-2}})
    counts = [3] * 50
    assert threshold_for(strict, "mobilefacenet_ms1m", counts).value < \
        threshold_for(lenient, "mobilefacenet_ms1m", counts).value
    # more looks per attempt (a longer attempt before a denial) are more chances for a stranger
    patient = from_dict({"verification": {"deny_frames": 30, "fuse_frames": 5}})
    assert looks_per_attempt(patient) == 6
    assert threshold_for(patient, "mobilefacenet_ms1m", counts).value < \
        threshold_for(from_dict({}), "mobilefacenet_ms1m", counts).value
    # and so are more attempts per visit before a lockout: the target is per visit
    assert looks_per_visit(from_dict({})) == 3 * looks_per_attempt(from_dict({}))
    forgiving = from_dict({"verification": {"attempts_per_visit": 10}})
    assert threshold_for(forgiving, "mobilefacenet_ms1m", counts).value < \
        threshold_for(from_dict({}), "mobilefacenet_ms1m", counts).value
    with pytest.raises(ConfigError, match="no calibration.*matching.distance_threshold"):
        threshold_for(from_dict({}), "mobilefacenet_128d", counts)
    assert threshold_for(from_dict({"matching": {"distance_threshold": 0.4}}), "mobilefacenet_128d",
                         counts).value == 0.4
