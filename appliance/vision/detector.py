"""Face detectors: RetinaFace (the product's) and SCRFD (for comparison only, non-commercial).

Both take a BGR frame of any size and return faces in that frame's pixel coordinates.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from appliance.inference.base import Runner
from appliance.vision.geometry import (decode_boxes, decode_landmarks, frame_aspect_size,
                                       letterbox, nms, prior_boxes)


@dataclass
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2 in frame pixels
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left and right mouth corners
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


class Detector:
    """Common letterbox/threshold/NMS flow; subclasses decode their network's raw outputs."""

    def __init__(self, runner: Runner, input_size: int = 320, keep_frame_aspect: bool = False,
                 score_threshold: float = 0.5, nms_threshold: float = 0.4) -> None:
        self.runner = runner
        self.spec = runner.spec
        self.input_size = input_size
        self.keep_frame_aspect = keep_frame_aspect
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        mean = self.spec.input.mean
        # Pad with the mean colour so the padding is zero after normalisation.
        colour = mean if self.spec.input.colour == "BGR" else mean[::-1]
        self._fill = tuple(int(round(v)) for v in colour)

    def input_shape(self, frame_shape: Tuple[int, ...]) -> Tuple[int, int]:
        if self.keep_frame_aspect:
            return frame_aspect_size(frame_shape[0], frame_shape[1], self.input_size)
        return self.input_size, self.input_size

    def input_scale(self, frame_shape: Tuple[int, ...]) -> float:
        """How many input pixels one frame pixel becomes after the letterbox."""
        height, width = self.input_shape(frame_shape)
        return min(height / frame_shape[0], width / frame_shape[1])

    def detect(self, frame_bgr: np.ndarray) -> List[Face]:
        height, width = self.input_shape(frame_bgr.shape)
        canvas, fit = letterbox(frame_bgr, (height, width), self._fill)
        outputs = self.runner.run(canvas[None])
        boxes, landmarks, scores = self._decode(outputs, height, width)
        if scores.size == 0:
            return []
        keep = nms(boxes, scores, self.nms_threshold)
        boxes = fit.to_original(boxes[keep])
        landmarks = fit.to_original(landmarks[keep])
        frame_h, frame_w = frame_bgr.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame_w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame_h)
        return [Face(box=b, landmarks=l, score=float(s))
                for b, l, s in zip(boxes, landmarks, scores[keep])]

    def _decode(self, outputs, height: int, width: int):
        raise NotImplementedError


class RetinaFaceDetector(Detector):
    def _decode(self, outputs, height, width):
        spec = self.spec
        scores = outputs[spec.output_index("scores")].reshape(-1, 2)[:, 1]
        selected = np.flatnonzero(scores >= self.score_threshold)
        priors_cfg = spec.extra["priors"]
        priors = prior_boxes(height, width, priors_cfg["min_sizes"], priors_cfg["steps"])
        if priors.shape[0] != scores.shape[0]:
            raise ValueError("detector gave %d anchors, priors for %dx%d are %d"
                             % (scores.shape[0], width, height, priors.shape[0]))
        variances = priors_cfg["variance"]
        offsets = outputs[spec.output_index("boxes")].reshape(-1, 4)[selected]
        point_offsets = outputs[spec.output_index("landmarks")].reshape(-1, 10)[selected]
        scale = np.asarray([width, height], dtype=np.float32)
        boxes = decode_boxes(offsets, priors[selected], variances) * np.tile(scale, 2)
        landmarks = decode_landmarks(point_offsets, priors[selected], variances) * scale
        return boxes.astype(np.float32), landmarks.astype(np.float32), scores[selected]


class ScrfdDetector(Detector):
    """SCRFD-500M. Its licence is non-commercial: offered for comparison, never the default."""

    def input_shape(self, frame_shape):
        height, width = super().input_shape(frame_shape)
        return math.ceil(height / 32) * 32, math.ceil(width / 32) * 32

    def _decode(self, outputs, height, width):
        anchors = self.spec.extra["anchors"]
        all_boxes, all_points, all_scores = [], [], []
        for step in anchors["steps"]:
            scores = outputs[self.spec.output_index("scores_%d" % step)].reshape(-1)
            selected = np.flatnonzero(scores >= self.score_threshold)
            if selected.size == 0:
                continue
            centres = _anchor_centres(height, width, step, anchors["per_cell"])[selected]
            distances = outputs[self.spec.output_index("boxes_%d" % step)].reshape(-1, 4)[selected]
            points = outputs[self.spec.output_index("landmarks_%d" % step)].reshape(-1, 5, 2)[selected]
            distances = distances * step
            all_boxes.append(np.concatenate([centres - distances[:, :2],
                                             centres + distances[:, 2:]], axis=1))
            all_points.append(centres[:, None, :] + points * step)
            all_scores.append(scores[selected])
        if not all_scores:
            return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0)
        return (np.concatenate(all_boxes).astype(np.float32),
                np.concatenate(all_points).astype(np.float32), np.concatenate(all_scores))


def _anchor_centres(height: int, width: int, step: int, per_cell: int) -> np.ndarray:
    rows, cols = height // step, width // step
    ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * step
    return np.repeat(centres, per_cell, axis=0)


DETECTOR_FAMILIES = {"retinaface": RetinaFaceDetector, "scrfd": ScrfdDetector}


def central_face(faces: List[Face], frame_shape) -> Optional[Face]:
    """The face whose box centre is nearest the frame centre (a portrait's subject)."""
    if not faces:
        return None
    centre = np.array([frame_shape[1] / 2, frame_shape[0] / 2])

    def distance(face: Face) -> float:
        return float(np.hypot(*((face.box[:2] + face.box[2:]) / 2 - centre)))
    return min(faces, key=distance)
