"""Calibration and check sets of real faces, kept apart so a model is never checked on its calibration.

Taken from LFW-dev: the images no pair uses calibrate; the images the pairs use check. Full
letterboxed frames calibrate the detector (what it sees at the door), aligned 112x112 crops the
embedder. A folder of other photos (a site's own gallery photos) may replace LFW for calibration.
"""

from pathlib import Path
from typing import List, Sequence

import numpy as np

from appliance.errors import ModelError
from facegate_host.eval.lfw import parse_pairs
from appliance.vision.geometry import letterbox
from appliance.vision.detector import central_face
from appliance.vision.pipeline import FacePipeline, read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def pair_images(pairs_file: Path) -> List[str]:
    _, pairs = parse_pairs(pairs_file)
    return sorted({p.first for p in pairs} | {p.second for p in pairs})


def calibration_images(folder: Path, count: int, exclude: Sequence[str] = (), seed: int = 0) -> List[Path]:
    """`count` photos under `folder` (not in `exclude`), spread over people by a fixed shuffle."""
    excluded = set(exclude)
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and str(p.relative_to(folder)) not in excluded)
    if len(paths) < count:
        raise ModelError("calibration needs %d photos, %s has %d; give --calibration-images a folder "
                         "with more faces" % (count, folder, len(paths)))
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    return [paths[i] for i in sorted(order)]


def detector_frames(paths: Sequence[Path], size: int, fill) -> List[np.ndarray]:
    """Letterboxed uint8 BGR frames of the detector's input size, as the detector makes them."""
    return [letterbox(read_image(path), (size, size), fill)[0] for path in paths]


def aligned_crops(pipeline: FacePipeline, paths: Sequence[Path]) -> List[np.ndarray]:
    """The central face of each photo, aligned as for embedding; photos without a face are skipped."""
    crops = []
    for path in paths:
        image = read_image(path)
        face = central_face(pipeline.detect(image), image.shape)
        if face is not None:
            crops.append(pipeline.analyse_face(image, face, embed=False).aligned)
    return crops


def write_npy_set(images: Sequence[np.ndarray], folder: Path) -> None:
    """One NCHW uint8 BGR .npy per input: the toolkit reads its dataset that way for NCHW models."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npy"):
        old.unlink()
    for number, image in enumerate(images):
        np.save(folder / ("%04d.npy" % number), np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
