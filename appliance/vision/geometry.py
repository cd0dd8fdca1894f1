"""Pure numpy box maths: RetinaFace prior boxes, SSD-style decoding, NMS, letterbox.

No model here, so every function can be tested on hand-made inputs.
"""

import math
from functools import lru_cache
from typing import NamedTuple, Sequence, Tuple

import cv2
import numpy as np


@lru_cache(maxsize=16)
def _prior_boxes_cached(height: int, width: int, min_sizes: Tuple[Tuple[int, ...], ...],
                        steps: Tuple[int, ...]) -> np.ndarray:
    blocks = []
    for step, sizes in zip(steps, min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        centre_y, centre_x = np.meshgrid((np.arange(rows) + 0.5) * step / height,
                                         (np.arange(cols) + 0.5) * step / width, indexing="ij")
        count = len(sizes)
        # Anchor order within a cell follows the network: row, column, then each min size.
        block = np.empty((rows, cols, count, 4), dtype=np.float32)
        block[..., 0] = centre_x[..., None]
        block[..., 1] = centre_y[..., None]
        block[..., 2] = np.asarray(sizes, dtype=np.float32) / width
        block[..., 3] = np.asarray(sizes, dtype=np.float32) / height
        blocks.append(block.reshape(-1, 4))
    priors = np.concatenate(blocks, axis=0)
    priors.setflags(write=False)
    return priors


def prior_boxes(height: int, width: int, min_sizes: Sequence[Sequence[int]],
                steps: Sequence[int]) -> np.ndarray:
    """Prior boxes (cx, cy, w, h), normalised to the input size; computed once per size."""
    return _prior_boxes_cached(int(height), int(width),
                               tuple(tuple(int(s) for s in group) for group in min_sizes),
                               tuple(int(s) for s in steps))


def decode_boxes(offsets: np.ndarray, priors: np.ndarray,
                 variances: Sequence[float]) -> np.ndarray:
    """SSD decoding: (dx, dy, dw, dh) against priors -> (x1, y1, x2, y2), normalised."""
    centres = priors[:, :2] + offsets[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(offsets[:, 2:] * variances[1])
    return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)


def decode_landmarks(offsets: np.ndarray, priors: np.ndarray,
                     variances: Sequence[float]) -> np.ndarray:
    """Five (x, y) points per prior from offsets scaled by the prior size; shape (N, 5, 2)."""
    points = offsets.reshape(-1, 5, 2)
    return priors[:, None, :2] + points * variances[0] * priors[:, None, 2:]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box against many."""
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        overlaps = box_iou(boxes[best], boxes[order[1:]])
        order = order[1:][overlaps <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class Letterbox(NamedTuple):
    """How an image was fitted into the model input: scale and top-left padding."""

    scale: float
    pad_x: int
    pad_y: int

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) points (or (..., 4) boxes) from input pixels back to the image."""
        flat = points.reshape(-1, 2)
        mapped = (flat - np.asarray([self.pad_x, self.pad_y], dtype=np.float32)) / self.scale
        return mapped.reshape(points.shape)

    def to_input(self, points: np.ndarray) -> np.ndarray:
        flat = points.reshape(-1, 2)
        mapped = flat * self.scale + np.asarray([self.pad_x, self.pad_y], dtype=np.float32)
        return mapped.reshape(points.shape)


def letterbox(image: np.ndarray, size: Tuple[int, int],
              fill: Tuple[int, int, int] = (0, 0, 0)) -> Tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio into `size` (height, width), centred, padded with `fill`."""
    target_h, target_w = size
    height, width = image.shape[:2]
    scale = min(target_w / width, target_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
    # one pass: the border is written around the resized image, not the canvas filled first
    canvas = cv2.copyMakeBorder(resized, pad_y, target_h - new_h - pad_y, pad_x, target_w - new_w - pad_x,
                                cv2.BORDER_CONSTANT, value=tuple(int(v) for v in fill))
    # The effective scale per axis differs by rounding; the mean keeps round trips within 1 px.
    effective = (new_w / width + new_h / height) / 2
    return canvas, Letterbox(effective, pad_x, pad_y)


def frame_aspect_size(height: int, width: int, longest: int, multiple: int = 32) -> Tuple[int, int]:
    """Input size that keeps the frame's aspect: longest side `longest`, both sides a multiple."""
    scale = longest / max(height, width)
    def fit(side: int) -> int:
        return max(multiple, int(math.ceil(side * scale / multiple)) * multiple)
    return fit(height), fit(width)


def enlarged_box(box: np.ndarray, scale: float, frame_shape, square: bool = False,
                 shift_inside: bool = False) -> Tuple[int, int, int, int]:
    """A face box enlarged `scale` times about its centre, as whole pixels (left, top, right,
    bottom; right and bottom exclusive) within the frame. With `square` both sides are the box's
    longer side. Clipped at the frame's edges, or with `shift_inside` moved inside it whole (the
    scale shrinking only when the frame is smaller), as the liveness models were trained."""
    height, width = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    if square:
        box_w = box_h = max(box_w, box_h)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    if shift_inside:
        scale = min((height - 1) / box_h, (width - 1) / box_w, scale)
        new_w, new_h = box_w * scale, box_h * scale
        left = int(max(min(max(centre_x - new_w / 2, 0.0), width - 1 - new_w), 0))
        top = int(max(min(max(centre_y - new_h / 2, 0.0), height - 1 - new_h), 0))
        return left, top, int(left + new_w) + 1, int(top + new_h) + 1
    half_w, half_h = box_w * scale / 2, box_h * scale / 2
    return (int(max(0.0, centre_x - half_w)), int(max(0.0, centre_y - half_h)),
            int(min(width, centre_x + half_w)), int(min(height, centre_y + half_h)))

