"""Measure an embedder's calibration (see recognition/calibration.py) on a folder of people.

Every person with at least k photos is "enrolled" with their first k; every image of every other
person is a stranger's face against them; the distance kept is to the nearest of the k
templates, as the door's index measures it. On lfw-dev this gives about 11 million pairs for
k = 1 and over a million for k = 3.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

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


def impostor_distances(vectors: Dict[str, Optional[np.ndarray]], people: Dict[str, List[str]],
                       ks: Sequence[int] = (1, 2, 3)) -> Dict[int, np.ndarray]:
    """For each k: the distance from every other person's face to each person's nearest of k templates."""
    valid = {name: [p for p in photos if vectors.get(p) is not None] for name, photos in people.items()}
    probe_names = [p for photos in valid.values() for p in photos]
    probe_owner = np.asarray([i for i, photos in enumerate(valid.values()) for _ in photos])
    probes = np.stack([vectors[p] for p in probe_names]).astype(np.float32)
    result = {}
    for k in ks:
        enrolled = [(i, photos[:k]) for i, photos in enumerate(valid.values()) if len(photos) >= k]
        collected = []
        for start in range(0, len(enrolled), 128):
            chunk = enrolled[start:start + 128]
            templates = np.stack([vectors[p] for _, photos in chunk for p in photos]).astype(np.float32)
            similarities = (probes @ templates.T).reshape(len(probes), len(chunk), k).max(axis=2)
            owners = np.asarray([i for i, _ in chunk])
            strangers = probe_owner[:, None] != owners[None, :]
            collected.append(1.0 - similarities[strangers])
        result[k] = np.concatenate(collected)
    return result


def run(pipeline, folder: Path, cache: Optional[Path] = None, progress=None) -> Dict[int, np.ndarray]:
    people = list_people(folder)
    names = [photo for photos in people.values() for photo in photos]
    return impostor_distances(cached_embeddings(pipeline, folder, names, cache, progress), people)
