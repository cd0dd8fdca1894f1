"""What the door's own decision rule does, open-set, per probe photo and per attempt.

The threshold is the door's (recognition/decision.py: the false-accept target, the embedder's
calibration, the gallery's size), never one chosen on these probes. Galleries of several sizes
are drawn (a fixed seed) from the people with enough photos; everybody not drawn is a stranger.

An attempt is a short sequence made from one photo, as a camera would give it: the photo,
then copies shifted by a few pixels, scaled by a few percent and made lighter or darker, each
detected, aligned and embedded on its own. The verifier is replayed on it: fused embeddings of
the latest `fuse_frames`, a grant after `grant_frames` consecutive accepts of one person.
"""

import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from appliance.config import Config
from facegate_host.eval.calibrate import load_cache, save_cache
from facegate_host.eval.identification import best_matches
from appliance.recognition.decision import threshold_for
from appliance.vision.detector import central_face
from appliance.vision.pipeline import read_image


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


def sequence_embeddings(pipeline, folder: Path, names: Sequence[str], frames: int, cache: Optional[Path] = None,
                        progress=None) -> Dict[str, np.ndarray]:
    """(frames, dims) per image, a row of NaN where a frame had no face; kept in `cache` (.npz)."""
    found = load_cache(cache, names)
    if found is not None and next(iter(found.values())).shape[0] == frames:
        return found
    result = {}
    for count, name in enumerate(names):
        image = read_image(folder / name)
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        rows = []
        for frame in range(frames):
            picture = image if frame == 0 else jittered(image, seed + frame)
            face = central_face(pipeline.detect(picture), picture.shape)
            rows.append(pipeline.analyse_face(picture, face).embedding if face is not None else None)
        result[name] = rows
        if progress:
            progress(count + 1, len(names))
    size = next(r.size for rows in result.values() for r in rows if r is not None)
    result = {name: np.stack([r if r is not None else np.full(size, np.nan, np.float32) for r in rows])
              for name, rows in result.items()}
    save_cache(cache, result)
    return result


def _decisions(gallery: np.ndarray, owners: np.ndarray, probes: np.ndarray, threshold: float, min_margin: float):
    best, distance, margin = best_matches(gallery, owners, np.nan_to_num(probes))
    accepted = (distance <= threshold) & (margin >= min_margin) & ~np.isnan(probes).any(axis=1)
    return np.where(accepted, best, -1)


def attempts(gallery: np.ndarray, owners: np.ndarray, sequences: np.ndarray, threshold: float,
             config: Config) -> np.ndarray:
    """Per sequence: the person the replayed verifier grants, or -1 (denied)."""
    rules = config.verification
    count, frames, _ = sequences.shape
    granted = np.full(count, -1)
    run_person = np.full(count, -1)
    run_length = np.zeros(count, int)
    history: List[np.ndarray] = []
    for frame in range(frames):
        history.append(sequences[:, frame])
        window = np.stack(history[-rules.fuse_frames:])  # frames without a face are left out
        present = ~np.isnan(window).any(axis=2)
        summed = np.nansum(np.where(present[..., None], window, 0.0), axis=0)
        norms = np.linalg.norm(summed, axis=1, keepdims=True)
        fused = np.where(norms > 0, summed / np.maximum(norms, 1e-12), np.nan).astype(np.float32)
        person = _decisions(gallery, owners, fused, threshold, config.matching.min_margin)
        this_frame = ~np.isnan(sequences[:, frame]).any(axis=1)
        continuing = (person == run_person) & (person >= 0)
        run_length = np.where(this_frame, np.where(continuing, run_length + 1, (person >= 0).astype(int)), run_length)
        run_person = np.where(this_frame, person, run_person)
        newly = (granted < 0) & (run_length >= rules.grant_frames)
        granted = np.where(newly, run_person, granted)
    return granted


def run(config: Config, model_id: str, embeddings: Dict[str, Optional[np.ndarray]],
        sequences: Optional[Dict[str, np.ndarray]], people: Dict[str, List[str]],
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
            if sequences is not None:
                stacked = np.stack([sequences[n] for n in probe_names])
                row.update(_rates(attempts(gallery, owners, stacked, threshold, config), truth, "attempt"))
            rows.append(row)
    return rows


def _rates(person: np.ndarray, truth: np.ndarray, unit: str) -> dict:
    strangers, genuine = truth < 0, truth >= 0
    return {"strangers_accepted_per_%s" % unit: float(np.mean(person[strangers] >= 0)),
            "strangers_accepted_%ss" % unit: int(np.sum(person[strangers] >= 0)),
            "enrolled_rejected_per_%s" % unit: float(np.mean(person[genuine] != truth[genuine])),
            "enrolled_misidentified_%ss" % unit: int(np.sum((person[genuine] >= 0) & (person[genuine] != truth[genuine])))}


def summary(rows: List[dict]) -> List[str]:
    lines = ["door's rule (threshold from the false-accept target and the calibration):",
             "people  k  threshold  strangers accepted: per photo / per attempt   enrolled rejected: per photo / per attempt"]
    for row in rows:
        attempt_far = row.get("strangers_accepted_per_attempt")
        attempt_frr = row.get("enrolled_rejected_per_attempt")
        lines.append("%6d  %d  %9.3f  %9.2e (%d of %d) / %s   %6.2f%% / %s" % (
            row["people"], row["k"], row["threshold"], row["strangers_accepted_per_probe"],
            row["strangers_accepted_probes"], row["stranger_probes"],
            "-" if attempt_far is None else "%.2e (%d)" % (attempt_far, row["strangers_accepted_attempts"]),
            100 * row["enrolled_rejected_per_probe"],
            "-" if attempt_frr is None else "%.2f%%" % (100 * attempt_frr)))
    return lines
