"""An embedder's calibration: how close faces of people who are *not* enrolled come to one who is.

Measured once per embedder on a large set of faces (`facegate eval-calibrate` on lfw-dev:
every image of every other person against a person enrolled with k = 1, 2, 3 photos, the
distance to their nearest template), and shipped beside the manifest as
`models/calibration/<model_id>.json`. The door reads it; it never measures anything itself.

`false_match(distance, k)` is an upper bound, at 95% confidence, on the chance that one
stranger's face is within `distance` of one person enrolled with k templates. The file carries
the measured counts and that bound on the same grid (`upper`), which eval-calibrate makes:
- the estimate is the measured rate where at least `TAIL_COUNT` pairs came that close, and
  below that a log-linear tail fitted where 20 to 2,000 did (a few look-alikes or mislabelled
  photos far out in the tail do not move it);
- the bound is the 95th percentile of that estimate over resamplings of the *people* (pairs of
  the same two people are not independent chances, so resampling pairs would be overconfident),
  which widens as the tail is extended further;
- a person with k templates is at most k chances of one template, so the k = 1 curve, measured
  on five times as many pairs, also bounds k = 2 and 3 (the lower of the two is used).
`facegate eval-calibrate --validate` checks the bound on people it was not measured on.
"""

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from appliance.errors import ModelError
from appliance.models import CALIBRATION_FOLDER

FOLDER = CALIBRATION_FOLDER  # beside the manifest; the 8-bit tolerance is read there too
GRID_STEP = 0.0025
GRID_END = 1.5
TAIL_COUNT = 20  # fewer pairs than this below a distance: the estimate there is the fitted tail


def grid() -> np.ndarray:
    return np.round(np.arange(0.0, GRID_END + GRID_STEP / 2, GRID_STEP), 6)


def estimate(counts: np.ndarray, total: float) -> np.ndarray:
    """The rate of stranger pairs within each grid distance: measured where `TAIL_COUNT` pairs
    or more lie below, a log-linear tail fitted where 20 to 2,000 do below that."""
    points = grid()
    rate = np.asarray(counts, np.float64) / total
    usable = (counts >= TAIL_COUNT) & (counts <= TAIL_COUNT * 100)
    if usable.sum() < 2:
        usable = counts >= TAIL_COUNT
    if usable.sum() < 2:
        return np.maximum(rate, TAIL_COUNT / total)  # nothing to fit: the measured floor
    xs, ys = points[usable], np.log10(rate[usable])
    slope = max(float(np.polyfit(xs, ys, 1)[0]), 1.0)  # at least a decade per unit of distance
    start = xs[0]
    tail = 10 ** (ys[0] - slope * (start - points))
    return np.where(points < start, tail, np.maximum(rate, 1e-300))


class Curve:
    """Cumulative counts of impostor distances on `grid()`, out of `total` pairs, and the 95%
    bound on the rate they estimate (`upper`, on the same grid)."""

    def __init__(self, counts: np.ndarray, total: int, upper: np.ndarray) -> None:
        self.counts = counts
        self.total = total
        self.upper = upper
        self._points = grid()
        self._log_upper = np.log10(np.maximum(upper, 1e-300))
        measured = np.flatnonzero(counts >= TAIL_COUNT)
        self.measured_from = float(self._points[measured[0]]) if measured.size else GRID_END

    def probability(self, distance: float) -> float:
        distance = float(np.clip(distance, 0.0, GRID_END))
        return float(10 ** np.interp(distance, self._points, self._log_upper))


@dataclass(frozen=True)
class Calibration:
    model_id: str
    curves: Dict[int, Curve]  # templates per person -> curve
    protocol: str

    def _bound(self, distance: float, templates: int):
        """(the 95% bound, whether it rests on an extension) for one person with `templates`."""
        templates = max(1, templates)
        measured = max(k for k in self.curves if k <= templates)
        curve = self.curves[measured]
        bounds = [(curve.probability(distance) * templates / measured, distance < curve.measured_from)]
        if 1 in self.curves and templates > 1:  # k templates are at most k chances of one
            one = self.curves[1]
            bounds.append((templates * one.probability(distance), distance < one.measured_from))
        probability, extended = min(bounds)
        return min(1.0, probability), extended

    def false_match(self, distance: float, templates: int) -> float:
        """95% upper bound on the chance that one stranger's face comes within `distance` of a
        person with `templates` templates (more templates than measured: each extra one is
        another chance)."""
        return self._bound(distance, templates)[0]

    def extrapolated(self, distance: float, templates: int) -> bool:
        """Whether the bound at `distance` rests on the fitted tail, not on `TAIL_COUNT` measured pairs."""
        return self._bound(distance, templates)[1]

    def false_accept(self, distance: float, template_counts: Sequence[int], looks: int) -> float:
        """Chance a stranger's visit is accepted as anybody, at `distance`: every person is a chance,
        and a visit has `looks` independent looks (a union bound: it errs high)."""
        people_with = Counter(template_counts)  # one curve lookup per distinct template count
        per_look = sum(people * self.false_match(distance, k) for k, people in people_with.items())
        return min(1.0, per_look * looks)

    def threshold(self, target: float, template_counts: Sequence[int], looks: int) -> float:
        """The largest distance whose false accepts per visit stay within `target`."""
        counts = [k for k in template_counts if k > 0] or [1]
        low, high = 0.0, GRID_END
        if self.false_accept(low, counts, looks) > target:
            return 0.0
        for _ in range(40):
            middle = (low + high) / 2
            if self.false_accept(middle, counts, looks) <= target:
                low = middle
            else:
                high = middle
        return math.floor(low * 10000) / 10000


def path_for(model_id: str, folder: Path = FOLDER) -> Path:
    return folder / ("%s.json" % model_id)


def load(model_id: str, folder: Path = FOLDER) -> Optional[Calibration]:
    """The embedder's calibration, or None when it has none (then only an explicit threshold works)."""
    path = path_for(model_id, folder)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        curves = {int(k): Curve(np.asarray(v["counts"], np.float64), int(v["total"]),
                                np.asarray(v["upper"], np.float64))
                  for k, v in data["curves"].items()}
        if data["grid_step"] != GRID_STEP or any(len(c.counts) != len(grid()) or len(c.upper) != len(grid())
                                                 for c in curves.values()):
            raise ValueError("grid differs from this FaceGate's")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError("calibration %s is damaged (%s); reinstall FaceGate" % (path, err)) from err
    return Calibration(data["model_id"], curves, data.get("protocol", ""))


def save(calibration: Calibration, folder: Path = FOLDER) -> Path:
    """Write a calibration (eval-calibrate measures it)."""
    curves = {str(k): {"total": curve.total, "counts": [int(c) for c in curve.counts],
                       "upper": [float("%.4g" % u) for u in curve.upper]}
              for k, curve in calibration.curves.items()}
    path = path_for(calibration.model_id, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"model_id": calibration.model_id, "grid_step": GRID_STEP, "grid_end": GRID_END,
            "protocol": calibration.protocol, "curves": curves}
    try:  # the 8-bit copy's tolerance is written by hand beside the curves, and kept
        body["int8_tolerance"] = json.loads(path.read_text())["int8_tolerance"]
    except (OSError, ValueError, KeyError):
        pass
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(body, separators=(",", ":")) + "\n")
    partial.replace(path)
    return path
