"""An embedder's calibration: how close faces of people who are *not* enrolled come to one who is.

Measured once per embedder on a large set of faces (`facegate eval-calibrate` on lfw-dev:
every image of every other person against a person enrolled with k = 1, 2, 3 photos, the
distance to their nearest template), and shipped beside the manifest as
`models/calibration/<model_id>.json`. The door reads it; it never measures anything itself.

`false_match(distance, k)` is the chance that one stranger's face is within `distance` of one
person enrolled with k templates. Where the measured tail runs out (fewer than `TAIL_COUNT`
pairs closer), it is extended log-linearly from the last two decades measured: faces of
strangers thin out faster than that in practice, so the extension errs towards lower
thresholds, the safe side.
"""

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from appliance.errors import ModelError

FOLDER = Path(__file__).resolve().parent.parent / "models" / "calibration"
GRID_STEP = 0.0025
GRID_END = 1.5
TAIL_COUNT = 20  # fewer pairs than this below a distance: the curve is extrapolated there


def grid() -> np.ndarray:
    return np.round(np.arange(0.0, GRID_END + GRID_STEP / 2, GRID_STEP), 6)


class Curve:
    """Cumulative counts of impostor distances on `grid()`, out of `total` pairs."""

    def __init__(self, counts: np.ndarray, total: int) -> None:
        self.counts = counts
        self.total = total
        self._points = grid()
        # the tail, fitted once: log10(fraction) against distance where 20 to 2,000 pairs lie below
        usable = (counts >= TAIL_COUNT) & (counts <= TAIL_COUNT * 100)
        if usable.sum() < 2:
            usable = counts >= TAIL_COUNT
        xs, ys = self._points[usable], np.log10(np.maximum(counts[usable], 1) / total)
        self._tail = None
        if xs.size >= 2:
            slope = max(float(np.polyfit(xs, ys, 1)[0]), 1.0)  # at least a decade per unit of distance
            self._tail = (float(xs[0]), float(ys[0]), slope)

    def probability(self, distance: float) -> float:
        distance = float(np.clip(distance, 0.0, GRID_END))
        measured = float(np.interp(distance, self._points, self.counts))
        if measured >= TAIL_COUNT:
            return measured / self.total
        if self._tail is None:
            return TAIL_COUNT / self.total  # nothing to fit: the measured floor
        start, log_at_start, slope = self._tail
        return float(10 ** (log_at_start - slope * (start - distance)))


@dataclass(frozen=True)
class Calibration:
    model_id: str
    curves: Dict[int, Curve]  # templates per person -> curve
    protocol: str

    def false_match(self, distance: float, templates: int) -> float:
        """Chance that one stranger's face comes within `distance` of a person with `templates` templates."""
        measured = max(k for k in self.curves if k <= max(1, templates)) if templates >= 1 else 1
        probability = self.curves[measured].probability(distance)
        if templates > measured:  # more templates than measured: each extra one is another chance
            probability *= templates / measured
        return min(1.0, probability)

    def false_accept(self, distance: float, template_counts: Sequence[int], looks: int) -> float:
        """Chance a stranger's attempt is accepted as anybody, at `distance`: every person is a chance,
        and an attempt has `looks` independent looks (a union bound: it errs high)."""
        people_with = Counter(template_counts)  # one curve lookup per distinct template count
        per_look = sum(people * self.false_match(distance, k) for k, people in people_with.items())
        return min(1.0, per_look * looks)

    def threshold(self, target: float, template_counts: Sequence[int], looks: int) -> float:
        """The largest distance whose false accepts per attempt stay within `target`."""
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
        curves = {int(k): Curve(np.asarray(v["counts"], np.float64), int(v["total"]))
                  for k, v in data["curves"].items()}
        if data["grid_step"] != GRID_STEP or len(next(iter(curves.values())).counts) != len(grid()):
            raise ValueError("grid differs from this FaceGate's")
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as err:
        raise ModelError("calibration %s is damaged (%s); reinstall FaceGate" % (path, err)) from err
    return Calibration(data["model_id"], curves, data.get("protocol", ""))


def save(model_id: str, distances: Dict[int, np.ndarray], protocol: str, folder: Path = FOLDER) -> Path:
    """Write a calibration from raw impostor distances per templates count."""
    points = grid()
    curves = {}
    for k, values in sorted(distances.items()):
        ordered = np.sort(np.asarray(values, np.float64))
        counts = np.searchsorted(ordered, points, side="right")
        curves[str(k)] = {"total": int(ordered.size), "counts": [int(c) for c in counts]}
    path = path_for(model_id, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"model_id": model_id, "grid_step": GRID_STEP, "grid_end": GRID_END, "protocol": protocol,
            "curves": curves}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(body, separators=(",", ":")) + "\n")
    partial.replace(path)
    return path
