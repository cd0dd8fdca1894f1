"""Enrolment and identification with the real models on the seed's photos."""

import shutil

import pytest

from appliance.recognition.decision import decide, threshold_for
from appliance.gallery.enrol import Enroller, group_photos
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore
from appliance.vision.pipeline import read_image

from conftest import SEED, run_cli

GALLERY = SEED / "gallery"
PORTRAITS = {"obama.jpg": "obama", "ldh.jpg": "刘德华", "lm.jpg": "黎明",
             "zhangxueyou.jpg": "张学友", "5.jpg": "张学友"}


@pytest.fixture(scope="module")
def seed_gallery(tmp_path_factory, pipeline):
    path = tmp_path_factory.mktemp("gallery") / "gallery.db"
    store = GalleryStore(path, model_id=pipeline.embedder.model_id)
    report = Enroller(pipeline.config, pipeline, store).enrol_folder(GALLERY)
    yield store, report
    store.close()


def test_seed_gallery_enrols_all_five_people(seed_gallery):
    store, report = seed_gallery
    assert sorted(p.name for p, _ in report.enrolled) == sorted(p.name for p in GALLERY.iterdir())
    for photo, reason in report.skipped:  # refusals carry their reason
        assert reason and not reason.startswith("not enrolled")


@pytest.mark.parametrize("photo,name", sorted(PORTRAITS.items()))
def test_single_portraits_are_named_right(seed_gallery, pipeline, photo, name):
    store, _ = seed_gallery
    index = GalleryIndex(store)
    image = read_image(SEED / "probes" / photo)
    results = pipeline.analyse(image)
    main = max(results, key=lambda r: r.face.width)
    threshold = threshold_for(pipeline.config, store.model_id, index.template_counts()).value
    decision = decide(index.search(main.embedding), threshold, pipeline.config.matching)
    assert decision.accepted and decision.match.person.name == name, decision.reason


@pytest.mark.parametrize("photo", ["4.jpeg", "4_2.jpg", "4_3.jpg", "4_4.jpg"])
def test_group_photos_name_all_four(seed_gallery, pipeline, photo):
    store, _ = seed_gallery
    index = GalleryIndex(store)
    image = read_image(SEED / "probes" / photo)
    threshold = threshold_for(pipeline.config, store.model_id, index.template_counts()).value
    decisions = [decide(index.search(r.embedding), threshold, pipeline.config.matching)
                 for r in pipeline.analyse(image)]
    names = sorted(d.match.person.name for d in decisions if d.accepted)
    assert names == sorted(["刘德华", "张学友", "郭富城", "黎明"])


def test_duplicate_is_refused_unless_forced(seed_gallery, pipeline, tmp_path):
    store, _ = seed_gallery
    enroller = Enroller(pipeline.config, pipeline, store)
    photo = GALLERY / "obama" / "obama_1.jpg"  # the same face under another name
    report = enroller.enrol("Barack", [photo])
    assert not report.enrolled and "looks like obama" in report.skipped[-1][1]
    forced = enroller.enrol("Barack", [photo], force=True)
    assert forced.enrolled and forced.enrolled[0][0].name == "Barack"
    store.remove("Barack")


