"""Measure an embedder's calibration (see recognition/calibration.py) on a folder of people.

Every person with at least k photos is "enrolled" with their first k; every image of every other
person is a stranger's face against them; the distance kept is to the nearest of the k
templates, as the door's index measures it. On lfw-dev this gives about 11 million pairs for
k = 1 and over a million for k = 3.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

SAME_IMAGE = 0.1  # cosine distance: two names on one photo; no two people's different photos come this close
# LFW's people filed under two names (a transliteration, a married name): one person, never a
# stranger to themself. Found among the closest "stranger" pairs and confirmed by the names alone.
SAME_PERSON = {frozenset(("Hasan_Wirayuda", "Hassan_Wirajuda")), frozenset(("Chyung_Dai-chul", "Dai_Chul_Chyung")),
               frozenset(("Cristina_Fernandez", "Cristina_Kirchner"))}

from facegate_host.eval.identification import list_people
from facegate_host.eval.lfw import embed_images


def load_cache(cache: Optional[Path], names: Sequence[str]) -> Optional[Dict[str, np.ndarray]]:
    """Arrays per image name from an .npz cache, when it holds every one of `names`."""
    if cache is None or not cache.is_file():
        return None
    stored = np.load(cache, allow_pickle=False)
    found = dict(zip(stored["names"].tolist(), stored["vectors"]))
    return {n: found[n] for n in names} if set(found) >= set(names) else None


def save_cache(cache: Optional[Path], arrays: Dict[str, np.ndarray]) -> None:
    if cache is not None:
        np.savez(cache, names=np.asarray(list(arrays)), vectors=np.stack(list(arrays.values())))


def cached_embeddings(pipeline, folder: Path, names: Sequence[str], cache: Optional[Path],
                      progress=None) -> Dict[str, Optional[np.ndarray]]:
    """embed_images, kept in an .npz file so a second evaluation with the same models is quick."""
    found = load_cache(cache, names)
    if found is not None:
        return {n: (None if np.isnan(v).any() else v) for n, v in found.items()}
    vectors = embed_images(pipeline, folder, names, progress)
    size = next(v.size for v in vectors.values() if v is not None)
    save_cache(cache, {n: v if v is not None else np.full(size, np.nan, np.float32) for n, v in vectors.items()})
    return vectors


def impostor_pairs(vectors: Dict[str, Optional[np.ndarray]], people: Dict[str, List[str]],
                   ks: Sequence[int] = (1, 2, 3)) -> Dict[int, tuple]:
    """For each k: (distances, probe's person, enrolled person) from every other person's face to
    each person's nearest of k templates; people are numbered in `people`'s order."""
    valid = {name: [p for p in photos if vectors.get(p) is not None] for name, photos in people.items()}
    probe_names = [p for photos in valid.values() for p in photos]
    probe_owner = np.asarray([i for i, photos in enumerate(valid.values()) for _ in photos])
    probes = np.stack([vectors[p] for p in probe_names]).astype(np.float32)
    number = {name: i for i, name in enumerate(valid)}
    twice = [tuple(number[n] for n in pair) for pair in map(sorted, SAME_PERSON) if set(pair) <= set(number)]
    result = {}
    for k in ks:
        enrolled = [(i, photos[:k]) for i, photos in enumerate(valid.values()) if len(photos) >= k]
        distances, probe_people, enrolled_people = [], [], []
        for start in range(0, len(enrolled), 128):
            chunk = enrolled[start:start + 128]
            templates = np.stack([vectors[p] for _, photos in chunk for p in photos]).astype(np.float32)
            similarities = (probes @ templates.T).reshape(len(probes), len(chunk), k).max(axis=2)
            owners = np.asarray([i for i, _ in chunk])
            rows, columns = np.nonzero(probe_owner[:, None] != owners[None, :])  # strangers only
            distances.append(1.0 - similarities[rows, columns])
            probe_people.append(probe_owner[rows].astype(np.int32))
            enrolled_people.append(owners[columns].astype(np.int32))
        distances, probe_people, enrolled_people = map(np.concatenate, (distances, probe_people, enrolled_people))
        kept = distances >= SAME_IMAGE
        for first, second in twice:
            kept &= ~(((probe_people == first) & (enrolled_people == second))
                      | ((probe_people == second) & (enrolled_people == first)))
        result[k] = (distances[kept], probe_people[kept], enrolled_people[kept])
    return result


def impostor_distances(vectors: Dict[str, Optional[np.ndarray]], people: Dict[str, List[str]],
                       ks: Sequence[int] = (1, 2, 3)) -> Dict[int, np.ndarray]:
    return {k: pairs[0] for k, pairs in impostor_pairs(vectors, people, ks).items()}


def measure(model_id: str, pairs: Dict[int, tuple], people: int, protocol: str = "", resamples: int = 200,
            seed: int = 0):
    """The calibration with its 95% bound: the estimate's 95th percentile over `resamples` draws
    of the people with replacement (a pair counts once for every time both its people are drawn)."""
    from appliance.recognition import calibration

    points = calibration.grid()
    rng = np.random.default_rng(seed)
    draws = [np.bincount(rng.integers(0, people, people), minlength=people).astype(np.float64)
             for _ in range(resamples)]
    curves = {}
    for k, (distances, probe_people, enrolled_people) in sorted(pairs.items()):
        bins = np.searchsorted(points, distances, side="left")  # the first grid point at or above each distance
        counts = np.cumsum(np.bincount(bins, minlength=len(points) + 1)[:len(points)]).astype(np.float64)
        estimates = []
        for weights in draws:
            pair_weights = weights[probe_people] * weights[enrolled_people]
            drawn = np.cumsum(np.bincount(bins, pair_weights, minlength=len(points) + 1)[:len(points)])
            estimates.append(calibration.estimate(drawn, max(float(pair_weights.sum()), 1.0)))
        point = calibration.estimate(counts, distances.size)
        upper = np.maximum(np.percentile(np.stack(estimates), 95, axis=0), point)
        curves[k] = calibration.Curve(counts, int(distances.size), upper)
    return calibration.Calibration(model_id, curves, protocol)


def run(pipeline, folder: Path, cache: Optional[Path] = None, progress=None):
    """The pairs for `measure`, and how many people they number."""
    people = list_people(folder)
    names = [photo for photos in people.values() for photo in photos]
    return impostor_pairs(cached_embeddings(pipeline, folder, names, cache, progress), people), len(people)


def validate(vectors: Dict[str, Optional[np.ndarray]], people: Dict[str, List[str]], target: float, looks: int,
             sizes: Sequence[int] = (10, 100, 1000), ks: Sequence[int] = (1, 2, 3), splits: int = 10,
             seed: int = 0, resamples: int = 200) -> List[dict]:
    """Does the calibration's bound hold on people it was not measured on? Each split takes half
    the people at random, calibrates on them, and at the threshold the door would use for each
    gallery size and k compares the bound with the rate of stranger pairs that came that close
    among the other half's people."""
    rng = np.random.default_rng(seed)
    names = sorted(people)
    rows = {(size, k): {"people": size, "k": k, "thresholds": [], "estimates": [], "observed": 0, "pairs": 0,
                        "splits_held": 0, "extrapolated": 0} for size in sizes for k in ks}
    for _ in range(splits):
        order = rng.permutation(len(names))
        fit = {names[i]: people[names[i]] for i in order[: len(names) // 2]}
        held = {names[i]: people[names[i]] for i in order[len(names) // 2:]}
        fitted = measure("split", impostor_pairs(vectors, fit, ks), len(fit), resamples=resamples, seed=seed)
        measured_on = {k: np.sort(v) for k, v in impostor_distances(vectors, held, ks).items()}
        for (size, k), row in rows.items():
            threshold = fitted.threshold(target, [k] * size, looks)
            estimate = fitted.false_match(threshold, k)
            came = int(np.searchsorted(measured_on[k], threshold, side="right"))
            row["thresholds"].append(threshold)
            row["estimates"].append(estimate)
            row["observed"] += came
            row["pairs"] += int(measured_on[k].size)
            row["splits_held"] += came <= estimate * measured_on[k].size
            row["extrapolated"] += fitted.extrapolated(threshold, k)
    return [dict(row, splits=splits) for row in rows.values()]


def validation_summary(rows: List[dict]) -> List[str]:
    lines = ["people  k  threshold (range)   bound per pair  observed per pair (count of pairs)   held in  extrapolated"]
    for row in rows:
        lines.append("%6d  %d  %.3f-%.3f   %12.2e  %12.2e (%d of %d)   %d of %d  %d of %d" % (
            row["people"], row["k"], min(row["thresholds"]), max(row["thresholds"]), float(np.mean(row["estimates"])),
            row["observed"] / max(1, row["pairs"]), row["observed"], row["pairs"], row["splits_held"], row["splits"],
            row["extrapolated"], row["splits"]))
    return lines
