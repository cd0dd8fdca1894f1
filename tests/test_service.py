"""The running door end to end: real models, a real gallery, video files, a relay on a pty."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import LFW, MODELS, ROOT, SEED, run_cli

from appliance.audit import AuditStore
from appliance.config import from_dict
from facegate_host.emulator import RelayEmulator
from appliance.door.states import Access
from appliance.gallery.enrol import Enroller
from appliance.gallery.store import GalleryStore
from appliance.service import build_service

PROBES = SEED / "probes"
# LFW people who are not in the seed gallery
STRANGERS = [LFW / "images" / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg",
             LFW / "images" / "Abdoulaye_Wade" / "Abdoulaye_Wade_0001.jpg",
             LFW / "images" / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"]


@pytest.fixture(scope="module")
def gallery_path(tmp_path_factory, pipeline):
    path = tmp_path_factory.mktemp("door") / "gallery.db"
    store = GalleryStore(path, model_id=pipeline.embedder.model_id)
    Enroller(pipeline.config, pipeline, store).enrol_folder(SEED / "gallery")
    store.close()
    return path


def make_clip(path, photos, seconds=2.0, fps=15):
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(path), *map(str, photos),
                    "--seconds", str(seconds), "--fps", str(fps)], check=True)
    return path


def door_config(tmp_path, gallery_path, source, relay_port, **sections):
    raw = {"models": {"dir": str(MODELS)}, "gallery": {"path": str(gallery_path)},
           "audit": {"path": str(tmp_path / "audit.db")},
           "camera": {"source": str(source)}, "relay": {"port": relay_port},
           "door": {"unlock_seconds": 1.0, "deny_seconds": 0.3, "cooldown_seconds": 0.3}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return from_dict(raw, "test")


@pytest.fixture
def emulator(tmp_path):
    built = RelayEmulator(link=str(tmp_path / "relay"))
    yield built
    built.close()


def test_enrolled_visitors_are_granted_and_the_relay_follows(tmp_path, gallery_path, pipeline, emulator):
    clip = make_clip(tmp_path / "visitors.mp4", [PROBES / "obama.jpg", PROBES / "ldh.jpg"], seconds=2.5)
    config = door_config(tmp_path, gallery_path, clip, emulator.path)
    service = build_service(config, pipeline=pipeline)
    counters = service.run()
    grants = AuditStore(tmp_path / "audit.db").events(kind="grant")
    assert [g.person_name for g in grants] == ["obama", "刘德华"]
    assert counters.decisions["grant"] == 2
    assert all(g.latency_ms is not None and g.latency_ms < 2000 and g.snapshot for g in grants)
    assert [e.on for e in emulator.changes()] == [False, True, False, True, False]
    assert not emulator.is_on()  # the end of the video locked the door


def test_a_stranger_only_clip_gives_denials_and_no_unlock(tmp_path, gallery_path, pipeline, emulator):
    clip = make_clip(tmp_path / "strangers.mp4", STRANGERS, seconds=2.0)
    config = door_config(tmp_path, gallery_path, clip, emulator.path)
    counters = build_service(config, pipeline=pipeline).run()
    events = AuditStore(tmp_path / "audit.db").events()
    assert counters.decisions["grant"] == 0
    assert [e.kind for e in events] and {e.kind for e in events} == {"deny"}
    assert len(events) >= len(STRANGERS)
    assert all(e.person_id is None and "nearest" in e.detail for e in events)
    assert emulator.events and not any(e.on for e in emulator.events)


def test_a_camera_that_disappears_gives_a_fault_and_recovers(tmp_path, gallery_path, pipeline, emulator):
    clip = make_clip(tmp_path / "loop.mp4", [PROBES / "obama.jpg"], seconds=1.0)
    config = door_config(tmp_path, gallery_path, clip, emulator.path, camera={"loop": True})
    service = build_service(config, pipeline=pipeline)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        hidden = clip.with_name("away.mp4")
        os.rename(clip, hidden)  # the camera goes away; the loop's next reopen fails
        deadline = time.monotonic() + 10
        while service.controller.access is not Access.fault and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.controller.access is Access.fault
        assert not emulator.is_on()
        os.rename(hidden, clip)
        deadline = time.monotonic() + 10
        while "camera" in service.controller.faults and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "camera" not in service.controller.faults
        assert service.controller.access is not Access.fault
    finally:
        service.stop()
        runner.join(timeout=10)
    kinds = [(e.kind, e.detail.get("source")) for e in AuditStore(tmp_path / "audit.db").events()
             if e.kind in ("fault", "recovered")]
    assert kinds == [("fault", "camera"), ("recovered", "camera")]
    assert not emulator.is_on()


def write_config(tmp_path, text):
    path = tmp_path / "door.toml"
    path.write_text(text)
    return path


def start_door(tmp_path, gallery_path, emulator, audit="a.db"):
    """`facegate run` as its own process, with obama in front of the camera for ever."""
    folder = tmp_path / "camera"
    folder.mkdir(exist_ok=True)
    (folder / "1.jpg").write_bytes((PROBES / "obama.jpg").read_bytes())
    config = write_config(tmp_path, """
