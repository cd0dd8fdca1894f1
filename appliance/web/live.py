"""What the door shows its web page, and what the page may ask of the door, through a folder.

The page is another process (a crash or a slow browser there never stops a decision here), so
they meet in `web.live_dir`:
- `status.json`: the door's state and faults, every second;
- `frame.jpg` and `faces.json`: the newest camera frame and what the door made of its face, at
  `web.live_fps`, only while the page says someone watches (it touches `watching`);
- `requests/ID.json` -> `replies/ID.json`: a relay test, a new decision rule. Only a process of
  the door's own user can write there (the folder is 0700), the same user that owns the gallery.

Encoding and writing happen on a worker thread that takes the newest frame and drops the rest:
the door's loop only copies a reference.
"""

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

log = logging.getLogger(__name__)

WATCH_SECONDS = 5.0  # the page touches `watching` more often than this while a live view is open
FRAME_WIDTH = 640  # the live view is a glance, not evidence


def write_atomic(path: Path, data: bytes) -> None:
    """The reader sees the old file or the new one, never half of one."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def describe_outcome(outcome) -> List[Dict[str, Any]]:
    """The face the door is deciding on, as the live view draws it: box, name or "unknown", and
    why it is not being decided when it is not."""
    track = getattr(outcome, "track", None)
    if track is None or track.face is None:
        return []
    face: Dict[str, Any] = {"box": [round(float(v), 1) for v in track.face.box[:4]], "name": None, "reasons": []}
    result, decision = outcome.result, outcome.decision
    if result is not None and not result.quality.passed:
        face["reasons"] = list(result.quality.reasons)
    if result is not None and result.live_score is not None:
        face["liveness"] = round(float(result.live_score), 3)
    if decision is not None:
        if decision.accepted and decision.match.person is not None:
            face["name"] = decision.match.person.name
        else:
            face["reasons"].append(decision.reason)
        if math.isfinite(decision.match.distance):
            face["distance"] = round(float(decision.match.distance), 3)
    if outcome.kind in ("grant", "deny"):
        face["decided"] = outcome.kind
    return [face]


class LiveFeed:
    """The door's side of the folder. `offer` is called by the door loop for every frame."""

    def __init__(self, folder: str, fps: float, status: Callable[[], Dict[str, Any]],
                 handle_request: Callable[[Dict[str, Any]], Dict[str, Any]]) -> None:
        self.folder = Path(folder)
        self.period = 1.0 / fps
        self.status = status
        self.handle_request = handle_request
        for sub in ("", "requests", "replies"):
            (self.folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self._next_frame = 0.0
        self._next_status = 0.0
        self._next_watch_check = 0.0
        self._watched = False
        self._faces: List[Dict[str, Any]] = []
        self._faces_until = 0.0
        self._pending: Optional[tuple] = None
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="web-live", daemon=True)
        self._thread.start()

    def _is_watched(self, now: float) -> bool:
        if now >= self._next_watch_check:
            self._next_watch_check = now + 1.0
            try:
                self._watched = time.time() - (self.folder / "watching").stat().st_mtime < WATCH_SECONDS
            except OSError:
                self._watched = False
        return self._watched

    def offer(self, image, outcome=None, too_small=(), min_pixels: int = 0) -> None:
        now = time.monotonic()
        if outcome is not None:
            faces = describe_outcome(outcome) + [
                {"box": [round(float(v), 1) for v in face.box[:4]], "name": None,
                 "reasons": ["too small: %.0f px wide, need %d (come closer)" % (face.box[2] - face.box[0], min_pixels)]}
                for face in too_small]
            if faces or outcome.kind == "lost":
                self._faces, self._faces_until = faces, now + 1.0
        frame = None
        if image is not None and now >= self._next_frame and self._is_watched(now):
            self._next_frame = now + self.period
            frame = image
        status = now >= self._next_status
        if status:
            self._next_status = now + 1.0
        if frame is None and not status:
            return
        faces = self._faces if now < self._faces_until else []
        with self._wake:
            previous = self._pending
            # a frame not yet written is replaced by the newer one; a status request is kept
            self._pending = (frame if frame is not None else (previous[0] if previous else None), faces,
                             status or bool(previous and previous[2]))
            self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                image, faces, status = self._pending
                self._pending = None
            try:
                if image is not None:
                    self._write_frame(image, faces)
                if status:
                    write_atomic(self.folder / "status.json", json.dumps(self.status(), ensure_ascii=False).encode())
                    self._answer_requests()
            except Exception as err:  # the page goes without; the door must not
                log.warning("web page feed: %s", err)

    def _write_frame(self, image, faces: List[Dict[str, Any]]) -> None:
        import cv2  # here, not at the top: the page imports this module and needs no OpenCV to serve

        scale = min(1.0, FRAME_WIDTH / image.shape[1])
        if scale < 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return
        shown = [dict(face, box=[round(v * scale, 1) for v in face["box"]]) for face in faces]
        write_atomic(self.folder / "frame.jpg", jpeg.tobytes())
        write_atomic(self.folder / "faces.json", json.dumps(
            {"time": time.time(), "width": image.shape[1], "height": image.shape[0], "faces": shown},
            ensure_ascii=False).encode())

    def _answer_requests(self) -> None:
        for path in sorted((self.folder / "requests").glob("*.json")):
            try:
                request = json.loads(path.read_text())
                reply = self.handle_request(request)
            except Exception as err:  # a bad request is answered, never fatal
                reply = {"ok": False, "error": str(err)}
            write_atomic(self.folder / "replies" / path.name, json.dumps(reply, ensure_ascii=False).encode())
            path.unlink()

    def close(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=2.0)
        try:
            status = dict(self.status(), running=False)
            write_atomic(self.folder / "status.json", json.dumps(status, ensure_ascii=False).encode())
        except Exception as err:
            log.warning("web page feed: %s", err)
