"""Silent liveness with two MiniFASNet models (V2 on a 2.7x crop, V1SE on a 4.0x crop), fused."""

from typing import Sequence

import cv2
import numpy as np

from appliance.inference.base import Runner
from appliance.vision.geometry import enlarged_box


def context_crop(frame: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray:
    """The face box enlarged `scale` times about its centre, shifted to stay inside the frame
    (smaller only when the frame is), as the models were trained."""
    left, top, right, bottom = enlarged_box(box, scale, frame.shape, shift_inside=True)
    return frame[top:bottom, left:right]


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