[camera]
folder_fps = 10.0
loop = true
[door]
unlock_seconds = 60.0
""")
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config), "--camera", str(folder),
         "--relay-port", emulator.path, "--gallery", str(gallery_path), "--audit", str(tmp_path / audit),
         "--models-dir", str(MODELS)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# SIGHUP and SIGUSR1 end a process at once by default, with no Python code run: the relay stayed on
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT, signal.SIGABRT,
                                    signal.SIGTRAP, signal.SIGSYS])
def test_any_ending_signal_while_unlocked_locks_the_door_first(tmp_path, gallery_path, emulator, signum):
    service = start_door(tmp_path, gallery_path, emulator)
    try:
        assert emulator.wait_for(lambda e: e.is_on(), timeout=60), "never unlocked"
        service.send_signal(signum)
        assert service.wait(timeout=20) == 0
    finally:
        if service.poll() is None:
            service.kill()
    assert emulator.wait_for(lambda e: not e.is_on(), timeout=2)
    unlocked_at = [e.at for e in emulator.events if e.on][-1]
    assert emulator.events[-1].at - unlocked_at < 30  # locked by the signal, not by the 60 s timer
    assert "stopping on %s: locking the door first" % signal.Signals(signum).name in service.stdout.read()


def test_a_second_door_on_the_same_gallery_refuses_to_start_and_names_the_first(tmp_path, gallery_path, emulator):
    first = start_door(tmp_path, gallery_path, emulator)
    try:
        assert emulator.wait_for(lambda e: e.is_on(), timeout=60), "never unlocked"
        switched = len(emulator.events)
        second = run_cli("run", "--config", tmp_path / "door.toml", "--camera", tmp_path / "camera",
                         "--relay-port", emulator.path, "--gallery", gallery_path, "--audit", tmp_path / "a.db",
                         "--models-dir", MODELS)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "in use by another FaceGate door (pid %d, running since" % first.pid in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        # the first door's relay untouched: a second door would lock it first thing, and the first,
        # unlocked for 60 s, only ever says "on" again while obama stays in view
        assert not [e for e in emulator.events[switched:] if not e.on] and emulator.is_on()
        # nor can an installer's relay test drive the relay a running door holds
        test = run_cli("relay", "test", "--seconds", "1", "--port", emulator.path)
        assert test.returncode == 2 and "held by another process" in test.stderr, test.stderr
    finally:
        first.terminate()
        first.wait(timeout=20)


def test_a_relay_test_ended_by_sigterm_locks_the_relay(tmp_path, emulator):
    test = subprocess.Popen([sys.executable, "-m", "appliance", "relay", "test", "--seconds", "100",
                             "--port", emulator.path], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert emulator.wait_for(lambda e: e.is_on(), timeout=20)
        test.send_signal(signal.SIGTERM)
        assert test.wait(timeout=10) == 130
    finally:
        if test.poll() is None:
            test.kill()
    assert emulator.wait_for(lambda e: not e.is_on(), timeout=2)
    out = test.stdout.read()
    assert "sent the lock command (stopped early by SIGTERM)" in out and "listen for the strike" in out
    bad = run_cli("relay", "test", "--seconds", "-1", "--port", emulator.path)
    assert bad.returncode == 2 and "--seconds must be more than 0" in bad.stderr and "Traceback" not in bad.stderr


def test_bad_configs_exit_with_one_line_and_the_door_locked(tmp_path, gallery_path, emulator):
    clip = make_clip(tmp_path / "one.mp4", [PROBES / "obama.jpg"], seconds=0.5)
    common = ["--gallery", gallery_path, "--audit", tmp_path / "a.db", "--models-dir", MODELS]

    unknown = write_config(tmp_path, "[door]\nunlock_secs = 3\n")
    result = run_cli("run", "--config", unknown, "--camera", clip, "--relay-port", emulator.path, *common)
    assert result.returncode == 2
    assert "unknown key 'unlock_secs' in [door]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = run_cli("run", "--camera", clip, "--relay-port", tmp_path / "ttyUSB9", *common)
    assert result.returncode == 2 and "cannot open relay port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    result = run_cli("run", "--camera", broken, "--relay-port", emulator.path, *common)
    assert result.returncode == 2 and "cannot open camera source" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert emulator.events and not any(e.on for e in emulator.events)  # locked, never released


def test_idle_saving_detects_at_the_reduced_rate_with_nobody_there(tmp_path, gallery_path, pipeline,
                                                                     emulator):
    import cv2
    import numpy as np

    clip = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for _ in range(75):  # 3 s of an empty, still doorway
        writer.write(np.full((240, 320, 3), 90, np.uint8))
    writer.release()
    config = door_config(tmp_path, gallery_path, clip, emulator.path, verification={"idle_fps": 4.0})
    counters = build_service(config, pipeline=pipeline).run()
    assert counters.frames >= 70
    assert 8 <= counters.detected <= 20  # about 4 a second, not 25
    assert counters.skipped == counters.frames - counters.detected


def test_decisions_keep_the_probe_embedding_for_tuning(tmp_path, gallery_path, pipeline, emulator):
    clip = make_clip(tmp_path / "one.mp4", [PROBES / "obama.jpg"], seconds=1.5)
    build_service(door_config(tmp_path, gallery_path, clip, emulator.path), pipeline=pipeline).run()
    grant = AuditStore(tmp_path / "audit.db").events(kind="grant")[0]
    assert grant.model_id == pipeline.embedder.model_id
    assert grant.embedding.shape == (128,) and abs(float(np.linalg.norm(grant.embedding)) - 1) < 1e-3


def test_a_queue_gets_one_right_decision_per_person(tmp_path, gallery_path, pipeline, emulator):
    """Visitors step into the same place one after another, under half a second apart: the box
    alone cannot tell them apart, the embedding can."""
    visitors = [PROBES / "obama.jpg", STRANGERS[0], PROBES / "ldh.jpg", STRANGERS[1], PROBES / "lm.jpg"]
    clip = tmp_path / "queue.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(clip), *map(str, visitors),
                    "--seconds", "2.2", "--fps", "15", "--gap", "0.2", "--approach", "0"], check=True)
    # the clip pastes photos onto a plain background, edges and all: liveness rightly takes
    # 刘德华's for a photo (0.05 here), and this test is about telling the visitors apart
    config = door_config(tmp_path, gallery_path, clip, emulator.path,
                         door={"unlock_seconds": 0.6, "deny_seconds": 0.2, "cooldown_seconds": 0.2},
                         liveness={"enabled": False})
    counters = build_service(config, pipeline=pipeline).run()
    decisions = [(e.kind, e.person_name) for e in AuditStore(tmp_path / "audit.db").events()
                 if e.kind in ("grant", "deny")]
    assert decisions == [("grant", "obama"), ("deny", None), ("grant", "刘德华"), ("deny", None),
                         ("grant", "黎明")]
    assert counters.decisions == {"grant": 3, "deny": 2}
    assert sum(e.on for e in emulator.changes()) == 3  # the relay switched for the three grants only


def test_a_recording_replayed_frame_by_frame_reaches_a_slow_door_whole_and_on_its_own_clock(tmp_path):
    from appliance.camera import LatestFrameReader

    clip = make_clip(tmp_path / "clip.mp4", [PROBES / "obama.jpg"], seconds=1.0, fps=10)
    slow = LatestFrameReader(str(clip), every_frame=True)
    frames = []
    try:
        while True:
            frame = slow.latest(timeout=10)
            if frame is None:
                break
            frames.append((frame.number, frame.captured))
            time.sleep(0.15)  # slower than the clip's 10 frames a second
    finally:
        slow.close()
    numbers = [n for n, _ in frames]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 9 and slow.dropped == 0
    gaps = np.diff([t for _, t in frames])
    assert np.allclose(gaps, 0.1, atol=1e-6)  # the clip's clock, not the slow reader's
    live_like = LatestFrameReader(str(clip), realtime=False)  # the default hands over the newest
    try:
        time.sleep(1.0)
        assert live_like.latest(timeout=5) is not None and live_like.dropped > 0
    finally:
        live_like.close()


def test_a_face_too_small_to_decide_on_is_said_in_the_log(tmp_path, gallery_path, pipeline, emulator, caplog):
    import cv2
    import numpy as np

    from appliance.recognition.tracker import face_width

    photo = cv2.imread(str(PROBES / "obama.jpg"))
    small = cv2.resize(photo, None, fx=0.25, fy=0.25)
    canvas = np.full((photo.shape[0], photo.shape[1], 3), 90, np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small  # the same face, far from the camera
    folder = tmp_path / "far"
    folder.mkdir()
    cv2.imwrite(str(folder / "1.jpg"), canvas)
    config = door_config(tmp_path, gallery_path, folder, emulator.path, camera={"folder_fps": 10.0, "loop": False})
    widest = max(face_width(f) for f in pipeline.detect(canvas))
    assert widest < config.verification.min_face_pixels  # the case: seen, but too small
    service = build_service(config, pipeline=pipeline)
    with caplog.at_level("INFO", logger="appliance.recognition.verification"):
        service.run()
    said = [r.getMessage() for r in caplog.records if "too small to decide on" in r.getMessage()]
    assert len(said) == 1 and "%.0f px wide" % widest in said[0] and "min_face_pixels is" in said[0]
    assert not emulator.is_on() and service.counters.decisions == {"grant": 0, "deny": 0}
