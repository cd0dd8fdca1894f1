"""Gallery store and index on real SQLite files."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from appliance.errors import GalleryError
from appliance.recognition.decision import decide
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import SCHEMA_VERSION, GalleryStore, Template
from appliance.config import MatchingConfig

from conftest import ROOT


def unit(seed, dims=128):
    vector = np.random.default_rng(seed).normal(size=dims).astype(np.float32)
    return vector / np.linalg.norm(vector)


def near(vector, seed, noise=0.2):
    other = vector + noise * unit(seed) / np.sqrt(1)
    return (other / np.linalg.norm(other)).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    with GalleryStore(tmp_path / "gallery.db") as opened:
        yield opened


def test_database_is_wal_with_full_sync_and_versioned(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._schema_version() == SCHEMA_VERSION and store.version == 0


def test_enrol_find_disable_remove_bump_the_version(store):
    person = store.enrol("Ada", [Template(unit(1)), Template(unit(2))], "model-a", note="staff")
    assert person.templates == 2 and person.enabled and store.version == 1
    assert store.find("Ada").id == person.id == store.find(person.id).id
    store.set_enabled("Ada", False)
    assert not store.find("Ada").enabled and store.version == 2
    store.add_templates("Ada", [Template(unit(3))], "model-a")
    assert store.find("Ada").templates == 3
    store.remove(person.id)
    assert store.people() == [] and store.version == 4
    assert store.db.execute("SELECT COUNT(*) FROM templates").fetchone()[0] == 0


def test_clear_errors_for_unknown_twice_and_model_mix(store):
    with pytest.raises(GalleryError, match="no person 'Nobody'"):
        store.remove("Nobody")
    store.enrol("Ada", [Template(unit(1))], "model-a")
    with pytest.raises(GalleryError, match="already enrolled"):
        store.enrol("Ada", [Template(unit(2))], "model-a")
    with pytest.raises(GalleryError, match="model model-b"):
        store.enrol("Bob", [Template(unit(2))], "model-b")
    assert [p.name for p in store.people()] == ["Ada"]


def test_template_maximum(tmp_path):
    with GalleryStore(tmp_path / "g.db", max_templates=2) as store:
        with pytest.raises(GalleryError, match="maximum is 2"):
            store.enrol("Ada", [Template(unit(i)) for i in range(3)], "m")
        store.enrol("Ada", [Template(unit(1))], "m")
        store.add_templates("Ada", [Template(unit(2))], "m")
        with pytest.raises(GalleryError, match="pass the maximum"):
            store.add_templates("Ada", [Template(unit(3))], "m")


def test_opening_with_another_model_is_refused(tmp_path):
    with GalleryStore(tmp_path / "g.db") as store:
        store.enrol("Ada", [Template(unit(1))], "model-a")
    with pytest.raises(GalleryError, match="reembed"):
        GalleryStore(tmp_path / "g.db", model_id="model-b")


def test_read_only_database_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    path = tmp_path / "g.db"
    GalleryStore(path).close()
    path.chmod(0o444)
    with pytest.raises(GalleryError, match="read-only"):
        GalleryStore(path).enrol("Ada", [Template(unit(1))], "m")


def test_read_only_connection_is_a_clear_error(tmp_path):
    # Root ignores permissions, so open SQLite's own read-only mode the way a remount would.
    path = tmp_path / "g.db"
    GalleryStore(path).close()
    store = GalleryStore(path)
    store.db.execute("PRAGMA query_only=ON")
    with pytest.raises(GalleryError, match="read-only"):
        store.enrol("Ada", [Template(unit(1))], "m")


def test_locked_database_is_a_clear_error(tmp_path):
    path = tmp_path / "g.db"
    GalleryStore(path).close()
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store = GalleryStore(path, timeout=0.2)
        with pytest.raises(GalleryError, match="locked by another process"):
            store.enrol("Ada", [Template(unit(1))], "m")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "g.db"
    path.write_bytes(b"this is a text file, not SQLite" * 100)
    with pytest.raises(GalleryError, match="not a FaceGate gallery"):
        GalleryStore(path)


def test_index_finds_best_person_distance_and_margin(store):
    ada, bob = unit(1), unit(2)
    store.enrol("Ada", [Template(ada), Template(unit(3))], "m")
    store.enrol("Bob", [Template(bob)], "m")
    index = GalleryIndex(store)
    assert len(index) == 3
    probe = near(ada, 10, 0.1)
    match = index.search(probe)
    assert match.person.name == "Ada" and match.second.name == "Bob"
    assert match.distance == pytest.approx(1 - probe @ ada, abs=1e-5)
    assert match.margin == pytest.approx(probe @ ada - probe @ bob, abs=1e-5)
    rules = MatchingConfig(distance_threshold=0.3, min_margin=0.05)
    assert decide(match, 0.3, rules).accepted
    assert not decide(index.search(unit(99)), 0.3, rules).accepted  # a stranger
    store.set_enabled("Ada", False)
    index.refresh()
    assert decide(index.search(probe), 0.3, rules).reason == "Ada is disabled"


def test_index_refreshes_on_change_and_not_otherwise(store):
    index = GalleryIndex(store)
    assert index.search(unit(1)).person is None
    assert not index.refresh()
    store.enrol("Ada", [Template(unit(1))], "m")
    assert index.refresh() and index.search(unit(1)).person.name == "Ada"
    assert index.search(unit(1)).margin == float("inf")


def test_searches_continue_while_the_gallery_changes(tmp_path):
    path = tmp_path / "g.db"
    with GalleryStore(path) as store:
        for number in range(50):
            store.enrol("p%d" % number, [Template(unit(number))], "m")
    reader_store = GalleryStore(path)
    index = GalleryIndex(reader_store)
    errors, found = [], []
    stop = threading.Event()

    def search_loop():
        try:
            while not stop.is_set():
                match = index.search(unit(7))
                found.append(match.person.name)
        except Exception as err:  # the test reports whatever broke
            errors.append(err)

    thread = threading.Thread(target=search_loop)
    thread.start()
    with GalleryStore(path) as writer:
        for number in range(50, 120):
            writer.enrol("p%d" % number, [Template(unit(number))], "m")
            index.refresh()
    stop.set()
    thread.join()
    assert not errors and found and set(found) == {"p7"}
    assert len(index) == 120


def test_sigkill_during_enrolments_leaves_only_whole_enrolments(tmp_path):
    path = tmp_path / "g.db"
    GalleryStore(path).close()
    for seed in range(3):
        writer = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gallery_writer.py"),
                                   str(path), str(seed)], stdout=subprocess.PIPE, text=True,
                                  cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        for _ in range(5 + 7 * seed):  # wait for a few enrolments, then kill mid-stream
            assert writer.stdout.readline()
        time.sleep(0.013 * (seed + 1))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    with GalleryStore(path) as store:
        assert store.integrity_ok()
        counts = [p.templates for p in store.people()]
        assert len(counts) >= 5 + 12 + 19  # each run enrolled at least what it printed
        assert set(counts) == {3}, "a partial enrolment survived: %s" % counts
        orphans = store.db.execute("SELECT COUNT(*) FROM templates WHERE person_id NOT IN "
                                   "(SELECT id FROM people)").fetchone()[0]
        assert orphans == 0


def test_a_site_change_and_what_it_records_commit_together(tmp_path):
    from appliance.admin.site import SiteGallery

    site = SiteGallery(str(tmp_path / "site.db"))
    store = site.store
    store.enrol("Ada", [Template(unit(1), 1.0, "a")], "m")
    assert site.record("enroll", {"person_id": store.find("Ada").id}) == 1

    def remove_then_fail():
        store.remove("Ada")
        raise GalleryError("the disk filled up")  # after the removal, before the change is recorded

    with pytest.raises(GalleryError):
        site.record("remove", {"person_id": "x"}, remove_then_fail)
    assert [p.name for p in store.people()] == ["Ada"] and site.version == 1  # neither happened
    number = site.record("remove", {"person_id": store.find("Ada").id}, lambda: store.remove("Ada"))
    assert number == 2 and store.people() == [] and site.body_of(2)[1]["change"] == 2
    assert [c["change"] for c in site.changes_after(0)] == [1, 2]
    site.close()


def test_a_gallery_a_newer_version_migrated_opens_if_the_migration_only_added(tmp_path):
    """After a rollback, the older version meets the schema its successor left: additions it
    can ignore open (the successor wrote readable_by), anything else is refused with what to do."""
    path = tmp_path / "gallery.db"
    GalleryStore(path).close()
    db = sqlite3.connect(str(path))
    db.execute("ALTER TABLE people ADD COLUMN badge TEXT")
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", [str(SCHEMA_VERSION + 1)])
    db.execute("UPDATE meta SET value=? WHERE key='readable_by'", [str(SCHEMA_VERSION)])
    db.commit()
    store = GalleryStore(path)
    assert store._schema_version() == SCHEMA_VERSION + 1  # left as it is: no downgrade
    store.close()
    db.execute("UPDATE meta SET value=? WHERE key='readable_by'", [str(SCHEMA_VERSION + 1)])
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="newer than this FaceGate understands.*backed up before the update"):
        GalleryStore(path)


def test_a_last_valid_day_given_as_a_date_includes_that_whole_day():
    import datetime

    from appliance.gallery.store import Person

    person = Person("p1", "Ada", "", True, "2026-12-01", "2026-12-31", "2026-11-30")
    utc = datetime.timezone.utc
    assert not person.valid_at(datetime.datetime(2026, 11, 30, 23, 59, tzinfo=utc))
    assert person.valid_at(datetime.datetime(2026, 12, 1, 0, 0, tzinfo=utc))
    assert person.valid_at(datetime.datetime(2026, 12, 31, 18, 30, tzinfo=utc))  # the last day, all of it
    assert not person.valid_at(datetime.datetime(2027, 1, 1, 0, 0, 1, tzinfo=utc))
    timed = Person("p2", "Bo", "", True, None, "2026-12-31T12:00", "2026-11-30")
    assert not timed.valid_at(datetime.datetime(2026, 12, 31, 12, 30, tzinfo=utc))  # a time is kept to the minute


def test_validity_dates_change_whole_or_not_at_all(tmp_path):
    from conftest import run_cli

    store = GalleryStore(tmp_path / "g.db", model_id="m")
    store.enrol("Ada", [Template(np.eye(1, 128, 0, dtype=np.float32)[0], 1.0, "a.jpg")], "m")
    store.close()
    done = run_cli("people", "validity", "Ada", "2026-12-01", "-", "--gallery", tmp_path / "g.db")
    assert done.returncode == 0 and "Ada: valid from 2026-12-01 until any time" in done.stdout, done.stderr
    wrong = run_cli("people", "validity", "Ada", "2026-12-31", "2026-12-01", "--gallery", tmp_path / "g.db")
    assert wrong.returncode == 2 and "is before valid_from" in wrong.stderr
    store = GalleryStore(tmp_path / "g.db")
    assert (store.find("Ada").valid_from, store.find("Ada").valid_until) == ("2026-12-01", None)
    store.close()
