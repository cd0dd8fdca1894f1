"""Threshold evidence in pure numpy (it runs on the board): distances, error rates, a recommendation.

A false accept at the door happens when a stranger comes closer than the threshold to *any*
of the N enrolled people at any of the looks a visit allows, so a target per visit becomes a
stricter target per comparison: 1 - (1 - target) ** (1 / chances), chances = N x looks. A recommendation needs enough impostor comparisons to see that
rate (the rule of three: at least 3 / rate of them); with fewer, the tools say what is missing.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class Evidence:
    genuine: np.ndarray  # cosine distances between embeddings of the same person
    impostor: np.ndarray  # ... of different people


def pair_distances(embeddings: np.ndarray, labels: Sequence, max_impostor: int = 5_000_000,
                   seed: int = 0) -> Evidence:
    """All same-label and different-label distances among unit embeddings (impostors sampled
    down to `max_impostor`)."""
    vectors = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels)
    similarity = vectors @ vectors.T
    upper = np.triu_indices(len(vectors), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    distances = 1.0 - similarity[upper]
    impostor = distances[~same]
    if impostor.size > max_impostor:
        impostor = np.random.default_rng(seed).choice(impostor, max_impostor, replace=False)
    return Evidence(distances[same].astype(np.float64), impostor.astype(np.float64))


def probe_distances(probes: np.ndarray, probe_labels: Sequence, gallery: np.ndarray,
                    gallery_labels: Sequence) -> Evidence:
    """Distances from labelled attempts to gallery templates: to their own person's templates
    (genuine) and to everyone else's (impostor; a stranger's attempt is impostor to all)."""
    distances = 1.0 - np.asarray(probes, np.float32) @ np.asarray(gallery, np.float32).T
    same = np.asarray(probe_labels)[:, None] == np.asarray(gallery_labels)[None, :]
    return Evidence(distances[same].astype(np.float64), distances[~same].astype(np.float64))


@dataclass(frozen=True)
class Contradiction:
    index: int  # which probe
    nearest: object  # the gallery label nearest to it
    distance: float


def nearest_people(probes: np.ndarray, gallery: np.ndarray, gallery_labels: Sequence) -> List[Tuple[object, float]]:
    """(nearest person's label, distance) for each probe."""
    distances = 1.0 - np.asarray(probes, np.float32) @ np.asarray(gallery, np.float32).T
    best = np.argmin(distances, axis=1)
    labels = list(gallery_labels)
    return [(labels[j], float(distances[i, j])) for i, j in enumerate(best)]


def contradictions(probes: np.ndarray, probe_labels: Sequence, gallery: np.ndarray, gallery_labels: Sequence,
                   threshold: float) -> List[Contradiction]:
    """Labelled attempts whose face says otherwise: labelled one person but accepted as another,
    or labelled a stranger but accepted as someone. Wrong labels make wrong recommendations."""
    found = []
    for index, ((nearest, distance), label) in enumerate(zip(nearest_people(probes, gallery, gallery_labels),
                                                             probe_labels)):
        if distance <= threshold and nearest != label:
            found.append(Contradiction(index, nearest, distance))
    return found


def rates(evidence: Evidence, thresholds: Sequence[float]) -> List[Tuple[float, float, float]]:
    """(threshold, false-accept rate per comparison, false-reject rate) for each threshold."""
    genuine, impostor = np.sort(evidence.genuine), np.sort(evidence.impostor)
    rows = []
    for threshold in thresholds:
        far = np.searchsorted(impostor, threshold, side="right") / max(1, impostor.size)
        frr = 1.0 - np.searchsorted(genuine, threshold, side="right") / max(1, genuine.size)
        rows.append((float(threshold), float(far), float(frr)))
    return rows


def per_comparison_rate(target_per_visit: float, chances: int) -> float:
    return 1.0 - (1.0 - target_per_visit) ** (1.0 / max(1, chances))


@dataclass
class Recommendation:
    threshold: Optional[float]
    per_comparison_far: float
    expected_frr: Optional[float]
    missing: List[str]  # what evidence is lacking, when threshold is None


def recommend(evidence: Evidence, target_far: float, chances: int = 1) -> Recommendation:
    """`chances`: comparisons one stranger's visit makes (people x looks per visit)."""
    rate = per_comparison_rate(target_far, chances)
    missing = []
    if evidence.impostor.size < 3.0 / rate:
        missing.append("%d impostor comparisons; a false-accept rate of %.1e per comparison needs at "
                       "least %d (enrol more people, or label attempts by strangers)"
                       % (evidence.impostor.size, rate, int(np.ceil(3.0 / rate))))
    if evidence.genuine.size < 10:
        missing.append("%d genuine comparisons; at least 10 are needed (enrol people with several "
                       "photos, or capture and label attempts by enrolled people)" % evidence.genuine.size)
    if missing:
        return Recommendation(None, rate, None, missing)
    impostor = np.sort(evidence.impostor)
    # the largest threshold that lets at most `rate` of impostors through
    allowed = int(np.floor(rate * impostor.size))
    threshold = float(impostor[allowed] - 1e-6) if allowed < impostor.size else float(impostor[-1])
    frr = float(np.mean(evidence.genuine > threshold))
    return Recommendation(threshold, rate, frr, [])


def text_histogram(evidence: Evidence, bins: int = 20, width: int = 50,
                   threshold: Optional[float] = None) -> str:
    """Both distributions side by side in the terminal: G genuine, I impostor (each normalised)."""
    edges = np.linspace(0.0, max(1.2, float(np.max(evidence.impostor, initial=1.0))), bins + 1)
    genuine, _ = np.histogram(evidence.genuine, edges)
    impostor, _ = np.histogram(evidence.impostor, edges)
    genuine = genuine / max(1, genuine.max())
    impostor = impostor / max(1, impostor.max())
    lines = ["distance   G = genuine, I = impostor (each scaled to its peak)"]
    for index in range(bins):
        marker = " <- threshold" if threshold is not None and edges[index] <= threshold < edges[index + 1] else ""
        lines.append("%5.2f-%4.2f %-*s|%-*s%s" % (edges[index], edges[index + 1], width // 2,
                                                 "G" * int(round(genuine[index] * width / 2)), width // 2,
                                                 "I" * int(round(impostor[index] * width / 2)), marker))
    return "\n".join(lines)


def plot(evidence: Evidence, path: str, threshold: Optional[float] = None) -> None:
    """Both distributions and the DET curve (FRR against FAR, log scale) as a PNG, with OpenCV."""
    import cv2

    canvas = np.full((420, 940, 3), 255, np.uint8)  # room right of the DET box for its last tick label
    edges = np.linspace(0.0, 1.4, 71)
    genuine, _ = np.histogram(evidence.genuine, edges, density=True)
    impostor, _ = np.histogram(evidence.impostor, edges, density=True)
    peak = max(genuine.max(initial=0), impostor.max(initial=0), 1e-9)
    left, top, width, height = 50, 40, 380, 320

    def to_x(value):
        return int(left + value / 1.4 * width)

    for values, colour in ((genuine, (40, 160, 40)), (impostor, (40, 40, 200))):
        points = np.array([[to_x((edges[i] + edges[i + 1]) / 2), int(top + height - values[i] / peak * height)]
                           for i in range(len(values))], np.int32)
        cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
    cv2.rectangle(canvas, (left, top), (left + width, top + height), (0, 0, 0), 1)
    small = dict(fontFace=cv2.FONT_HERSHEY_SIMPLEX, fontScale=0.4, color=(0, 0, 0), thickness=1,
                 lineType=cv2.LINE_AA)
    for value in np.arange(0.0, 1.41, 0.2):  # distance ticks under the histogram
        x = to_x(value)
        cv2.line(canvas, (x, top + height), (x, top + height + 5), (0, 0, 0), 1)
        cv2.putText(canvas, "%.1f" % value, (x - 10, top + height + 18), **small)
    cv2.putText(canvas, "cosine distance", (left + width // 2 - 45, top + height + 34), **small)
    for share in (0.0, 0.5, 1.0):  # each curve is scaled to the highest peak: the y axis is relative
        y = int(top + height - share * height)
        cv2.line(canvas, (left - 5, y), (left, y), (0, 0, 0), 1)
        cv2.putText(canvas, "%.1f" % share, (left - 30, y + 4), **small)
    cv2.putText(canvas, "share of peak", (4, top - 6), **small)
    if threshold is not None:
        cv2.line(canvas, (to_x(threshold), top), (to_x(threshold), top + height), (0, 140, 255), 1)
        cv2.putText(canvas, "threshold %.3f" % threshold, (to_x(threshold) + 4, top + 14), **small)
    cv2.putText(canvas, "distance: genuine (green), impostor (red)", (left, 18), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (0, 0, 0), 1, cv2.LINE_AA)
    # DET: x = log10 FAR from -6 to 0, y = FRR from 0 to 1
    left2 = 500

    def det_x(far):
        return int(left2 + (np.log10(max(far, 1e-6)) + 6) / 6 * width)

    rows = rates(evidence, np.linspace(0, 1.4, 400))
    points = [(det_x(far), int(top + height - frr * height)) for _, far, frr in rows]
    cv2.polylines(canvas, [np.array(points, np.int32)], False, (160, 40, 160), 2, cv2.LINE_AA)
    cv2.rectangle(canvas, (left2, top), (left2 + width, top + height), (0, 0, 0), 1)
    for exponent in range(-6, 1):  # false accepts per comparison, one tick a decade
        x = det_x(10.0 ** exponent)
        cv2.line(canvas, (x, top + height), (x, top + height + 5), (0, 0, 0), 1)
        cv2.putText(canvas, "1e%d" % exponent, (x - 12, top + height + 18), **small)
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):  # false rejects
        y = int(top + height - share * height)
        cv2.line(canvas, (left2 - 5, y), (left2, y), (0, 0, 0), 1)
        cv2.putText(canvas, "%d%%" % round(share * 100), (left2 - 40, y + 4), **small)
    if threshold is not None:  # where the threshold sits on the curve
        _, far, frr = rates(evidence, [threshold])[0]
        cv2.circle(canvas, (det_x(far), int(top + height - frr * height)), 5, (0, 140, 255), -1, cv2.LINE_AA)
    cv2.putText(canvas, "false accepts per comparison", (left2 + width // 2 - 80, top + height + 34), **small)
    cv2.putText(canvas, "DET: false rejects against false accepts", (left2, 18),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(path, canvas):
        raise OSError("cannot write %s" % path)
