"""Threshold tuning: the numbers on hand-made distances, apply, report and replay on a real door run."""

from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, SEED, run_cli

from appliance.config import load
from appliance.tune.analysis import Evidence, per_comparison_rate, rates, recommend


def test_rates_count_both_errors():
    evidence = Evidence(genuine=np.array([0.2, 0.3, 0.5, 0.7]), impostor=np.array([0.4, 0.8, 0.9, 1.0]))
    assert rates(evidence, [0.45]) == [(0.45, 0.25, 0.5)]
    assert rates(evidence, [0.1])[0][1:] == (0.0, 1.0)


def test_recommendation_accounts_for_gallery_size_and_missing_evidence():
    rng = np.random.default_rng(1)
    evidence = Evidence(genuine=rng.normal(0.3, 0.08, 5000), impostor=rng.normal(0.9, 0.1, 2_000_000))
    one = recommend(evidence, 1e-3, chances=1)
    hundred = recommend(evidence, 1e-3, chances=100)
    assert hundred.threshold < one.threshold  # more people: more chances for a stranger
    assert per_comparison_rate(1e-3, 100) == pytest.approx(1e-5, rel=0.01)
    assert np.mean(evidence.impostor <= one.threshold) <= 1e-3
    few = recommend(Evidence(np.array([0.3] * 20), np.array([0.9] * 100)), 1e-3)
    assert few.threshold is None and "impostor comparisons" in few.missing[0]


def test_apply_writes_atomically_and_keeps_a_backup(tmp_path):
    config = tmp_path / "door.toml"
    config.write_text("[matching]\ndistance_threshold = 0.55\nmin_margin = 0.05\n\n[door]\nunlock_seconds = 2.0\n")
    result = run_cli("tune", "apply", "0.4123", "--config", config)
    assert result.returncode == 0, result.stderr
    assert load(config).matching.distance_threshold == pytest.approx(0.4123)
    assert load(config).door.unlock_seconds == 2.0
    assert "distance_threshold = 0.55" in (tmp_path / "door.toml.bak.1").read_text()
    typo = tmp_path / "doro.toml"  # a mistyped path: refused, nothing written, no backup claimed
    refused = run_cli("tune", "apply", "0.5", "--config", typo)
    assert refused.returncode == 2 and "does not exist" in refused.stderr
    assert not typo.exists() and not list(tmp_path.glob("doro.toml*"))


def test_every_apply_keeps_the_version_before_and_undo_walks_back(tmp_path):
    config = tmp_path / "door.toml"
    config.write_text("# front door\n[matching]\ndistance_threshold = 0.35\n")
    for value in ("0.33", "0.31"):  # twice: the original must survive the second
        assert run_cli("tune", "apply", value, "--config", config).returncode == 0
    assert load(config).matching.distance_threshold == pytest.approx(0.31)
    assert "0.35" in (tmp_path / "door.toml.bak.1").read_text() and "0.33" in (tmp_path / "door.toml.bak.2").read_text()
    first = run_cli("tune", "undo", "--config", config)
    assert first.returncode == 0 and "was 0.3100" in first.stdout
    assert load(config).matching.distance_threshold == pytest.approx(0.33)
    assert run_cli("tune", "undo", "--config", config).returncode == 0
    assert load(config).matching.distance_threshold == pytest.approx(0.35)
    assert config.read_text().startswith("# front door")  # the original, comments and all
    none = run_cli("tune", "undo", "--config", config)
    assert none.returncode == 2 and "no earlier version" in none.stderr


def test_report_says_what_is_missing(tmp_path, models_dir):
    gallery = tmp_path / "g.db"
    assert run_cli("enroll", "obama", SEED / "gallery" / "obama" / "obama_1.jpg", "--gallery", gallery).returncode == 0
    result = run_cli("tune", "report", "--gallery", gallery, "--audit", tmp_path / "none.db")
    assert result.returncode == 1 and "enrol at least two" in result.stdout


