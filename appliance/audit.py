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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from appliance.errors import AuditError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_unsent ON events (sent, id);
"""


@dataclass
class Event:
    kind: str  # grant, deny, exit, alarm, fault, recovered, schedule
    person_id: Optional[str] = None
    person_name: Optional[str] = None
    distance: Optional[float] = None
    margin: Optional[float] = None
    quality: Optional[float] = None
    frames: List[int] = field(default_factory=list)
    latency_ms: Optional[float] = None
    detail: Dict[str, Any] = field(default_factory=dict)
    snapshot: Optional[bytes] = None  # JPEG
    time: str = ""
    id: Optional[int] = None

    def summary(self) -> Dict[str, Any]:
        """The event without its snapshot, as JSON-ready values."""
        return {"id": self.id, "time": self.time, "kind": self.kind, "person_id": self.person_id,
                "person_name": self.person_name, "distance": self.distance, "margin": self.margin,
                "quality": self.quality, "frames": self.frames, "latency_ms": self.latency_ms,
                "detail": self.detail, "has_snapshot": self.snapshot is not None}


class AuditStore:
    def __init__(self, path, max_events: int = 200000, snapshots_max_bytes: int = 50 << 20) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.snapshots_max_bytes = snapshots_max_bytes
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
        except (sqlite3.Error, OSError) as err:
            raise AuditError("cannot open the audit trail %s: %s (check the path and free space)"
                             % (self.path, err)) from err

    def record(self, event: Event) -> Event:
        if not event.time:
            event.time = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        row = (event.time, event.kind, event.person_id, event.person_name, event.distance,
               event.margin, event.quality, json.dumps(event.frames), event.latency_ms,
               json.dumps(event.detail, sort_keys=True), event.snapshot)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute(
                    "INSERT INTO events (time, kind, person_id, person_name, distance, margin, quality,"
                    " frames, latency_ms, detail, snapshot) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
                event.id = cursor.lastrowid
                self._prune()
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise AuditError("cannot store a %s event in %s: %s" % (event.kind, self.path, err)) from err
        return event

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _prune(self) -> None:
        count = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        if count > self.max_events:
            self._db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
                             (count - self.max_events,))
        total = self._db.execute("SELECT COALESCE(SUM(LENGTH(snapshot)), 0) FROM events").fetchone()[0]
        if total <= self.snapshots_max_bytes:
            return
        excess = total - self.snapshots_max_bytes
        rows = self._db.execute("SELECT id, LENGTH(snapshot) FROM events WHERE snapshot IS NOT NULL "
                                "ORDER BY id").fetchall()
        dropped = []
        for event_id, size in rows:
            if excess <= 0:
                break
            dropped.append(event_id)
            excess -= size
        self._db.executemany("UPDATE events SET snapshot = NULL WHERE id = ?", [(i,) for i in dropped])

    def events(self, limit: int = 100, kind: Optional[str] = None, unsent_only: bool = False,
               since_id: int = 0) -> List[Event]:
        clauses, params = ["id > ?"], [since_id]
        if kind:
            clauses.append("kind = ?")
            params.append(kind)
        if unsent_only:
            clauses.append("sent = 0")
        params.append(limit)
        query = ("SELECT id, time, kind, person_id, person_name, distance, margin, quality, frames,"
                 " latency_ms, detail, snapshot FROM events WHERE %s ORDER BY id LIMIT ?"
                 % " AND ".join(clauses))
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [Event(id=r[0], time=r[1], kind=r[2], person_id=r[3], person_name=r[4], distance=r[5],
                      margin=r[6], quality=r[7], frames=json.loads(r[8] or "[]"), latency_ms=r[9],
                      detail=json.loads(r[10] or "{}"), snapshot=r[11]) for r in rows]

    def mark_sent(self, ids: List[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE events SET sent = 1 WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
