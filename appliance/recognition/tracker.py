"""A single-target IoU tracker: follows the one face being verified from frame to frame.

At a door only one person is verified at a time: the largest (nearest) or most central face
above a minimum size. The track continues while its box overlaps the chosen face enough; a
different or lost face starts a new track, and so does a face whose embedding jumps (the
verifier's check), so evidence from one person never mixes with another's.
"""

import itertools
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from appliance.vision.detector import Face, central_face
from appliance.vision.geometry import box_iou


@dataclass
class Track:
    id: int
    face: Face
    first_captured: float  # capture time of the first frame of the current attempt
    last_seen: float
    frames: List[int] = field(default_factory=list)  # frame numbers seen
    embeddings: List[np.ndarray] = field(default_factory=list)  # good-quality frames only
    good_frames: List[int] = field(default_factory=list)
    agreeing: int = 0  # consecutive good frames accepted for `candidate`
    candidate: Optional[str] = None  # person id the recent good frames agree on
    decided: bool = False  # this attempt was granted or denied: one decision per attempt
    best_quality: float = 0.0
    last_reasons: List[str] = field(default_factory=list)
    identity: Optional[np.ndarray] = None  # fused embedding of the attempt (at its decision, once decided)
    live_scores: List[float] = field(default_factory=list)  # good frames' liveness, when it runs
    liveness: Optional[float] = None  # the attempt's fused live probability at its decision
    visit: Optional[dict] = None  # at its decision: which attempt of its face's visit this was, and any lockout


def face_width(face: Face) -> float:
    return float(face.box[2] - face.box[0])


def choose_face(faces: Sequence[Face], frame_shape, min_width: float, rule: str) -> Optional[Face]:
    """The face to verify: faces narrower than `min_width` are ignored."""
    candidates = [f for f in faces if face_width(f) >= min_width]
    if not candidates:
        return None
    if rule == "central":
        return central_face(candidates, frame_shape)
    return max(candidates, key=lambda f: face_width(f) * float(f.box[3] - f.box[1]))


class Tracker:
    def __init__(self, iou_threshold: float = 0.3, lost_after_seconds: float = 0.6) -> None:
        self.iou_threshold = iou_threshold
        self.lost_after_seconds = lost_after_seconds
        self.track: Optional[Track] = None
        self._ids = itertools.count(1)

    def update(self, face: Optional[Face], captured: float, frame_number: int) -> Optional[Track]:
        """Feed the chosen face of one frame (or None); returns the current track or None when lost."""
        track = self.track
        if face is None:
            if track is not None and captured - track.last_seen > self.lost_after_seconds:
                self.track = None
            return self.track
        overlap = float(box_iou(track.face.box, face.box[None, :])[0]) if track is not None else 0.0
        if track is None or overlap < self.iou_threshold:
            track = Track(next(self._ids), face, captured, captured)
            self.track = track
        track.face = face
        track.last_seen = captured
        track.frames.append(frame_number)
        return track

    def restart(self, face: Face, captured: float, frame_number: int) -> Track:
        """End the current attempt and start another on the same face (someone else took the place)."""
        self.track = Track(next(self._ids), face, captured, captured, frames=[frame_number])
        return self.track

    def reset(self) -> None:
        self.track = None
