"""The page's side of the folder it shares with the running door (see web/live.py)."""

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from appliance.web.live import write_atomic

STALE_SECONDS = 5.0  # a status older than this: the door is not running


class DoorLink:
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def watch(self) -> None:
        """A browser shows the live view: the door publishes frames while this stays fresh."""
        try:
            (self.folder / "watching").touch()
        except OSError:
            pass  # the door has not made its folder yet

    def status(self) -> Dict[str, Any]:
        try:
            status = json.loads((self.folder / "status.json").read_text())
        except (OSError, ValueError):
            return {"running": False, "why": "the door has not started (no status in %s)" % self.folder}
        age = time.time() - status.get("time", 0)
        if status.get("running") and age > STALE_SECONDS:
            status.update(running=False, why="the door has said nothing for %.0f s: it is stopped or stuck" % age)
        elif not status.get("running"):
            status["why"] = "the door stopped"
        return status

    def frame(self) -> Optional[bytes]:
        try:
            return (self.folder / "frame.jpg").read_bytes()
        except OSError:
            return None

    def faces(self) -> Dict[str, Any]:
        try:
            return json.loads((self.folder / "faces.json").read_text())
        except (OSError, ValueError):
            return {"faces": [], "time": 0}

    def ask(self, verb: str, origin: Dict[str, Any], timeout: float = 5.0, **fields) -> Dict[str, Any]:
        """Ask the running door to do something and wait for its answer."""
        if not self.status().get("running"):
            return {"ok": False, "error": "the door is not running"}
        name = "%s.json" % uuid.uuid4().hex
        write_atomic(self.folder / "requests" / name, json.dumps(dict(fields, verb=verb, origin=origin)).encode())
        reply_path = self.folder / "replies" / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if reply_path.exists():
                reply = json.loads(reply_path.read_text())
                os.unlink(reply_path)
                return reply
            time.sleep(0.05)
        try:
            os.unlink(self.folder / "requests" / name)  # never carried out later, once the page gave up
        except OSError:
            return {"ok": False, "error": "the door took the request but did not answer in time: see the audit trail"}
        return {"ok": False, "error": "the door did not answer within %g s" % timeout}
