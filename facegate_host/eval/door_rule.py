"""What the door's own decision rule does, open-set, per probe photo (visits.py replays the
door's verifier per visit).

The threshold is the door's (recognition/decision.py: the false-accept target, the embedder's
calibration, the gallery's size), never one chosen on these probes. Galleries of several sizes
are drawn (a fixed seed) from the people with enough photos; everybody not drawn is a stranger.
"""

from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from appliance.config import Config
from facegate_host.eval.identification import best_matches
from appliance.recognition.decision import threshold_for


def jittered(image: np.ndarray, seed: int) -> np.ndarray:
    """A camera's next frame of the same scene: small shift, scale and exposure changes."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    scale = rng.uniform(0.94, 1.06)
    shift = rng.uniform(-5, 5, 2)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-3, 3), scale)
    matrix[:, 2] += shift
    moved = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return cv2.convertScaleAbs(moved, alpha=rng.uniform(0.8, 1.2), beta=rng.uniform(-12, 12))


def _decisions(gallery: np.ndarray, owners: np.ndarray, probes: np.ndarray, threshold: float, min_margin: float):
    best, distance, margin = best_matches(gallery, owners, np.nan_to_num(probes))
    accepted = (distance <= threshold) & (margin >= min_margin) & ~np.isnan(probes).any(axis=1)
    return np.where(accepted, best, -1)


def run(config: Config, model_id: str, embeddings: Dict[str, Optional[np.ndarray]], people: Dict[str, List[str]],
        sizes: Sequence[Optional[int]] = (10, 100, None), ks: Sequence[int] = (1, 2, 3),
        min_photos: int = 5, seed: int = 0) -> List[dict]:
    eligible = [name for name, photos in people.items() if len(photos) >= min_photos]
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        chosen = sorted(rng.choice(eligible, size, replace=False)) if size and size < len(eligible) else eligible
        index_of = {name: i for i, name in enumerate(chosen)}
        first_probe = max(ks)
        probe_names, truth = [], []
        for name, photos in people.items():
            if name in index_of:
                probe_names += photos[first_probe:]
                truth += [index_of[name]] * len(photos[first_probe:])
            else:
                probe_names += photos
                truth += [-1] * len(photos)
        truth = np.asarray(truth)
        dims = next(v.size for v in embeddings.values() if v is not None)
        single = np.stack([embeddings[n] if embeddings[n] is not None else np.full(dims, np.nan, np.float32)
                           for n in probe_names])
        for k in ks:
            templates, owners = [], []
            for name in chosen:
                for photo in people[name][:k]:
                    if embeddings[photo] is not None:
                        templates.append(embeddings[photo])
                        owners.append(index_of[name])
            gallery, owners = np.stack(templates), np.asarray(owners)
            counts = np.bincount(owners, minlength=len(chosen)).tolist()
            threshold = threshold_for(config, model_id, counts).value
            row = {"people": len(chosen), "k": k, "templates": len(templates), "threshold": threshold,
                   "stranger_probes": int((truth < 0).sum()), "genuine_probes": int((truth >= 0).sum())}
            person = _decisions(gallery, owners, single, threshold, config.matching.min_margin)
            row.update(_rates(person, truth, "probe"))
            rows.append(row)
    return rows


def _rates(person: np.ndarray, truth: np.ndarray, unit: str) -> dict:
    strangers, genuine = truth < 0, truth >= 0
    return {"strangers_accepted_per_%s" % unit: float(np.mean(person[strangers] >= 0)),
            "strangers_accepted_%ss" % unit: int(np.sum(person[strangers] >= 0)),
            "enrolled_rejected_per_%s" % unit: float(np.mean(person[genuine] != truth[genuine])),
            "enrolled_misidentified_%ss" % unit: int(np.sum((person[genuine] >= 0) & (person[genuine] != truth[genuine])))}


def summary(rows: List[dict]) -> List[str]:
    lines = ["door's rule per photo (threshold from the false-accept target and the calibration):",
             "people  k  threshold  strangers accepted per photo   enrolled rejected per photo"]
    for row in rows:
        lines.append("%6d  %d  %9.3f  %9.2e (%d of %d)   %6.2f%%" % (
            row["people"], row["k"], row["threshold"], row["strangers_accepted_per_probe"],
            row["strangers_accepted_probes"], row["stranger_probes"], 100 * row["enrolled_rejected_per_probe"]))
    return lines
