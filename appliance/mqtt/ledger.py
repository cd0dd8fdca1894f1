"""The record of received commands: each request id is carried out once, and only once recorded.

Kept in SQLite (WAL, synchronous FULL) so a restart does not forget. A command is *claimed*
(written, reply still empty) before it is carried out and its reply is written after, so a full
disk refuses the command instead of acting on it unrecorded, and a repeat of a command whose
outcome was never written is refused rather than applied again.

Entries go once their command would be refused as too old, measured against the newest
`issued` time a signed command has carried, never against this machine's clock: a clock that
jumps forward must not empty the record and let old commands in again.
"""

import json
import sqlite3
import threading
import time
from typing import Any, Dict, Optional, Tuple

from appliance.errors import ConfigError, StorageError

UNFINISHED = {"ok": False, "code": "duplicate",
              "message": "this request was received before and its outcome was not recorded; "
                         "send a new request"}


class Ledger:
    def __init__(self, path: str, keep_seconds: float) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS applied (request_id TEXT PRIMARY KEY, verb TEXT,"
                             " received REAL, reply TEXT)")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(applied)")}
            if "issued" not in columns:  # records made before the clock-independent pruning
                self._db.execute("ALTER TABLE applied ADD COLUMN issued REAL")
                self._db.execute("UPDATE applied SET issued = received")
            self._newest = self._db.execute("SELECT MAX(issued) FROM applied").fetchone()[0] or 0.0
        except sqlite3.Error as err:
            raise ConfigError("cannot open the MQTT state file %s: %s (check mqtt.state_path)" % (path, err)) from err

    @property
    def newest_issued(self) -> float:
        """The newest `issued` time of any recorded command: a floor for "now" that no clock moves."""
        return self._newest

    def reply_for(self, request_id: str) -> Optional[Dict[str, Any]]:
        """The recorded reply of a request seen before (UNFINISHED if it has none), else None."""
        with self._lock:
            row = self._db.execute("SELECT reply FROM applied WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        return json.loads(row[0]) if row[0] else dict(UNFINISHED)

    def claim(self, request_id: str, verb: str, issued: float) -> None:
        """Record that this request is being carried out; StorageError (and nothing recorded) if
        the record cannot be written."""
        self._write("INSERT INTO applied (request_id, verb, received, reply, issued) VALUES (?, ?, ?, NULL, ?)",
                    (request_id, verb, time.time(), issued), prune_at=max(self._newest, issued))

    def finish(self, request_id: str, reply: Dict[str, Any]) -> None:
        self._write("UPDATE applied SET reply = ? WHERE request_id = ?", (json.dumps(reply), request_id))

    def _write(self, sql: str, values: Tuple, prune_at: Optional[float] = None) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(sql, values)
                if prune_at is not None:
                    self._db.execute("DELETE FROM applied WHERE issued < ?", (prune_at - self.keep_seconds,))
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StorageError("cannot write the command record %s: %s (is the disk full?)"
                                   % (self.path, err)) from err
            if prune_at is not None:
                self._newest = prune_at

    def close(self) -> None:
        with self._lock:
            self._db.close()