def test_a_small_site_gets_a_recommendation_from_the_calibration_at_once(tmp_path, models_dir):
    gallery = tmp_path / "g.db"
    assert run_cli("enroll", "--from-dir", SEED / "gallery", "--gallery", gallery).returncode == 0
    result = run_cli("tune", "report", "--gallery", gallery, "--audit", tmp_path / "none.db")
    assert result.returncode == 0, result.stdout
    line = next(l for l in result.stdout.splitlines() if l.startswith("from the embedder's calibration"))
    threshold = float(line.split("threshold ")[1].split()[0])
    door = next(l for l in result.stdout.splitlines() if l.startswith("the door now:"))
    assert "threshold %.3f for 5 people" % threshold in door  # the prior is what the door applies
    assert "too thin to refine it" in result.stdout
    marked = [l for l in result.stdout.splitlines() if l.endswith("<- the door now")]
    assert len(marked) == 1 and marked[0].split()[0] == "%.3f" % threshold  # its own row, not a neighbour


def test_report_plot_and_replay_on_a_door_run(tmp_path, pipeline):
    from test_service import PROBES, STRANGERS, make_clip, door_config
    from appliance.audit import AuditStore
    from appliance.gallery.enrol import Enroller
    from appliance.gallery.store import GalleryStore
    from appliance.service import build_service

    gallery = tmp_path / "gallery.db"
    store = GalleryStore(gallery, model_id=pipeline.embedder.model_id)
    Enroller(pipeline.config, pipeline, store).enrol_folder(SEED / "gallery")
    store.close()
    clip = make_clip(tmp_path / "mixed.mp4", [PROBES / "obama.jpg", STRANGERS[0], PROBES / "ldh.jpg"])
    build_service(door_config(tmp_path, gallery, clip, ""), pipeline=pipeline, use_relay=False).run()
    audit = AuditStore(tmp_path / "audit.db")
    attempts = [e for e in audit.events() if e.kind in ("grant", "deny")]
    assert {e.kind for e in attempts} == {"grant", "deny"}
    for event in attempts:  # label them as the installer would: the truth is known here
        audit.set_label(event.id, event.person_id if event.kind == "grant" else "stranger")
    audit.close()
    common = ["--gallery", gallery, "--audit", tmp_path / "audit.db", "--models-dir", MODELS]
    same = run_cli("tune", "replay", "--threshold", "0.55", "--margin", "0.05", *common)
    assert same.returncode == 0 and "0 decisions would change" in same.stdout, same.stdout
    strict = run_cli("tune", "replay", "--threshold", "0.05", *common)
    assert "grant -> deny" in strict.stdout
    report = run_cli("tune", "report", "--plot", tmp_path / "det.png", "--target-far", "0.05", *common)
    assert "labelled attempts" in report.stdout and (tmp_path / "det.png").stat().st_size > 5000
    import cv2

    picture = cv2.imread(str(tmp_path / "det.png"))
    green = np.count_nonzero((picture[:, :, 1] > 120) & (picture[:, :, 2] < 90) & (picture[:, :, 0] < 90))
    red = np.count_nonzero((picture[:, :, 2] > 150) & (picture[:, :, 1] < 90) & (picture[:, :, 0] < 90))
    assert green > 50 and red > 50  # both distributions are drawn
    orange = np.count_nonzero((picture[:, :, 2] > 200) & (picture[:, :, 1] > 100) & (picture[:, :, 1] < 180)
                              & (picture[:, :, 0] < 60))
    assert orange > 100  # the threshold's line, always (the door's own when there is no recommendation)
    assert picture.shape[1] >= 940  # the DET's last tick label fits


def test_capture_records_labelled_attempts_from_a_video(tmp_path, models_dir):
    from test_service import PROBES, make_clip
    from appliance.audit import AuditStore

    gallery = tmp_path / "g.db"
    assert run_cli("enroll", "--from-dir", SEED / "gallery", "--gallery", gallery).returncode == 0
    clip = make_clip(tmp_path / "obama.mp4", [PROBES / "obama.jpg"] * 2, seconds=2.0)
    result = run_cli("tune", "capture", "obama", "--count", "2", "--camera", clip, "--gallery", gallery,
                     "--audit", tmp_path / "a.db")
    assert result.returncode == 0, result.stdout + result.stderr
    captures = AuditStore(tmp_path / "a.db").events(kind="capture")
    assert len(captures) == 2
    assert all(c.label and c.embedding is not None and c.detail["decided"] == "grant" for c in captures)


