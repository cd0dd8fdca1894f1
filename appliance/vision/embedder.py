"""Face embedder: an aligned 112x112 BGR crop -> unit vector."""

from typing import Sequence

import numpy as np

from appliance.inference.base import Runner


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def model_input(aligned_bgr: np.ndarray, spec) -> np.ndarray:
    """The part of the 112x112 ArcFace-aligned crop the model takes.

    Models trained on 112x96 crops (the SphereFace template) take its middle 96 columns: that
    template is the ArcFace one moved 8 pixels left, so no second alignment is needed.
    """
    columns = spec.extra.get("aligned_columns")
    if not columns:
        return aligned_bgr
    return np.ascontiguousarray(aligned_bgr[:, columns[0]:columns[1]])


class Embedder:
    def __init__(self, runner: Runner, flip: bool = False) -> None:
        self.runner = runner
        self.flip = flip
        self.model_id = runner.spec.model_id

    def embed(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """Unit vector for one aligned crop; with flip, the mean of it and its mirror image."""
        return self.embed_many([aligned_bgr])[0]

    def embed_many(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Unit vectors for several aligned crops (every face of a frame) in one model run:
        with flip, the crops and their mirror images together, one batch of 2N."""
        crops = np.stack([model_input(crop, self.runner.spec) for crop in aligned_bgr])
        count = len(crops)
        batch = np.concatenate([crops, crops[:, :, ::-1]]) if self.flip else crops
        if len(batch) == 1:
            vectors = self.runner.run(batch)[0]
        else:
            vectors = self.runner.run_batch(np.ascontiguousarray(batch))[0]
        vectors = normalise(vectors.reshape(len(batch), -1).astype(np.float32))
        if self.flip:
            vectors = vectors[:count] + vectors[count:]
        return normalise(vectors)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of two unit vectors: 0 same direction, 1 unrelated, 2 opposite."""
    return float(1.0 - np.dot(a, b))
