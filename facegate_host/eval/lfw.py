"""LFW View-2 pairs protocol: k-fold accuracy with thresholds chosen on the other folds.

A pair whose image has no detected face counts as an error whatever its label, and the misses
are reported, so a detector cannot look better by failing on hard images.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from appliance.errors import FaceGateError
from appliance.vision.detector import central_face
from appliance.vision.pipeline import FacePipeline, read_image


@dataclass
class Pair:
    first: str  # image path relative to the image folder
    second: str
    same: bool
    fold: int


def image_name(person: str, number: int) -> str:
    return "%s/%s_%04d.jpg" % (person, person, number)


def parse_pairs(path: Path) -> Tuple[int, List[Pair]]:
    """Read a View-2 pairs file: header 'folds per-fold', then per fold N same and N different."""
    try:
        lines = Path(path).read_text().splitlines()
        folds, per_fold = (int(v) for v in lines[0].split()[:2])
    except (OSError, ValueError, IndexError) as err:
        raise FaceGateError("%s is not an LFW pairs file (header 'folds pairs-per-half'): %s"
                            % (path, err)) from err
    pairs = []
    for index, line in enumerate(lines[1:]):
        parts = line.split()
        fold = index // (2 * per_fold)
        if len(parts) == 3:
            pairs.append(Pair(image_name(parts[0], int(parts[1])), image_name(parts[0], int(parts[2])),
                              True, fold))
        elif len(parts) == 4:
            pairs.append(Pair(image_name(parts[0], int(parts[1])), image_name(parts[2], int(parts[3])),
                              False, fold))
        elif parts:
            raise FaceGateError("%s line %d: expected 3 or 4 fields, got %r" % (path, index + 2, line))
    if len(pairs) != folds * per_fold * 2:
        raise FaceGateError("%s: header promises %d pairs, file has %d"
                            % (path, folds * per_fold * 2, len(pairs)))
    return folds, pairs


def embed_images(pipeline: FacePipeline, folder: Path, names: Sequence[str],
                 progress=None) -> Dict[str, Optional[np.ndarray]]:
    """Embedding of each image's central face, or None where no face was found."""
    embeddings = {}
    for count, name in enumerate(names):
        image = read_image(folder / name)
        face = central_face(pipeline.detect(image), image.shape)
        embeddings[name] = None if face is None else pipeline.analyse_face(image, face).embedding
        if progress:
            progress(count + 1, len(names))
    return embeddings


def _best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy (distance <= t means same); NaN distances always count wrong."""
    valid = ~np.isnan(distances)
    d, s = distances[valid], same[valid]
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    # Accepting the first i+1 sorted pairs: correct = same among them + different among the rest.
    same_accepted = np.cumsum(s)
    different_rejected = (~s).sum() - np.cumsum(~s)
    correct = same_accepted + different_rejected
    best = int(np.argmax(correct))
    upper = d[best + 1] if best + 1 < d.size else d[best] + 1e-3
    return float((d[best] + upper) / 2)


def _accuracy(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    predicted_same = np.where(np.isnan(distances), ~same, distances <= threshold)
    return float(np.mean(predicted_same == same))


def tar_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> Tuple[float, float]:
    """(true-accept rate, threshold) at a false-accept rate over the different pairs."""
    impostor = np.sort(np.nan_to_num(distances[~same], nan=np.inf))
    genuine = np.nan_to_num(distances[same], nan=np.inf)
    allowed = int(np.floor(far * impostor.size))
    threshold = impostor[allowed] - 1e-9 if allowed < impostor.size else np.inf
    return float(np.mean(genuine <= threshold)), float(threshold)


def evaluate(pairs: Sequence[Pair], embeddings: Dict[str, Optional[np.ndarray]],
             folds: int) -> dict:
    distances = np.array([
        np.nan if embeddings[p.first] is None or embeddings[p.second] is None
        else 1.0 - float(np.dot(embeddings[p.first], embeddings[p.second]))
        for p in pairs])
    same = np.array([p.same for p in pairs])
    fold_of = np.array([p.fold for p in pairs])
    accuracies, thresholds = [], []
    for fold in range(folds):
        test = fold_of == fold
        threshold = _best_threshold(distances[~test], same[~test]) if folds > 1 else \
            _best_threshold(distances, same)
        thresholds.append(threshold)
        accuracies.append(_accuracy(distances[test], same[test], threshold))
    result = {
        "pairs": len(pairs),
        "folds": folds,
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "thresholds": thresholds,
        "pairs_with_missed_face": int(np.isnan(distances).sum()),
        "images": len(embeddings),
        "images_without_face": sorted(n for n, e in embeddings.items() if e is None),
    }
    for far in (1e-2, 1e-3):
        tar, threshold = tar_at_far(distances, same, far)
        result["tar_at_far_%g" % far] = tar
        result["threshold_at_far_%g" % far] = threshold
    return result


def run(pipeline: FacePipeline, pairs_file: Path, images: Path, progress=None) -> dict:
    folds, pairs = parse_pairs(pairs_file)
    names = sorted({p.first for p in pairs} | {p.second for p in pairs})
    started = time.perf_counter()
    embeddings = embed_images(pipeline, images, names, progress)
    result = evaluate(pairs, embeddings, folds)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def summary(result: dict) -> str:
    return ("LFW %d pairs, %d folds: accuracy %.2f%% +- %.2f, TAR %.2f%% @ FAR 1e-2, "
            "%.2f%% @ FAR 1e-3, %d/%d images without a face (%d pairs counted as errors)"
            % (result["pairs"], result["folds"], 100 * result["accuracy"],
               100 * result["accuracy_std"], 100 * result["tar_at_far_0.01"],
               100 * result["tar_at_far_0.001"], len(result["images_without_face"]),
               result["images"], result["pairs_with_missed_face"]))


def write_json(result: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