def test_capture_refuses_someone_else_and_the_report_flags_a_wrong_label(tmp_path, models_dir):
    """`tune capture obama` with 刘德华 at the door used to store four attempts labelled obama."""
    from test_service import PROBES, make_clip
    from appliance.audit import AuditStore

    gallery = tmp_path / "g.db"
    assert run_cli("enroll", "--from-dir", SEED / "gallery", "--gallery", gallery).returncode == 0
    common = ["--gallery", gallery, "--audit", tmp_path / "a.db"]
    other = make_clip(tmp_path / "ldh.mp4", [PROBES / "ldh.jpg"] * 4, seconds=1.5)
    refused = run_cli("tune", "capture", "obama", "--count", "4", "--camera", other, *common)
    assert refused.returncode == 2 and "not recorded: this face is nearest to 刘德华" in refused.stdout
    assert "is obama the person in front of the camera?" in refused.stderr
    assert not Path(tmp_path / "a.db").exists() or AuditStore(tmp_path / "a.db").events(kind="capture") == []
    clip = make_clip(tmp_path / "obama.mp4", [PROBES / "obama.jpg"] * 2, seconds=2.0)
    assert run_cli("tune", "capture", "obama", "--count", "2", "--camera", clip, *common).returncode == 0
    first = AuditStore(tmp_path / "a.db").events(kind="capture")[0]
    assert run_cli("tune", "label", str(first.id), "--person", "刘德华", *common).returncode == 0  # a wrong label
    report = run_cli("tune", "report", *common)
    assert "WARNING: event %d is labelled 刘德华, but the door accepts that face as obama" % first.id in report.stdout
    assert "1 of 2 labelled attempts contradict their labels" in report.stdout


def test_a_threshold_that_admits_strangers_is_refused_unless_forced(tmp_path, models_dir):
    door = tmp_path / "door.toml"
    door.write_text("# the site's door\n[matching]\ndistance_threshold = 1.7\n")
    check = run_cli("config", "--check", door)
    assert check.returncode == 2
    assert "threshold 1.700 is looser than the" in check.stderr and "strangers' visits" in check.stderr
    assert "allow_looser_than_target" in check.stderr
    door.write_text("# the site's door\n[matching]\ndistance_threshold = 0.3\n")
    assert run_cli("config", "--check", door).returncode == 0
    refused = run_cli("tune", "apply", "1.7", "--config", door)
    assert refused.returncode == 2 and "not applied" in refused.stderr and "--force" in refused.stderr
    assert "distance_threshold = 0.3" in door.read_text()
    forced = run_cli("tune", "apply", "1.7", "--config", door, "--force")
    assert forced.returncode == 0 and "WARNING: threshold 1.700 is looser" in forced.stdout
    assert load(door).matching.allow_looser_than_target and load(door).matching.distance_threshold == 1.7
    assert run_cli("config", "--check", door).returncode == 0  # the file says the risk was chosen


def test_a_remote_threshold_that_admits_strangers_is_refused_unless_forced(tmp_path, pipeline):
    from test_mqtt import Door, admin_for, door_settings, SiteKeys
    from broker import Broker

    from appliance.gallery.index import GalleryIndex
    from appliance.recognition.verification import Verifier

    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder)
    keys = SiteKeys(tmp_path)
    door = Door(door_settings(tmp_path, broker, keys), pipeline)
    verifier = Verifier(door.config, pipeline, GalleryIndex(door.agent.store))
    door.agent.set_matching = verifier.set_matching
    admin = admin_for(broker, keys)
    try:
        refused = admin.send("door1", "set_threshold", {"distance_threshold": 1.9})[0]
        assert refused["ok"] is False and refused["code"] == "refused"
        assert "looser than the" in refused["message"] and "--force" in refused["message"]
        assert verifier.threshold.source == "target"
        forced = admin.send("door1", "set_threshold", {"distance_threshold": 1.9, "force": True})[0]
        assert forced["ok"] and verifier.threshold.value == 1.9
    finally:
        admin.close()
        door.close()
        broker.stop()
