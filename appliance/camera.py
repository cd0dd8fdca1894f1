"""Camera sources and the latest-frame reader.

A reader thread keeps only the newest frame with its capture time, so a slow consumer always
works on what the camera sees now and stale frames are dropped, as at a real door.
"""

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from appliance.errors import CameraError


@dataclass
class Frame:
    image: np.ndarray
    captured: float  # time.monotonic() when the frame was read
    number: int  # frames read from the source so far, including dropped ones


def open_capture(source: str) -> "cv2.VideoCapture":
    """A V4L2 index or device, an RTSP URL, a video file, or a GStreamer pipeline string."""
    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
    elif "!" in source:  # GStreamer pipeline syntax
        capture = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    else:
        if "://" not in source and not Path(source).exists():
            raise CameraError("camera source %s does not exist" % source)
        capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise CameraError("cannot open camera source %s (check the path, URL or device)" % source)
    return capture


class LatestFrameReader:
    """Reads a source on its own thread; `latest()` returns the newest frame not yet taken.

    A video file is paced at its own frame rate so it behaves like a live camera.
    """

    def __init__(self, source: str, realtime_files: bool = True) -> None:
        self.source = source
        self._capture = open_capture(source)
        fps = self._capture.get(cv2.CAP_PROP_FPS) or 0
        is_file = "://" not in source and Path(source).is_file()
        self._interval = 1.0 / fps if (is_file and realtime_files and 0 < fps < 240) else 0.0
        self._condition = threading.Condition()
        self._frame: Optional[Frame] = None
        self._taken = 0
        self.ended = False
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name="camera", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        count = 0
        next_due = time.monotonic()
        while not self._stop.is_set():
            ok, image = self._capture.read()
            if not ok:
                break
            count += 1
            with self._condition:
                if self._frame is not None and self._frame.number > self._taken:
                    self.dropped += 1
                self._frame = Frame(image, time.monotonic(), count)
                self._condition.notify_all()
            if self._interval:
                next_due += self._interval
                time.sleep(max(0.0, next_due - time.monotonic()))
        with self._condition:
            self.ended = True
            self._condition.notify_all()

    def latest(self, timeout: float = 5.0) -> Optional[Frame]:
        """The newest unseen frame; None once the source has ended (or after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._frame is None or self._frame.number <= self._taken:
                if self.ended:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)
            self._taken = self._frame.number
            return self._frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._capture.release()