def test_group_photo_and_corrupt_photo_are_skipped_with_reasons(pipeline, tmp_path):
    folder = tmp_path / "people"
    (folder / "Ann").mkdir(parents=True)
    shutil.copy(SEED / "probes" / "obama.jpg", folder / "Ann" / "ann_1.jpg")
    (folder / "Ann" / "ann_2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "Group").mkdir()
    shutil.copy(SEED / "probes" / "4_2.jpg", folder / "Group" / "g.jpg")
    with GalleryStore(tmp_path / "g.db") as store:
        report = Enroller(pipeline.config, pipeline, store).enrol_folder(folder)
    reasons = dict(report.skipped)
    assert [p.name for p, n in report.enrolled] == ["Ann"] and report.enrolled[0][1] == 1
    assert "not a readable image" in reasons[str(folder / "Ann" / "ann_2.jpg")]
    assert "4 faces in the photo" in reasons[str(folder / "Group" / "g.jpg")]


def test_flat_folder_naming_groups_by_name(tmp_path):
    for name in ("alice_1.jpg", "alice_2.jpg", "bob_1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    groups = group_photos(tmp_path)
    assert {k: [p.name for p in v] for k, v in groups.items()} == {
        "alice": ["alice_1.jpg", "alice_2.jpg"], "bob": ["bob_1.png"]}


def test_cli_enrol_identify_people_export_import(tmp_path):
    gallery = tmp_path / "g.db"
    result = run_cli("enroll", "--from-dir", GALLERY, "--gallery", gallery)
    assert result.returncode == 0, result.stderr
    assert "5 people enrolled" in result.stdout
    identified = run_cli("identify", SEED / "probes" / "obama.jpg", "--gallery", gallery,
                         "--out", tmp_path / "out.jpg")
    assert "obama (distance" in identified.stdout and (tmp_path / "out.jpg").is_file()
    again = run_cli("enroll", "obama", SEED / "probes" / "obama.jpg", "--gallery", gallery)
    assert again.returncode == 1 and "already enrolled" in again.stdout
    assert "--add" in again.stdout and "--force" not in again.stdout  # the one option that does it
    missing = run_cli("people", "remove", "Nobody", "--gallery", gallery)
    assert missing.returncode == 2 and "no person 'Nobody'" in missing.stderr
    assert "Traceback" not in missing.stderr
    export = tmp_path / "backup.json"
    assert run_cli("gallery", "export", export, "--gallery", gallery).returncode == 0
    assert run_cli("people", "remove", "obama", "--gallery", gallery).returncode == 0
    copy = tmp_path / "copy.db"
    imported = run_cli("gallery", "import", export, "--gallery", copy)
    assert "imported 5 people" in imported.stdout
    listing = run_cli("people", "list", "--gallery", copy).stdout
    assert "obama" in listing and "5 people" in listing
    assert "imported 1 people" in run_cli("gallery", "import", export, "--gallery", gallery).stdout


def test_reembed_recomputes_from_kept_crops(tmp_path, pipeline):
    from appliance.gallery.transfer import reembed

    with GalleryStore(tmp_path / "g.db") as store:
        Enroller(pipeline.config, pipeline, store).enrol("obama", [GALLERY / "obama" / "obama_1.jpg"])
        _, before, version = store.matrix()
        assert reembed(store, pipeline.embedder) == 1
        _, after, new_version = store.matrix()
        assert new_version == version + 1
        # the crop round-trips through PNG, so the embedding is the same up to float noise
        assert float(before[0] @ after[0]) > 0.999


def test_a_gallery_of_the_previous_embedder_is_refused_then_reembedded(tmp_path, models_dir):
    """Galleries enrolled before the MS1M default hold CASIA embeddings: the door says what to do,
    and `gallery reembed` makes them work from their kept crops."""
    old = tmp_path / "casia.toml"
    old.write_text('[models]\nembedder = "mobilefacenet_casia_128d"\n')
    gallery = tmp_path / "g.db"
    photo = SEED / "probes" / "obama.jpg"
    assert run_cli("enroll", "--from-dir", GALLERY, "--gallery", gallery, "--config", old).returncode == 0
    refused = run_cli("identify", photo, "--gallery", gallery)
    assert refused.returncode == 2 and "facegate gallery reembed" in refused.stderr, refused.stderr
    done = run_cli("gallery", "reembed", "--gallery", gallery)
    assert done.returncode == 0, done.stderr
    named = run_cli("identify", photo, "--gallery", gallery)
    assert named.returncode == 0 and "obama" in named.stdout, named.stdout + named.stderr


def test_reading_commands_refuse_a_missing_gallery_and_unknown_names_get_close_matches(tmp_path, models_dir):
    gallery = tmp_path / "g.db"
    created = run_cli("enroll", "--from-dir", GALLERY, "--gallery", gallery)
    assert created.returncode == 0 and "creating a new gallery" in created.stdout
    typo = tmp_path / "typo.db"
    for command in (["people", "list"], ["people", "show", "obama"], ["gallery", "export", tmp_path / "x.json"]):
        result = run_cli(*command, "--gallery", typo)
        assert result.returncode == 2 and "does not exist" in result.stderr, (command, result.stderr)
        assert not typo.exists()
    misspelt = run_cli("enroll", "obamma", GALLERY / "obama" / "obama_1.jpg", "--add", "--gallery", gallery)
    assert misspelt.returncode == 1 and "did you mean 'obama'" in misspelt.stdout, misspelt.stdout
    assert "obamma" not in run_cli("people", "list", "--gallery", gallery).stdout
    shown = run_cli("people", "show", "obamma", "--gallery", gallery)
    assert shown.returncode == 2 and "did you mean 'obama'" in shown.stderr
    audit = tmp_path / "a.db"
    from appliance.audit import AuditStore

    AuditStore(audit).close()
    kind = run_cli("audit", "--audit", audit, "--kind", "grnt")
    assert kind.returncode == 2 and "did you mean grant" in kind.stderr, kind.stderr


def test_changes_at_the_console_go_into_the_doors_audit_trail_with_the_user(tmp_path, models_dir):
    from appliance.audit import AuditStore

    audit = tmp_path / "audit.db"
    AuditStore(audit).close()  # the door's trail exists here
    config = tmp_path / "door.toml"
    config.write_text('[audit]\npath = "%s"\n[gallery]\npath = "%s"\n' % (audit, tmp_path / "g.db"))
    assert run_cli("enroll", "obama", GALLERY / "obama" / "obama_1.jpg", "--config", config).returncode == 0
    assert run_cli("people", "disable", "obama", "--config", config).returncode == 0
    assert run_cli("people", "remove", "obama", "--config", config).returncode == 0
    changes = [e for e in AuditStore(audit).events() if e.kind == "change"]
    assert [(e.detail["action"], e.person_name) for e in changes] == [
        ("enroll", "obama"), ("disable", "obama"), ("remove", "obama")]
    assert all(e.detail["origin"]["via"] == "cli" and e.detail["origin"]["user"] for e in changes)


def test_removing_a_person_at_a_terminal_asks_first(tmp_path, models_dir):
    import os
    import subprocess
    import sys

    from conftest import MODELS, ROOT

    gallery = tmp_path / "g.db"
    assert run_cli("enroll", "obama", GALLERY / "obama" / "obama_1.jpg", "--gallery", gallery).returncode == 0
    for answer, kept in ((b"n\n", True), (b"y\n", False)):
        master, slave = os.openpty()  # a real terminal on stdin: the installer at the console
        process = subprocess.Popen([sys.executable, "-m", "appliance", "people", "remove", "obama", "--gallery",
                                    str(gallery)], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   cwd=ROOT, env=dict(os.environ, FACEGATE_MODELS_DIR=str(MODELS)))
        os.write(master, answer)
        out, err = process.communicate(timeout=60)
        os.close(master)
        os.close(slave)
        assert b"remove obama" in out and b"1 template" in out, out + err
        listing = run_cli("people", "list", "--gallery", gallery).stdout
        assert ("obama" in listing) == kept, listing
    assert run_cli("people", "remove", "nobody", "--gallery", gallery, "--yes").returncode == 2


def person_id(gallery, name):
    from appliance.gallery.store import GalleryStore

    store = GalleryStore(str(gallery))
    try:
        return store.find(name).id
    finally:
        store.close()


def test_names_in_any_script_are_drawn_not_replaced_by_ids(tmp_path):
    import cv2
    import numpy as np

    from appliance.vision.labels import draw_label, font_for

    font = font_for("刘德华")
    assert font is not None, "no installed font draws Chinese: run 'make system-deps'"
    assert font_for("Zoë Ψ Жанна") is not None

    def drawn(text):
        canvas = np.zeros((40, 160, 3), np.uint8)
        draw_label(canvas, text, (2, 30), (255, 255, 255), fallback="?")
        return canvas

    white = np.full((40, 160, 3), 255, np.uint8)
    draw_label(white, "Ada", (10, 30), (255, 255, 255), fallback="?")  # white on a white wall
    assert (white[12:30, 10:40] < 100).mean() > 0.5  # reads all the same: a dark box behind it
    glyphs = [drawn(char) for char in "刘德华"]
    assert all(g.any() for g in glyphs)  # ink, and three different glyphs, not three "no glyph" boxes
    assert not np.array_equal(glyphs[0], glyphs[1]) and not np.array_equal(glyphs[1], glyphs[2])

    gallery = tmp_path / "g.db"
    assert run_cli("enroll", "--from-dir", GALLERY, "--gallery", gallery).returncode == 0
    out = tmp_path / "named.jpg"
    result = run_cli("identify", SEED / "probes" / "ldh.jpg", "--gallery", gallery, "--out", out)
    assert "刘德华 (distance" in result.stdout, result.stdout
    image = cv2.imread(str(out))
    # the label above the face is the name itself: the same pixels as drawing it here, not the id
    line = next(l for l in result.stdout.splitlines() if "刘德华" in l)
    x1, y1 = (int(v) for v in line.split("(")[1].split(")")[0].split(", "))
    x2 = int(line.split("(")[2].split(",")[0])
    distance = " %.2f" % float(line.split("distance ")[1].split(",")[0].split(")")[0])
    size = max(18, min(40, (x2 - x1) // 6))  # as identify draws it: larger on a larger face
    plain = cv2.imread(str(SEED / "probes" / "ldh.jpg"))
    label = (slice(max(0, y1 - 5 - size), y1 - 3), slice(x1, x1 + 3 * size))
    def ink(picture):  # the label's green strokes
        region = picture[label].astype(int)
        return (region[..., 1] > 120) & (region[..., 0] < 90) & (region[..., 2] < 90)

    overlap = {}
    for text in ("刘德华", "unknown", person_id(gallery, "刘德华")):
        expected = plain.copy()
        draw_label(expected, text + distance, (x1, max(size, y1 - 5)), (0, 200, 0), fallback=text, size=size)
        drawn, wanted = ink(image), ink(expected)
        overlap[text] = (drawn & wanted).sum() / max(1, (drawn | wanted).sum())
    # the strokes drawn are the name's (up to JPEG noise), not those of the id or of "unknown"
    assert overlap["刘德华"] > 0.5 and max(overlap["unknown"], overlap[person_id(gallery, "刘德华")]) < 0.3, overlap


def feed_photo_after_interrupt(process, pipe, photo: bytes) -> None:
    """Write `photo` into the pipe the process reads, once it opens it, unless it ends first."""
    import errno
    import os
    import subprocess

    while process.poll() is None:
        try:
            descriptor = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading yet
                raise
            try:
                process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:  # still running: look again
                pass
            continue
        try:
            os.write(descriptor, photo)  # smaller than a pipe's buffer: written whole at once
        finally:
            os.close(descriptor)
        return


def test_an_interrupted_folder_enrolment_says_what_it_kept_and_a_rerun_goes_on(tmp_path):
    import signal
    import sqlite3
    import subprocess
    import sys

    from conftest import LFW, ROOT, wait_until

    import os

    folder = tmp_path / "people"
    people = sorted((LFW / "images").iterdir())[:40]
    for person in people:
        (folder / person.name).mkdir(parents=True)
        shutil.copy(sorted(person.iterdir())[0], folder / person.name)
    # the tenth person's photo is a pipe nobody writes to: reading it waits until the Ctrl-C, so
    # the enrolment is surely interrupted midway, however fast or busy the machine (some of the
    # first nine photos have no usable face)
    held = folder / people[9].name / sorted(people[9].iterdir())[0].name
    held.unlink()
    os.mkfifo(held)
    gallery = tmp_path / "g.db"

    def enrolled():
        if not gallery.exists():
            return 0
        try:
            with sqlite3.connect("file:%s?mode=ro" % gallery, uri=True) as db:
                return db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
        except sqlite3.Error:
            return 0

    # as at a terminal: a shell's background job (CI started as one) leaves SIGINT ignored, and a
    # Python started so never takes Ctrl-C
    process = subprocess.Popen([sys.executable, "-m", "appliance", "enroll", "--from-dir", str(folder),
                                "--gallery", str(gallery)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_until(lambda: enrolled() >= 3, timeout=120)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        # The photo arrives now. Python takes a signal between bytecodes; one that reached another
        # thread while the main one was committing (SIGINT held back there) waits for the read
        # to return, as it would for a slow disk
        feed_photo_after_interrupt(process, held, sorted(people[9].iterdir())[0].read_bytes())
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # never left waiting on the pipe after a failure
            process.kill()
            process.wait()
    kept = enrolled()
    assert process.returncode == 130 and "Traceback" not in err
    assert "interrupted: the %d people enrolled above are kept" % kept in err
    assert out.count("enrolled ") >= kept and 3 <= kept < 10
    held.unlink()
    shutil.copy(sorted(people[9].iterdir())[0], held)
    rerun = run_cli("enroll", "--from-dir", folder, "--gallery", gallery)
    assert rerun.returncode in (0, 1), rerun.stderr  # 1 only if some photo had no usable face
    assert "%d people were already enrolled, left as they are" % kept in rerun.stdout
    assert "--force" not in rerun.stdout
    total = enrolled()
    assert total > kept and "%d people enrolled" % (total - kept) in rerun.stdout
