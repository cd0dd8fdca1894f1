"""Silent liveness with two MiniFASNet models (V2 on a 2.7x crop, V1SE on a 4.0x crop), fused."""

from typing import Sequence

import cv2
import numpy as np

from appliance.inference.base import Runner


def context_crop(frame: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray:
    """The face box enlarged `scale` times about its centre, shifted to stay inside the frame.

    When the frame is too small for the full enlargement the scale shrinks, as the models
    were trained that way.
    """
    frame_h, frame_w = frame.shape[:2]
    x1, y1, x2, y2 = [float(v) for v in box]
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min((frame_h - 1) / box_h, (frame_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    centre_x, centre_y = x1 + box_w / 2, y1 + box_h / 2
    left = min(max(centre_x - new_w / 2, 0.0), frame_w - 1 - new_w)
    top = min(max(centre_y - new_h / 2, 0.0), frame_h - 1 - new_h)
    left, top = int(max(left, 0)), int(max(top, 0))
    right, bottom = int(left + new_w), int(top + new_h)
    return frame[top:bottom + 1, left:right + 1]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class LivenessChecker:
    def __init__(self, runners: Sequence[Runner]) -> None:
        self.runners = list(runners)

    def score(self, frame_bgr: np.ndarray, box: np.ndarray) -> float:
        """Mean probability of the live class over the models."""
        probabilities = []
        for runner in self.runners:
            height, width = runner.spec.input.size
            crop = context_crop(frame_bgr, box, float(runner.spec.extra["crop_scale"]))
            crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
            logits = runner.run(crop[None])[0].reshape(-1)
            probabilities.append(_softmax(logits)[int(runner.spec.extra["live_class"])])
        return float(np.mean(probabilities))

    def close(self) -> None:
        for runner in self.runners:
            runner.close()

