"""The gallery database: people, templates, schema migrations, a change counter, and (in an
administrator's site gallery) the numbered site changes.

SQLite in WAL mode with synchronous=FULL: every enrolment is one transaction, so a power cut
leaves either the whole enrolment or none of it. `transaction()` is public and nests, so a
caller can make several changes (a removal and the site change that records it) whole or not
at all. Embeddings are tied to the model that made them; mixing models in one gallery is
refused.
"""

import datetime
import json
import logging
import re
import functools
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from appliance.errors import FaceGateError, GalleryError, did_you_mean

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4


def _serialised(method):
    """Run under the store's lock: one connection is shared by threads (a door's command worker
    writes while its status thread reads), and SQLite's transaction state is per connection."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# Plain SQL, on purpose: a helper library that commits on its own (sqlite-utils 3.x, the last
# line for Python 3.9, wraps writes in `with conn:`) would end the store's transaction half-way.
def _migrate_to_1(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT NOT NULL, note TEXT, enabled INTEGER NOT NULL,"
               " valid_from TEXT, valid_until TEXT, created TEXT, updated TEXT)")
    db.execute("CREATE UNIQUE INDEX idx_people_name ON people (name)")
    db.execute("CREATE TABLE templates (id INTEGER PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id),"
               " embedding BLOB NOT NULL, model_id TEXT NOT NULL, quality FLOAT, source TEXT, created TEXT,"
               " crop BLOB)")
    db.execute("CREATE INDEX idx_templates_person_id ON templates (person_id)")


def _migrate_to_2(db: sqlite3.Connection) -> None:
    # change N is the signed body that took the site from N-1 to N (empty on a door's gallery);
    # site galleries made before this schema created the table themselves
    db.execute("CREATE TABLE IF NOT EXISTS changes (change INTEGER PRIMARY KEY, verb TEXT, body TEXT, created TEXT)")


def _migrate_to_3(db: sqlite3.Connection) -> None:
    # who may use which door when (door/access_rules.py): schedules, access groups, memberships
    db.execute("CREATE TABLE schedules (name TEXT PRIMARY KEY, periods TEXT NOT NULL, holidays TEXT NOT NULL)")
    db.execute("CREATE TABLE access_groups (name TEXT PRIMARY KEY, doors TEXT NOT NULL, schedule TEXT NOT NULL)")
    db.execute("CREATE TABLE person_groups (person_id TEXT NOT NULL, group_name TEXT NOT NULL,"
               " PRIMARY KEY (person_id, group_name))")


def _migrate_to_4(db: sqlite3.Connection) -> None:
    # a person's card for a building's access panel (panel/): one per person, unique on the site
    db.execute("CREATE TABLE cards (person_id TEXT PRIMARY KEY, facility INTEGER NOT NULL, number INTEGER NOT NULL)")
    db.execute("CREATE UNIQUE INDEX idx_cards_number ON cards (facility, number)")


def _insert(db: sqlite3.Connection, table: str, row: dict) -> None:
    db.execute("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(row), ", ".join("?" * len(row))),
               list(row.values()))


def _dicts(cursor: sqlite3.Cursor) -> List[dict]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# Migration N takes a database at version N-1 to version N; each runs in one transaction.
MIGRATIONS = {1: _migrate_to_1, 2: _migrate_to_2, 3: _migrate_to_3, 4: _migrate_to_4}
# The oldest schema whose code can still use a gallery migrated to each version: a migration that
# only adds (a table, a column with a default) keeps the one before it, so a version rolled back
# after an update still opens the gallery the newer one migrated (the newer one writes this down).
READABLE_BY = {1: 1, 2: 2, 3: 3, 4: 3}


@dataclass
class Person:
    id: str
    name: str
    note: str
    enabled: bool
    valid_from: Optional[str]
    valid_until: Optional[str]
    created: str
    templates: int = 0
    groups: Tuple[str, ...] = ()  # access groups; none: every door, any time
    card: Optional[Tuple[int, int]] = None  # (facility code, card number) for an access panel

    def valid_at(self, when: datetime.datetime) -> bool:
        stamp = when.isoformat()
        # a bare date as the last day means the whole of that day (as a date picker means it)
        until = stamp[:10] if self.valid_until and len(self.valid_until) == 10 else stamp
        return ((not self.valid_from or self.valid_from <= stamp)
                and (not self.valid_until or until <= self.valid_until))


@dataclass
class Template:
    embedding: np.ndarray
    quality: float = 0.0
    source: str = ""
    crop: Optional[bytes] = None  # the aligned 112x112 face as PNG, for re-embedding


def check_validity(valid_from: Optional[str], valid_until: Optional[str]) -> None:
    """Validity dates are ISO 8601 dates or times (2026-12-31, 2026-12-31T18:00), from <= until."""
    for name, value in (("valid_from", valid_from), ("valid_until", valid_until)):
        if value is None:
            continue
        try:
            datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise GalleryError("%s %r is not an ISO date or time (like 2026-12-31 or 2026-12-31T18:00)"
                               % (name, value)) from None
    if valid_from and valid_until and valid_until < valid_from:
        raise GalleryError("valid_until %s is before valid_from %s" % (valid_until, valid_from))


def person_id_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24]
    return "%s-%s" % (slug or "p", uuid.uuid4().hex[:8])


class GalleryStore:
    def __init__(self, path, model_id: Optional[str] = None, max_templates: int = 10,
                 timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.max_templates = max_templates
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on this connection (nested ones join the outer one)
        try:
            self._connection = sqlite3.connect(str(self.path), timeout=timeout,
                                               check_same_thread=False, isolation_level=None)
            self.db = self._connection
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as err:
            raise GalleryError(self._explain(err)) from err
        self.model_id = self._bind_model(model_id)

    def _explain(self, err: sqlite3.Error) -> str:
        text = str(err)
        if "readonly" in text or "read-only" in text:
            return ("gallery %s is read-only: check the file's and its folder's permissions "
                    "(SQLite also writes %s-wal beside it)" % (self.path, self.path.name))
        if "locked" in text or "busy" in text:
            return ("gallery %s is locked by another process; stop the other writer or retry"
                    % self.path)
        if "unable to open" in text:
            return "cannot open gallery %s: does its folder exist and is it writable?" % self.path
        if "not a database" in text or "malformed" in text:
            return ("%s is not a FaceGate gallery (not an SQLite database, or damaged); restore "
                    "it from an export" % self.path)
        return "gallery %s: %s" % (self.path, text)

    def _migrate(self) -> None:
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            readable_by = int(self._get_meta("readable_by") or version)
            if readable_by <= SCHEMA_VERSION:  # a newer version's additions, which this one leaves alone
                log.info("gallery %s has schema %d from a newer FaceGate; this one (%d) can use it",
                         self.path, version, SCHEMA_VERSION)
                return
            raise GalleryError("gallery %s has schema version %d, newer than this FaceGate understands (%d): "
                               "update FaceGate, or restore the gallery backed up before the update "
                               "(/usr/lib/facegate/backups)" % (self.path, version, SCHEMA_VERSION))
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                MIGRATIONS[target](self.db)
                self._set_meta("schema_version", str(target))
                self._set_meta("readable_by", str(READABLE_BY[target]))
            log.info("gallery %s migrated to schema %d", self.path, target)

    def _schema_version(self) -> int:
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def transaction(self, mode: str = "IMMEDIATE"):
        """`with store.transaction():` everything inside commits together or not at all; a
        transaction opened inside another joins it."""
        return _Transaction(self, mode)

    def _get_meta(self, key: str) -> Optional[str]:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", [key]).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", [key, value])

    def _bind_model(self, model_id: Optional[str]) -> Optional[str]:
        stored = self._get_meta("model_id")
        if model_id and stored and stored != model_id:
            raise GalleryError("gallery %s holds embeddings of model %s, the pipeline uses %s; "
                               "run 'facegate gallery reembed' or use a gallery made with %s"
                               % (self.path, stored, model_id, model_id))
        return stored or model_id

    @property
    @_serialised
    def version(self) -> int:
        """Counter bumped by every change; the index and the doors' sync compare it."""
        return int(self._get_meta("gallery_version") or 0)

    def _bump(self) -> int:
        version = self.version + 1
        self._set_meta("gallery_version", str(version))
        return version

    @property
    @_serialised
    def site_version(self) -> int:
        """The last site-wide change applied here (doors synced over MQTT); 0 when none."""
        return int(self._get_meta("site_version") or 0)

    def set_site_version(self, version: int) -> None:
        with self.transaction():
            self._set_meta("site_version", str(version))
            # what the gallery was when it last matched the site: changes after it are this door's own
            self._set_meta("version_at_site", str(self.version))

    @_serialised
    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # people -----------------------------------------------------------------------------
    def _row_to_person(self, row, groups: Optional[Tuple[str, ...]] = None) -> Person:
        if groups is None:
            groups = tuple(r[0] for r in self.db.execute(
                "SELECT group_name FROM person_groups WHERE person_id = ? ORDER BY group_name", [row["id"]]))
        card = self.db.execute("SELECT facility, number FROM cards WHERE person_id = ?", [row["id"]]).fetchone()
        return Person(id=row["id"], name=row["name"], note=row["note"] or "",
                      enabled=bool(row["enabled"]), valid_from=row["valid_from"],
                      valid_until=row["valid_until"], created=row["created"],
                      templates=int(row.get("templates") or 0), groups=groups,
                      card=tuple(card) if card else None)

    @_serialised
    def people(self) -> List[Person]:
        rows = _dicts(self.db.execute("SELECT p.*, (SELECT COUNT(*) FROM templates t WHERE t.person_id = p.id)"
                                      " AS templates FROM people p ORDER BY p.name"))
        groups: Dict[str, List[str]] = {}
        for person_id, group in self.db.execute("SELECT person_id, group_name FROM person_groups "
                                                "ORDER BY group_name"):
            groups.setdefault(person_id, []).append(group)
        return [self._row_to_person(row, tuple(groups.get(row["id"], ()))) for row in rows]

    @_serialised
    def find(self, key: str) -> Person:
        """A person by id or by exact name."""
        rows = _dicts(self.db.execute(
            "SELECT p.*, (SELECT COUNT(*) FROM templates t WHERE t.person_id = p.id) AS templates "
            "FROM people p WHERE p.id = ? OR p.name = ?", [key, key]))
        if not rows:
            names = [row[0] for row in self.db.execute("SELECT name FROM people")]
            raise GalleryError("no person %r in the gallery%s; 'facegate people list' shows who is enrolled"
                               % (key, did_you_mean(key, names, quoted=True, cutoff=0.6)))
        return self._row_to_person(rows[0])

    def _check_new_person(self, name: str, templates: Sequence[Template], model_id: str,
                          valid_from: Optional[str], valid_until: Optional[str]) -> None:
        """Everything about a new enrolment that can be refused before the database is touched."""
        if not name.strip():
            raise GalleryError("a person needs a non-empty name")
        if not templates:
            raise GalleryError("no usable photo for %s: nothing enrolled" % name)
        self._check_model(model_id)
        if len(templates) > self.max_templates:
            raise GalleryError("%d templates for %s, the maximum is %d"
                               % (len(templates), name, self.max_templates))
        check_validity(valid_from, valid_until)

    def _insert_person(self, person_id: str, name: str, templates: Sequence[Template], model_id: str,
                       note: str, valid_from: Optional[str], valid_until: Optional[str],
                       created: Optional[str] = None) -> None:
        stamp = _now()
        _insert(self.db, "people", {"id": person_id, "name": name, "note": note, "enabled": 1,
                                    "valid_from": valid_from, "valid_until": valid_until,
                                    "created": created or stamp, "updated": stamp})
        self._insert_templates(person_id, templates, model_id, stamp)
        self._bind_model_row(model_id)
        self._bump()

    def enrol(self, name: str, templates: Sequence[Template], model_id: str, note: str = "",
              person_id: Optional[str] = None, valid_from: Optional[str] = None,
              valid_until: Optional[str] = None, card: Optional[Tuple[int, int]] = None) -> Person:
        """Add a new person with their templates and their access card (facility, number), if
        given, all in one transaction: a card someone else holds refuses the person too."""
        self._check_new_person(name, templates, model_id, valid_from, valid_until)
        person_id = person_id or person_id_for(name)
        with self.transaction():
            if self.db.execute("SELECT 1 FROM people WHERE name = ? OR id = ?",
                               [name, person_id]).fetchone():
                raise GalleryError("%s is already enrolled; add photos to that person with "
                                   "'facegate enroll --add %s PHOTO...' or choose another name"
                                   % (name, name))
            self._insert_person(person_id, name, templates, model_id, note, valid_from, valid_until)
            if card is not None:
                self.set_card(person_id, card[1], card[0])
        return self.find(person_id)

    def replace(self, person_id: str, name: str, templates: Sequence[Template], model_id: str,
                note: str = "", valid_from: Optional[str] = None, valid_until: Optional[str] = None,
                card: Optional[Tuple[int, int]] = None) -> Person:
        """Enrol `person_id` afresh (name, templates, dates, card as enrol takes it), replacing
        whatever it held: one transaction, checked before anything changes, so a refusal leaves
        the old person whole."""
        self._check_new_person(name, templates, model_id, valid_from, valid_until)
        with self.transaction():
            other = self.db.execute("SELECT id FROM people WHERE name = ? AND id != ?",
                                    [name, person_id]).fetchone()
            if other:
                raise GalleryError("the name %s belongs to another person (%s); remove or rename them first"
                                   % (name, other[0]))
            old = self.db.execute("SELECT created FROM people WHERE id = ?", [person_id]).fetchone()
            self.db.execute("DELETE FROM templates WHERE person_id = ?", [person_id])
            self.db.execute("DELETE FROM people WHERE id = ?", [person_id])
            self._insert_person(person_id, name, templates, model_id, note, valid_from, valid_until,
                                created=old[0] if old else None)
            if card is not None:
                self.set_card(person_id, card[1], card[0])
        return self.find(person_id)

    def add_templates(self, key: str, templates: Sequence[Template], model_id: str) -> Person:
        self._check_model(model_id)
        with self.transaction():
            person = self.find(key)
            if person.templates + len(templates) > self.max_templates:
                raise GalleryError("%s has %d templates; adding %d would pass the maximum of %d"
                                   % (person.name, person.templates, len(templates),
                                      self.max_templates))
            self._insert_templates(person.id, templates, model_id, _now())
            self._bind_model_row(model_id)
            self._bump()
        return self.find(person.id)

    def _check_model(self, model_id: str) -> None:
        if self.model_id and model_id != self.model_id:
            raise GalleryError("refusing embeddings of model %s in a gallery of model %s"
                               % (model_id, self.model_id))

    def _bind_model_row(self, model_id: str) -> None:
        if not self._get_meta("model_id"):
            self._set_meta("model_id", model_id)
            self.model_id = model_id

    def _insert_templates(self, person_id: str, templates: Iterable[Template], model_id: str,
                          stamp: str) -> None:
        self.db.executemany(
            "INSERT INTO templates (person_id, embedding, model_id, quality, source, created, crop) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(person_id, np.asarray(t.embedding, dtype=np.float32).tobytes(), model_id, float(t.quality), t.source,
              stamp, t.crop) for t in templates])

    def set_card(self, key: str, number: Optional[int], facility: int = 0) -> Person:
        """Give a person their access card (None: take it away); a card belongs to one person."""
        if number is not None and not (0 <= facility <= 65535 and 0 <= number <= 0xFFFFFFFF):
            raise GalleryError("a card is a facility code 0-65535 and a number 0-4294967295 (got %s:%s)"
                               % (facility, number))
        with self.transaction():
            person = self.find(key)
            holder = self.db.execute("SELECT person_id FROM cards WHERE facility = ? AND number = ? AND person_id != ?",
                                     [facility, number, person.id]).fetchone()
            if holder:
                raise GalleryError("card %d:%d belongs to %s already: take it from them first ('facegate people "
                                   "card %s --clear')" % (facility, number, self.find(holder[0]).name, holder[0]))
            self.db.execute("DELETE FROM cards WHERE person_id = ?", [person.id])
            if number is not None:
                self.db.execute("INSERT INTO cards VALUES (?, ?, ?)", [person.id, facility, number])
            self._bump()
        return self.find(person.id)

    def remove(self, key: str) -> Person:
        with self.transaction():
            person = self.find(key)
            self.db.execute("DELETE FROM cards WHERE person_id = ?", [person.id])
            self.db.execute("DELETE FROM person_groups WHERE person_id = ?", [person.id])
            self.db.execute("DELETE FROM templates WHERE person_id = ?", [person.id])
            self.db.execute("DELETE FROM people WHERE id = ?", [person.id])
            self._bump()
        return person

    # access rules ------------------------------------------------------------------------
    def set_schedule(self, name: str, periods: str, holidays: str = "") -> None:
        from appliance.door.access_rules import schedule_from_text

        try:
            schedule_from_text(name, periods, holidays)  # refuse what would not read back
        except FaceGateError as err:
            raise GalleryError(str(err)) from err
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO schedules VALUES (?, ?, ?)", [name, periods, holidays])
            self._bump()

    def remove_schedule(self, name: str) -> None:
        with self.transaction():
            self._known_row("schedules", name, "schedule")
            users = [r[0] for r in self.db.execute("SELECT name FROM access_groups WHERE schedule = ?", [name])]
            if users:
                raise GalleryError("schedule %r is used by access group%s %s: change or remove %s first"
                                   % (name, "" if len(users) == 1 else "s", ", ".join(users),
                                      "it" if len(users) == 1 else "them"))
            self.db.execute("DELETE FROM schedules WHERE name = ?", [name])
            self._bump()

    def set_group(self, name: str, doors: str, schedule: str) -> None:
        from appliance.door.access_rules import ALWAYS, doors_from_text

        try:
            doors_from_text(doors)
        except FaceGateError as err:
            raise GalleryError(str(err)) from err
        with self.transaction():
            if not name.strip():
                raise GalleryError("an access group needs a name")
            if schedule != ALWAYS:
                self._known_row("schedules", schedule, "schedule")
            self.db.execute("INSERT OR REPLACE INTO access_groups VALUES (?, ?, ?)", [name, doors, schedule])
            self._bump()

    def remove_group(self, name: str) -> None:
        with self.transaction():
            self._known_row("access_groups", name, "access group")
            self.db.execute("DELETE FROM person_groups WHERE group_name = ?", [name])
            self.db.execute("DELETE FROM access_groups WHERE name = ?", [name])
            self._bump()

    def set_person_groups(self, key: str, groups: Sequence[str]) -> Person:
        """The person's access groups, all of them at once (an empty list: every door, any time)."""
        with self.transaction():
            person = self.find(key)
            for group in groups:
                self._known_row("access_groups", group, "access group")
            self.db.execute("DELETE FROM person_groups WHERE person_id = ?", [person.id])
            for group in sorted(set(groups)):
                self.db.execute("INSERT INTO person_groups VALUES (?, ?)", [person.id, group])
            self._bump()
            return self.find(person.id)

    def _known_row(self, table: str, name: str, what: str) -> None:
        if self.db.execute("SELECT 1 FROM %s WHERE name = ?" % table, [name]).fetchone():
            return
        names = [r[0] for r in self.db.execute("SELECT name FROM %s" % table)]
        raise GalleryError("no %s %r%s; known: %s" % (what, name, did_you_mean(name, names, quoted=True),
                                                       ", ".join(names) or "none yet"))

    @_serialised
    def access_rules(self):
        from appliance.door.access_rules import AccessRules, Group, doors_from_text, schedule_from_text

        schedules = {row[0]: schedule_from_text(row[0], row[1], row[2])
                     for row in self.db.execute("SELECT name, periods, holidays FROM schedules")}
        groups = {row[0]: Group(row[0], doors_from_text(row[1]), row[2])
                  for row in self.db.execute("SELECT name, doors, schedule FROM access_groups")}
        return AccessRules(schedules, groups)

    @_serialised
    def schedule_rows(self) -> List[Tuple[str, str, str]]:
        return [tuple(r) for r in self.db.execute("SELECT name, periods, holidays FROM schedules ORDER BY name")]

    @_serialised
    def group_rows(self) -> List[Tuple[str, str, str]]:
        return [tuple(r) for r in self.db.execute("SELECT name, doors, schedule FROM access_groups ORDER BY name")]

    def set_enabled(self, key: str, enabled: bool) -> Person:
        with self.transaction():
            person = self.find(key)
            self.db.execute("UPDATE people SET enabled = ?, updated = ? WHERE id = ?",
                            [int(enabled), _now(), person.id])
            self._bump()
        return self.find(person.id)

    def set_validity(self, key: str, valid_from: Optional[str], valid_until: Optional[str]) -> Person:
        """A person's first and last valid day or time (None: open), checked before it is written."""
        check_validity(valid_from, valid_until)
        with self.transaction():
            person = self.find(key)
            self.db.execute("UPDATE people SET valid_from = ?, valid_until = ?, updated = ? WHERE id = ?",
                            [valid_from, valid_until, _now(), person.id])
            self._bump()
        return self.find(person.id)

    # templates --------------------------------------------------------------------------
    def matrix(self) -> Tuple[List[str], np.ndarray, int]:
        """(person id per row, float32 matrix of unit embeddings, gallery version), person-sorted."""
        with self.transaction("DEFERRED"):  # one snapshot for the version and the rows
            version = self.version
            rows = self.db.execute("SELECT person_id, embedding FROM templates "
                                   "ORDER BY person_id, id").fetchall()
        if not rows:
            return [], np.zeros((0, 0), np.float32), version
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        matrix = matrix.reshape(len(rows), -1)
        return [r[0] for r in rows], matrix, version

    @_serialised
    def templates_with_crops(self) -> List[Tuple[int, Optional[bytes]]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT id, crop FROM templates ORDER BY id")]

    def replace_embeddings(self, embeddings: Sequence[Tuple[int, np.ndarray]], model_id: str) -> None:
        """Swap every template's embedding for one of another model, in one transaction."""
        with self.transaction():
            for template_id, vector in embeddings:
                self.db.execute("UPDATE templates SET embedding = ?, model_id = ? WHERE id = ?",
                                [np.asarray(vector, np.float32).tobytes(), model_id, template_id])
            self._set_meta("model_id", model_id)
            self.model_id = model_id
            self._bump()

    @_serialised
    def counts(self) -> dict:
        people = self.db.execute("SELECT COUNT(*), SUM(enabled) FROM people").fetchone()
        templates = self.db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        version = self.version
        return {"people": people[0], "enabled": int(people[1] or 0), "templates": templates,
                "version": version, "site_version": self.site_version, "model_id": self.model_id,
                # changes made here and not through the site's numbered ones ('admin ... --door', the
                # door's console): a door with any differs from the site gallery
                "door_only_changes": version - int(self._get_meta("version_at_site") or 0)}

    # site changes -----------------------------------------------------------------------
    @property
    @_serialised
    def last_change(self) -> int:
        """The number of the newest site change recorded here (0: none)."""
        return int(self.db.execute("SELECT MAX(change) FROM changes").fetchone()[0] or 0)

    def append_change(self, verb: str, body: dict) -> int:
        """Record the next site change; its number goes into the body the doors receive. Inside
        the caller's transaction, with the change it records."""
        with self.transaction():
            number = self.last_change + 1
            _insert(self.db, "changes", {"change": number, "verb": verb, "created": _now(),
                                         "body": json.dumps(dict(body, change=number), ensure_ascii=False)})
        return number

    @_serialised
    def change(self, number: int) -> Tuple[str, dict]:
        row = self.db.execute("SELECT verb, body FROM changes WHERE change = ?", [number]).fetchone()
        if row is None:
            raise GalleryError("no site change %d" % number)
        return row[0], json.loads(row[1])

    @_serialised
    def changes_after(self, after: int, max_bytes: int = 1 << 20) -> List[dict]:
        """Changes after `after`, in order, as many as fit in `max_bytes` of JSON (at least one)."""
        changes, size = [], 0
        for number, verb, body in self.db.execute(
                "SELECT change, verb, body FROM changes WHERE change > ? ORDER BY change", [after]):
            size += len(body) + 64
            if changes and size > max_bytes:
                break
            changes.append({"change": number, "verb": verb, "body": json.loads(body)})
        return changes

    @_serialised
    def templates_of(self, person_id: str) -> List[Tuple[bytes, float, str, Optional[bytes]]]:
        """(embedding bytes, quality, source, crop) of each of a person's templates, oldest first."""
        return [tuple(r) for r in self.db.execute("SELECT embedding, quality, source, crop FROM templates "
                                                  "WHERE person_id = ? ORDER BY id", [person_id])]

    @_serialised
    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, with SQLite errors turned into GalleryError that says what to do."""

    def __init__(self, store: GalleryStore, mode: str) -> None:
        self.store = store
        self.mode = mode

    def __enter__(self):
        self.store._lock.acquire()  # held until COMMIT or ROLLBACK: see _serialised
        if self.store._depth == 0:
            try:
                self.store.db.execute("BEGIN " + self.mode)
            except sqlite3.Error as err:
                self.store._lock.release()
                raise GalleryError(self.store._explain(err)) from err
        self.store._depth += 1
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        try:
            self.store._depth -= 1
            if self.store._depth > 0:  # the outer transaction commits or rolls back all of it
                return False
            return self._finish(exc_type, exc)
        finally:
            self.store._lock.release()

    def _finish(self, exc_type, exc) -> bool:
        connection = self.store._connection
        if exc_type is None:
            try:
                connection.execute("COMMIT")
            except sqlite3.Error as err:
                connection.execute("ROLLBACK")
                raise GalleryError(self.store._explain(err)) from err
            return False
        connection.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise GalleryError(self.store._explain(exc)) from exc
        return False
