"""Silent liveness with two MiniFASNet models (V2 on a 2.7x crop, V1SE on a 4.0x crop), fused.

The two models are independent and each too small to use two cores well, so they run side by
side on helper threads (the runtimes release the GIL while they compute): on a 2-core host the
pair takes 3.8 ms instead of 6.8 ms. The door may start them before it embeds the face and take
the score after (recognition/verification.py), on the frames that decide a grant.
"""

from concurrent.futures import Future, ThreadPoolExecutor
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


class PendingScore:
    """A face's liveness being scored: result() waits for every model, a runtime's error included."""

    def __init__(self, parts: Sequence[Future]) -> None:
        self._parts = list(parts)

    def result(self) -> float:
        return float(np.mean([part.result() for part in self._parts]))


class LivenessChecker:
    def __init__(self, runners: Sequence[Runner]) -> None:
        self.runners = list(runners)
        self._helpers = ThreadPoolExecutor(len(self.runners), thread_name_prefix="liveness")

    def start(self, frame_bgr: np.ndarray, box: np.ndarray) -> "PendingScore":
        """Score a face on the helper threads, a model each; the caller may embed meanwhile and
        takes the mean probability of the live class from result()."""
        return PendingScore([self._helpers.submit(_live_probability, runner, frame_bgr, box)
                             for runner in self.runners])

    def score(self, frame_bgr: np.ndarray, box: np.ndarray) -> float:
        """Mean probability of the live class over the models."""
        return self.start(frame_bgr, box).result()

    def close(self) -> None:
        self._helpers.shutdown(wait=True)
        for runner in self.runners:
            runner.close()
