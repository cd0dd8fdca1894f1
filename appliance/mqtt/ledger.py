"""The record of applied commands: a repeated request id is answered with its first reply.

Kept in SQLite (WAL, synchronous FULL) so a restart does not forget what was applied; entries
are dropped once their command would be refused as too old anyway.
"""

import json
import sqlite3
import threading
import time
from typing import Any, Dict, Optional

from appliance.errors import ConfigError


class Ledger:
    def __init__(self, path: str, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS applied (request_id TEXT PRIMARY KEY, verb TEXT,"
                             " received REAL, reply TEXT)")
        except sqlite3.Error as err:
            raise ConfigError("cannot open the MQTT state file %s: %s (check mqtt.state_path)" % (path, err)) from err

    def reply_for(self, request_id: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT reply FROM applied WHERE request_id = ?", (request_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def record(self, request_id: str, verb: str, reply: Dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?)",
                             (request_id, verb, now, json.dumps(reply)))
            self._db.execute("DELETE FROM applied WHERE received < ?", (now - self.keep_seconds,))
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
