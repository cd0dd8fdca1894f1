"""Camera sources and the latest-frame reader.

A reader thread keeps only the newest frame with its capture time, so a slow consumer always
works on what the camera sees now and stale frames are dropped, as at a real door. A live
source that stops delivering is reopened with backoff; the reader reports the loss and the
recovery through callbacks so the door can go to its fault state meanwhile.
"""

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import cv2
import numpy as np

from appliance import threads
from appliance.errors import CameraError, ImageError
from appliance.vision import images

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class Frame:
    image: np.ndarray
    captured: float  # time.monotonic() when the frame was read
    number: int  # frames read from the source so far, including dropped ones


class ImageFolder:
    """A folder of images read in name order, with the VideoCapture calls the reader uses."""

    def __init__(self, folder: Path, fps: float) -> None:
        self.files: List[Path] = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise CameraError("camera folder %s holds no images (.jpg, .png, .bmp)" % folder)
        self.fps = fps
        self._next = 0

    def isOpened(self) -> bool:  # noqa: N802 - the VideoCapture spelling
        return True

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                # header checked first: a file claiming 2^30 pixels is skipped, not decoded;
                # the decoder's warnings stay in the log (quieting stderr is for one-shot commands)
                return True, images.read(path, quiet=False)
            except ImageError as err:
                log.warning("camera folder: skipping %s", err)
        return False, None

    def release(self) -> None:
        pass


def source_kind(source: str) -> str:
    if source.startswith("v4l2:"):
        return "v4l2"
    if source.isdigit() or source.startswith("/dev/video"):
        return "device"
    if "!" in source:  # GStreamer pipeline syntax
        return "gstreamer"
    if "://" in source:
        return "stream"
    return "folder" if Path(source).is_dir() else "file"


def open_capture(source: str, folder_fps: float = 5.0, size=(640, 480), fps: float = 15.0):
    """A V4L2 index or device, FaceGate's own V4L2 reader (v4l2:...), an RTSP URL, a video file, a
    folder, or a GStreamer pipeline string."""
    kind = source_kind(source)
    if kind == "v4l2":
        from appliance.v4l2 import V4l2Capture

        return V4l2Capture(source, size[0], size[1], fps)
    if kind == "device":
        capture = cv2.VideoCapture(int(source) if source.isdigit() else source, cv2.CAP_V4L2)
    elif kind == "gstreamer":
        capture = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    elif kind == "folder":
        return ImageFolder(Path(source), folder_fps)
    else:
        if kind == "file" and not Path(source).exists():
            raise CameraError("camera source %s does not exist" % source)
        capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        raise CameraError("cannot open camera source %s (check the path, URL or device)" % source)
    return capture


class LatestFrameReader:
    """Reads a source on its own thread; `latest()` returns the newest frame not yet taken.

    Files and folders are paced at their own frame rate (`realtime`) so they behave like a live
    camera; they end at their end unless `loop` is set. Live sources (devices, streams,
    pipelines, looped files) are reopened after a failure, waiting 0.5 s, 1 s, 2 s ... up to
    `reconnect_max_seconds`, calling `on_lost(message)` once and `on_back()` when frames return.
    """

    def __init__(self, source: str, realtime: bool = True, loop: bool = False, folder_fps: float = 5.0,
                 reconnect_max_seconds: float = 10.0,
                 on_lost: Optional[Callable[[str], None]] = None,
                 on_back: Optional[Callable[[], None]] = None,
                 on_died: Optional[threads.DeathCallback] = None, every_frame: bool = False,
                 size=(640, 480), fps: float = 15.0) -> None:
        self.source = source
        self.size, self.fps = size, fps  # what a v4l2: source asks of the camera
        self.kind = source_kind(source)
        # a recording replayed frame by frame on its own clock: the same frames and times to the
        # door however fast it works (a live camera cannot wait)
        self.every_frame = every_frame and self.kind in ("file", "folder")
        self.live = self.kind in ("device", "v4l2", "stream", "gstreamer") or loop
        self.realtime = realtime
        self.folder_fps = folder_fps
        self.reconnect_max_seconds = reconnect_max_seconds
        self.on_lost, self.on_back = on_lost, on_back
        self.on_frame: Optional[Callable[[Frame], None]] = None  # every frame read, on the reader thread
        self._capture = open_capture(source, folder_fps, size, fps)
        self._interval = 0.0 if self.every_frame else self._pacing(self._capture)
        self._fps = (self._capture.get(cv2.CAP_PROP_FPS) or folder_fps) if self.every_frame else 0.0
        self._condition = threading.Condition()
        self._frame: Optional[Frame] = None
        self._taken = 0
        self.ended = False
        self.lost = False
        self.dropped = 0
        self.failure: Optional[str] = None  # why the reader thread died, if it did
        self._on_died = on_died
        self._stop = threading.Event()
        self._thread = threads.start("camera", self._read_loop, self._died)

    def _pacing(self, capture) -> float:
        fps = capture.get(cv2.CAP_PROP_FPS) or 0
        paced = self.kind in ("file", "folder") and self.realtime and 0 < fps < 240
        return 1.0 / fps if paced else 0.0

    def _read_loop(self) -> None:
        count = 0
        next_due = started = time.monotonic()
        while not self._stop.is_set():
            ok, image = self._capture.read() if self._capture is not None else (False, None)
            if not ok:
                if not self.live or not self._reopen():
                    break
                next_due = time.monotonic()
                continue
            count += 1
            frame = Frame(image, started + count / self._fps if self.every_frame else time.monotonic(), count)
            with self._condition:
                while (self.every_frame and self._frame is not None and self._frame.number > self._taken
                       and not self._stop.is_set()):
                    self._condition.wait(0.5)  # the door takes the previous frame first
                if self._frame is not None and self._frame.number > self._taken:
                    self.dropped += 1
                self._frame = frame
                self._condition.notify_all()
            if self.on_frame is not None:
                self.on_frame(frame)
            if self.lost:
                self.lost = False
                log.info("camera %s is back", self.source)
                if self.on_back:
                    self.on_back()
            if self._interval:
                next_due += self._interval
                time.sleep(max(0.0, next_due - time.monotonic()))
        with self._condition:
            self.ended = True
            self._condition.notify_all()

    def _died(self, name: str, err: BaseException) -> None:
        self.failure = "camera %s: %s: %s" % (self.source, type(err).__name__, err)
        if self._on_died is not None:  # first, so the door sees a fault rather than an ending
            self._on_died(name, err)
        with self._condition:
            self.ended = True
            self._condition.notify_all()

    def _reopen(self) -> bool:
        """Reopen a live source until it answers or the reader is closed; False when closed."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        # a looped file that simply ended reopens at once; anything else is a lost camera
        wait = 0.0
        if self.kind not in ("file", "folder"):
            self._mark_lost("camera %s stopped delivering frames" % self.source)
            wait = 0.5
        while not self._stop.wait(wait):
            try:
                self._capture = open_capture(self.source, self.folder_fps, self.size, self.fps)
                self._interval = self._pacing(self._capture)
                return True
            except CameraError as err:
                self._mark_lost(str(err))
                wait = min(max(wait * 2, 0.5), self.reconnect_max_seconds)
        return False

    def _mark_lost(self, message: str) -> None:
        if self.lost:
            return
        self.lost = True
        log.error("camera lost: %s; retrying", message)
        if self.on_lost:
            self.on_lost(message)

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
            self._condition.notify_all()  # a reader handing over every frame waits for this
            return self._frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self._capture is not None:
            self._capture.release()
