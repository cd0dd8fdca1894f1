"""The audit trail: every decision, alarm and fault as a row in a local SQLite file.

WAL with synchronous=FULL, one transaction per event, so a power cut keeps every event that was
reported as stored. Retention is capped by event count and by the total size of snapshots; the
oldest go first. The `sent` column is the outbox the MQTT link drains.
"""

import datetime
import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from appliance.errors import AuditError

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    person_id TEXT,
    person_name TEXT,
    distance REAL,
    margin REAL,
    quality REAL,
    frames TEXT,
    latency_ms REAL,
    detail TEXT,
    snapshot BLOB,
    embedding BLOB,
    model_id TEXT,
    label TEXT,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_unsent ON events (sent, id);
"""


# every kind of event the door records; `facegate audit --kind` accepts these only
EVENT_KINDS = ("grant", "deny", "exit", "remote_unlock", "alarm", "fault", "recovered", "schedule", "capture",
               "change")


@dataclass
class Event:
    kind: str  # one of EVENT_KINDS
    person_id: Optional[str] = None
    person_name: Optional[str] = None
    distance: Optional[float] = None
    margin: Optional[float] = None
    quality: Optional[float] = None
    frames: List[int] = field(default_factory=list)
    latency_ms: Optional[float] = None
    detail: Dict[str, Any] = field(default_factory=dict)
    snapshot: Optional[bytes] = None  # JPEG
    embedding: Optional[np.ndarray] = None  # the probe decided on, for threshold tuning
    model_id: Optional[str] = None  # the model that made `embedding`
    label: Optional[str] = None  # an installer's verdict: a person id, or "stranger"
    time: str = ""
    id: Optional[int] = None  # also the event's sequence number on this door
    uid: str = ""  # unique across doors and database resets; a re-sent event keeps it

    def summary(self) -> Dict[str, Any]:
        """The event without its snapshot, as JSON-ready values."""
        return {"id": self.id, "uid": self.uid, "time": self.time, "kind": self.kind, "person_id": self.person_id,
                "person_name": self.person_name, "distance": self.distance, "margin": self.margin,
                "quality": self.quality, "frames": self.frames, "latency_ms": self.latency_ms,
                "detail": self.detail, "has_snapshot": self.snapshot is not None}


class AuditStore:
    def __init__(self, path, max_events: int = 200000, snapshots_max_bytes: int = 50 << 20,
                 max_age_days: float = 365.0) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.snapshots_max_bytes = snapshots_max_bytes
        self.max_age_days = max_age_days
        self._near_full = False  # the 90% alarm was raised and the trail has not drained since
        self._next_age_prune = 0.0  # the age rule runs at the first event, then hourly
        self._lock = threading.Lock()
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True)
            # one connection shared by the threads that report events, guarded by the lock
            self._db = sqlite3.connect(str(self.path), timeout=5.0, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            if "label" not in columns:  # trails written before attempts could be labelled
                self._db.execute("ALTER TABLE events ADD COLUMN label TEXT")
            self._recount()
        except (sqlite3.Error, OSError) as err:
            raise AuditError("cannot open the audit trail %s: %s (check the path and free space)"
                             % (self.path, err)) from err

    def record(self, event: Event) -> Event:
        if not event.time:
            event.time = _now()
        event.uid = event.uid or uuid.uuid4().hex
        row = (event.uid, event.time, event.kind, event.person_id, event.person_name, event.distance,
               event.margin, event.quality, json.dumps(event.frames), event.latency_ms,
               json.dumps(event.detail, sort_keys=True), event.snapshot,
               None if event.embedding is None else np.asarray(event.embedding, np.float32).tobytes(),
               event.model_id, event.label)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute(
                    "INSERT INTO events (uid, time, kind, person_id, person_name, distance, margin, quality,"
                    " frames, latency_ms, detail, snapshot, embedding, model_id, label)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
                event.id = cursor.lastrowid
                self._count += 1
                self._snapshot_bytes += len(event.snapshot or b"")
                self._prune()
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                self._recount()
                raise AuditError("cannot store a %s event in %s: %s" % (event.kind, self.path, err)) from err
        return event

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _recount(self) -> None:
        self._count, self._snapshot_bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(snapshot)), 0) FROM events").fetchone()

    def _prune(self) -> None:
        """Keep the caps. Running totals spare a table scan per event; they are recounted before
        anything is deleted, since another process (facegate tune capture) may write here too."""
        now = time.monotonic()
        if now >= self._next_age_prune:
            self._next_age_prune = now + 3600
            cutoff = (datetime.datetime.now(datetime.timezone.utc)
                      - datetime.timedelta(days=self.max_age_days)).isoformat(timespec="milliseconds")
            # old events go once the site has them; unsent ones only make way under the count cap
            if self._db.execute("DELETE FROM events WHERE sent = 1 AND time < ?", (cutoff,)).rowcount:
                self._recount()
        if self._count > self.max_events:
            self._recount()
        count = self._count
        if count > self.max_events:
            self._db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
                             (count - self.max_events,))
            self._recount()
        if count >= 0.9 * self.max_events and not self._near_full:
            self._near_full = True
            detail = json.dumps({"alarm": "audit_capacity", "message": "audit trail at %d of %d events: "
                                 "oldest events will be dropped" % (count, self.max_events)})
            self._db.execute("INSERT INTO events (uid, time, kind, frames, detail) VALUES (?,?,?,?,?)",
                             (uuid.uuid4().hex, _now(), "alarm", "[]", detail))
            self._count += 1
        elif count < 0.8 * self.max_events:
            self._near_full = False
        if self._snapshot_bytes <= self.snapshots_max_bytes:
            return
        self._recount()
        excess = self._snapshot_bytes - self.snapshots_max_bytes
        if excess <= 0:
            return
        rows = self._db.execute("SELECT id, LENGTH(snapshot) FROM events WHERE snapshot IS NOT NULL "
                                "ORDER BY id").fetchall()
        dropped = []
        for event_id, size in rows:
            if excess <= 0:
                break
            dropped.append(event_id)
            excess -= size
        self._db.executemany("UPDATE events SET snapshot = NULL WHERE id = ?", [(i,) for i in dropped])
        self._recount()

    def events(self, limit: int = 100, kind: Optional[str] = None, unsent_only: bool = False,
               since_id: int = 0, kinds: Sequence[str] = (), newest: bool = False,
               after: Optional[datetime.datetime] = None, before: Optional[datetime.datetime] = None,
               person: Optional[str] = None) -> List[Event]:
        """Events in id order: the first `limit` after `since_id`, or with `newest` the last `limit`;
        optionally only between two times (aware datetimes) and for one person (id or name)."""
        clauses, params = ["id > ?"], [since_id]
        for bound, operator in ((after, ">="), (before, "<")):
            if bound is not None:  # stored as UTC ISO text, which sorts as time does
                clauses.append("time %s ?" % operator)
                params.append(bound.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds"))
        if person:
            clauses.append("(person_id = ? OR person_name = ?)")
            params.extend([person, person])
        wanted = ([kind] if kind else []) + list(kinds)
        if wanted:
            clauses.append("kind IN (%s)" % ",".join("?" * len(wanted)))
            params.extend(wanted)
        if unsent_only:
            clauses.append("sent = 0")
        params.append(limit)
        query = ("SELECT id, uid, time, kind, person_id, person_name, distance, margin, quality, frames,"
                 " latency_ms, detail, snapshot, embedding, model_id, label FROM events WHERE %s"
                 " ORDER BY id %s LIMIT ?" % (" AND ".join(clauses), "DESC" if newest else ""))
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        if newest:
            rows.reverse()
        return [Event(id=r[0], uid=r[1], time=r[2], kind=r[3], person_id=r[4], person_name=r[5],
                      distance=r[6], margin=r[7], quality=r[8], frames=json.loads(r[9] or "[]"),
                      latency_ms=r[10], detail=json.loads(r[11] or "{}"), snapshot=r[12],
                      embedding=None if r[13] is None else np.frombuffer(r[13], np.float32),
                      model_id=r[14], label=r[15]) for r in rows]

    def people(self) -> List[str]:
        """Every person id and name the trail names."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT person_id, person_name FROM events "
                                    "WHERE person_id IS NOT NULL").fetchall()
        return sorted({value for row in rows for value in row if value})

    def set_label(self, event_id: int, label: Optional[str]) -> None:
        with self._lock:
            changed = self._db.execute("UPDATE events SET label = ? WHERE id = ?", (label, event_id)).rowcount
        if not changed:
            raise AuditError("no audit event %d" % event_id)

    def unsent_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events WHERE sent = 0").fetchone()[0]

    def mark_sent(self, ids: List[int]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("UPDATE events SET sent = 1 WHERE id = ?", [(i,) for i in ids])
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise AuditError("cannot mark events as sent in %s: %s" % (self.path, err)) from err

    def close(self) -> None:
        with self._lock:
            self._db.close()
