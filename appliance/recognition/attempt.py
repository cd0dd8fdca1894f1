"""An attempt's record: the audit event of a grant, a denial or a tuning capture, with its snapshot.

The door loop (`service.py`) and `facegate tune capture` both make their events here, so a
capture is recorded exactly as the door would have recorded that attempt.
"""

from typing import Optional

import cv2
import numpy as np

from appliance.audit import Event
from appliance.recognition.verification import GRANT, Outcome
from appliance.vision.geometry import enlarged_box

SNAPSHOT_CONTEXT = 1.5  # the face box enlarged this much: the face with some of its surroundings


def snapshot_jpeg(image: np.ndarray, box: np.ndarray, max_side: int) -> Optional[bytes]:
    """A small JPEG of the face with some context, for the audit trail."""
    left, top, right, bottom = enlarged_box(box, SNAPSHOT_CONTEXT, image.shape)
    crop = image[top:bottom, left:right]
    if crop.size == 0:
        return None
    scale = min(1.0, max_side / max(crop.shape[:2]))
    if scale < 1.0:
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return data.tobytes() if ok else None


def attempt_event(kind: str, outcome: Outcome, image: np.ndarray, model_id: str,
                  snapshot_max_side: int = 0, label: Optional[str] = None) -> Event:
    """The audit event of a decided attempt (`outcome.kind` GRANT or DENY); `kind` is what the
    trail calls it ("grant", "deny", or "capture" for a tuning capture). Snapshot only with a
    `snapshot_max_side`."""
    match, track = outcome.decision.match, outcome.track
    granted = outcome.decision.accepted
    detail = {"reason": outcome.decision.reason, "track": track.id, "quality": outcome.result.quality.as_dict()}
    if track.liveness is not None:
        detail["liveness"] = round(track.liveness, 3)
    if track.visit is not None:
        detail["visit"] = dict(track.visit)
    if kind == "capture":
        detail["decided"] = "grant" if outcome.kind == GRANT else "deny"
    if not granted and match.person is not None:
        # a denied face is nobody: the nearest person is a clue for tuning, not an identity
        detail["nearest"] = {"id": match.person.id, "name": match.person.name}
    snapshot = snapshot_jpeg(image, track.face.box, snapshot_max_side) if snapshot_max_side else None
    return Event(kind,
                 person_id=match.person.id if granted else None,
                 person_name=match.person.name if granted else None,
                 distance=_finite(match.distance), margin=_finite(match.margin),
                 quality=round(track.best_quality, 1), frames=list(track.good_frames),
                 detail=detail, snapshot=snapshot, embedding=outcome.probe, model_id=model_id, label=label)


def _finite(value: float) -> Optional[float]:
    return round(float(value), 4) if np.isfinite(value) else None
