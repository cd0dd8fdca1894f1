"""Open-set identification on a folder of people, the door's real question.

People with at least `min_photos` photos are enrolled with k of them and probed with the rest
(the same probes for every k: the photos after the first max(k)); everyone else is a stranger.
Reports rank-1 accuracy of the genuine probes and the false-reject rate at a false-accept rate
per stranger probe.
"""

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from facegate_host.eval.lfw import embed_images


def list_people(folder: Path) -> Dict[str, List[str]]:
    people = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted("%s/%s" % (person.name, f.name) for f in person.iterdir()
                        if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
        if photos:
            people[person.name] = photos
    return people


def best_matches(gallery: np.ndarray, owners: np.ndarray, probes: np.ndarray):
    """Per probe: best person index, its distance and the margin to the second-best person."""
    similarities = probes @ gallery.T  # (probes, templates)
    people = int(owners.max()) + 1
    per_person = np.full((probes.shape[0], people), -np.inf, dtype=np.float32)
    for person in range(people):
        per_person[:, person] = similarities[:, owners == person].max(axis=1)
    order = np.argsort(-per_person, axis=1)[:, :2]
    rows = np.arange(probes.shape[0])
    best = per_person[rows, order[:, 0]]
    second = per_person[rows, order[:, 1]] if people > 1 else np.full_like(best, -np.inf)
    return order[:, 0], 1.0 - best, best - second


def open_set_figures(best_person: np.ndarray, distance: np.ndarray, true_person: np.ndarray,
                     is_stranger: np.ndarray, far: float) -> dict:
    """Rank-1 accuracy, and the threshold giving `far` over stranger probes with its FRR.

    A probe without a face has distance inf: never accepted, so a missed genuine probe is a
    false reject and a missed stranger a correct refusal.
    """
    genuine = ~is_stranger
    correct = best_person[genuine] == true_person[genuine]
    stranger_distances = np.sort(distance[is_stranger])
    allowed = int(np.floor(far * stranger_distances.size))
    threshold = float(stranger_distances[allowed]) - 1e-6 if allowed < stranger_distances.size else 2.0
    accepted = distance[genuine] <= threshold
    return {
        "rank1_accuracy": float(np.mean(correct & np.isfinite(distance[genuine]))),
        "threshold_at_far": threshold,
        "false_accept_rate": float(np.mean(distance[is_stranger] <= threshold)),
        "false_reject_rate": float(1.0 - np.mean(accepted & correct)),
        "misidentified_accepts": int(np.sum(accepted & ~correct)),
    }


def run(pipeline, folder: Path, ks: Sequence[int] = (1, 2, 3), min_photos: int = 5,
        far: float = 1e-3, progress=None, embeddings: Optional[Dict[str, Optional[np.ndarray]]] = None) -> dict:
    started = time.perf_counter()
    people = list_people(folder)
    enrolled = {name: photos for name, photos in people.items() if len(photos) >= min_photos}
    strangers = [photo for name, photos in people.items() if name not in enrolled for photo in photos]
    names = [photo for photos in people.values() for photo in photos]
    if embeddings is None:
        embeddings = embed_images(pipeline, folder, names, progress)
    dims = next(e.size for e in embeddings.values() if e is not None)
    missing = np.full(dims, np.nan, np.float32)

    def vector(photo: str) -> np.ndarray:
        found = embeddings[photo]
        return missing if found is None else found

    first_probe = max(ks)
    probe_photos, true_person = [], []
    for index, photos in enumerate(enrolled.values()):
        probe_photos += photos[first_probe:]
        true_person += [index] * len(photos[first_probe:])
    probe_photos += strangers
    true_person += [-1] * len(strangers)
    true_person = np.asarray(true_person)
    probes = np.stack([vector(p) for p in probe_photos])
    no_face = np.isnan(probes).any(axis=1)
    probes = np.nan_to_num(probes)
    result = {"people_enrolled": len(enrolled), "genuine_probes": int((true_person >= 0).sum()),
              "stranger_probes": len(strangers), "images": len(names),
              "images_without_face": sum(e is None for e in embeddings.values()),
              "target_far_per_probe": far, "by_k": {}}
    for k in ks:
        rows, owners = [], []
        for index, photos in enumerate(enrolled.values()):
            for photo in photos[:k]:
                if embeddings[photo] is not None:
                    rows.append(embeddings[photo])
                    owners.append(index)
        best, distance, margin = best_matches(np.stack(rows), np.asarray(owners), probes)
        distance = np.where(no_face, np.inf, distance)
        figures = open_set_figures(best, distance, true_person, true_person < 0, far)
        figures["templates"] = len(rows)
        result["by_k"][str(k)] = figures
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def summary(result: dict) -> List[str]:
    lines = ["%d people enrolled, %d genuine probes, %d stranger probes, %d/%d images without a face"
             % (result["people_enrolled"], result["genuine_probes"], result["stranger_probes"],
                result["images_without_face"], result["images"])]
    for k, f in result["by_k"].items():
        lines.append("k=%s: rank-1 %.2f%%, FRR %.2f%% at FAR %.4f per probe (threshold %.3f, "
                     "%d misidentified accepts)"
                     % (k, 100 * f["rank1_accuracy"], 100 * f["false_reject_rate"],
                        f["false_accept_rate"], f["threshold_at_far"], f["misidentified_accepts"]))
    return lines
