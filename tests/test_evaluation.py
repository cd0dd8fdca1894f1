"""The evaluation tools that back README's figures: the calibration's bound resamples people and
is an upper bound where it was measured; the visit replay runs the door's own verifier and lets
an enrolled person in and keeps strangers out, at the door's threshold."""

import numpy as np

from conftest import LFW

from appliance.config import Config
from appliance.recognition import calibration
from facegate_host.eval import calibrate, identification, visits


def test_the_bound_is_above_the_measured_rate_and_wider_where_fewer_people_stand_behind_it():
    rng = np.random.default_rng(7)
    # 60 people; one pair of them are look-alikes who make most of the close pairs
    people = 60
    probe_people = rng.integers(0, people, 200_000).astype(np.int32)
    enrolled_people = (probe_people + rng.integers(1, people, probe_people.size)) % people
    distances = rng.normal(0.9, 0.12, probe_people.size)
    alike = (probe_people == 3) & (enrolled_people == 4)
    distances[alike] = rng.normal(0.45, 0.05, int(alike.sum()))
    pairs = {1: (distances, probe_people, enrolled_people.astype(np.int32))}
    made = calibrate.measure("test", pairs, people, resamples=100)
    curve = made.curves[1]
    point = calibration.estimate(curve.counts, curve.total)
    assert np.all(curve.upper >= point)
    at = int(np.searchsorted(calibration.grid(), 0.5))
    # the close pairs stand on two people, so the bound there is well above their count's rate;
    # counted as independent pairs (about 130 of them) it would be some 1.15 times it
    assert curve.upper[at] > 1.5 * point[at]
    # a threshold from the bound keeps the bound within the target, and just so
    threshold = made.threshold(1e-3, [1] * 10, 2)
    assert made.false_accept(threshold, [1] * 10, 2) <= 1e-3 < made.false_accept(threshold + 0.01, [1] * 10, 2)


def test_the_visit_replay_runs_the_doors_verifier_on_recorded_frames(pipeline, tmp_path):
    people = identification.list_people(LFW / "images")
    many = [name for name, photos in people.items() if len(photos) >= 6][:3]
    few = [name for name, photos in people.items() if len(photos) == 1][:4]
    chosen = {name: people[name][:6] for name in many} | {name: people[name] for name in few}
    names = [photo for photos in chosen.values() for photo in photos]
    config = Config()
    recorded = visits.record(pipeline, config, LFW / "images", names, tmp_path / "frames.npz")
    assert recorded.boxes.shape == (len(names), visits.FRAMES, 4) and recorded.passed.mean() > 0.5
    again = visits.record(None, config, LFW / "images", names, tmp_path / "frames.npz")  # from the cache
    assert np.array_equal(again.passed, recorded.passed)
    rows = visits.run(config, pipeline.embedder.model_id, recorded, chosen, sizes=(None,), ks=(3,), min_photos=6,
                      extrapolate_to=0)
    row = rows[0]
    assert row["people"] == 3 and row["genuine_visits"] == 3 and row["stranger_visits"] == 4
    assert row["genuine_refused"] == 0 and row["strangers_granted"] == 0 and row["misidentified"] == 0
    assert row["strangers_granted_upper_95"] > 0.5  # four visits prove little, and the bound says so
