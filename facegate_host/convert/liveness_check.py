"""The liveness pair on the NPU: converted with face crops of LFW (live photos of other people),
checked on nuaa-dev's live and printed-photo frames against the ONNX originals.

What matters is the door's decision, not the logits: the fused live probability of each frame,
how far the RKNN copy moves it, how many frames change side of `liveness.threshold`, and the
APCER and BPCER per attempt (`liveness.frames` consecutive frames averaged, as the door does)
with each copy. Nothing here chooses the threshold: the shipped one is used.
"""

import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence

import cv2
import numpy as np

from appliance.config import Config
from appliance.inference import load_runner
from appliance.vision.liveness import LivenessChecker, context_crop
from appliance.vision.pipeline import FacePipeline, read_image
from facegate_host.convert.rknn import convert
from facegate_host.eval.liveness import capture_order

EVERY = 4  # every 4th nuaa-dev frame: about 480 frames of 8 people, both classes


def float_pipeline(config: Config) -> FacePipeline:
    models = replace(config.models, backend="onnxruntime", embedder_int8=False, liveness_backend="onnxruntime")
    return FacePipeline.from_config(replace(config, models=models, liveness=replace(config.liveness, enabled=True)))


def _largest_face(pipeline: FacePipeline, image: np.ndarray):
    faces = pipeline.detect(image)
    return max(faces, key=lambda f: f.width) if faces else None


def calibration_crops(pipeline: FacePipeline, paths: Sequence[Path], scale: float, size) -> List[np.ndarray]:
    crops = []
    for path in paths:
        image = read_image(path)
        face = _largest_face(pipeline, image)
        if face is not None:
            crops.append(cv2.resize(context_crop(image, face.box, scale), (size[1], size[0])))
    return crops


def check_frames(pipeline: FacePipeline, nuaa: Path) -> List[tuple]:
    """(class, subject, frame, face box) for every EVERY-th frame of each subject that has a face."""
    found = []
    for kind in ("live", "attack"):
        for subject in sorted(p for p in (nuaa / kind).iterdir() if p.is_dir()):
            for path in sorted(subject.glob("*.jpg"), key=capture_order)[::EVERY]:
                image = read_image(path)
                face = _largest_face(pipeline, image)
                if face is not None:
                    found.append((kind, subject.name, image, face.box))
    return found


def per_attempt(scores: np.ndarray, frames: List[tuple], length: int, threshold: float) -> Dict[str, float]:
    """APCER and BPCER over attempts of `length` consecutive checked frames of one subject and class."""
    accepted, refused, attacks, lives = 0, 0, 0, 0
    start = 0
    while start < len(frames):
        end = start
        while end < len(frames) and frames[end][:2] == frames[start][:2]:
            end += 1
        for first in range(start, end - length + 1, length):
            live = float(np.mean(scores[first:first + length])) >= threshold
            if frames[first][0] == "attack":
                attacks, accepted = attacks + 1, accepted + live
            else:
                lives, refused = lives + 1, refused + (not live)
        start = end
    return {"apcer": accepted / max(1, attacks), "bpcer": refused / max(1, lives), "attack_attempts": attacks,
            "live_attempts": lives}


def check_liveness(config: Config, models: Path, target: str, dtypes: Sequence[str],
                   calibration: Sequence[Path], nuaa: Path) -> Dict[str, dict]:
    reference = float_pipeline(config)
    threshold, length = config.liveness.threshold, config.liveness.frames
    try:
        frames = check_frames(reference, nuaa)
        original = np.asarray([reference.liveness.score(image, box) for _, _, image, box in frames])
        results = {"float": dict(per_attempt(original, frames, length, threshold), frames=len(frames))}
        specs = [runner.spec for runner in reference.liveness.runners]
        for dtype in dtypes:
            started = time.perf_counter()
            runners = []
            for spec in specs:
                crops = calibration_crops(reference, calibration, float(spec.extra["crop_scale"]), spec.input.size)
                runners.append(load_runner("rknn", spec, convert(spec, models, target, dtype, crops)))
            checker = LivenessChecker(runners)
            try:
                quantised = np.asarray([checker.score(image, box) for _, _, image, box in frames])
            finally:
                checker.close()
            moved = np.abs(quantised - original)
            results[dtype] = dict(per_attempt(quantised, frames, length, threshold), frames=len(frames),
                                  score_difference_mean=float(moved.mean()),
                                  score_difference_p99=float(np.percentile(moved, 99)),
                                  score_difference_max=float(moved.max()),
                                  frames_changing_side=int(np.sum((quantised >= threshold) != (original >= threshold))),
                                  calibration_crops=len(crops), seconds=round(time.perf_counter() - started, 1))
    finally:
        reference.close()
    return results


def table(rows: Dict[str, dict], threshold: float) -> List[str]:
    lines = ["liveness    score moved: mean / p99 / max   frames changing side of %.2f   APCER   BPCER   "
             "(per attempt)" % threshold]
    for dtype, row in rows.items():
        moved = "-" if dtype == "float" else "%.4f / %.4f / %.4f" % (
            row["score_difference_mean"], row["score_difference_p99"], row["score_difference_max"])
        side = "-" if dtype == "float" else "%d of %d" % (row["frames_changing_side"], row["frames"])
        lines.append("%-10s  %-29s   %-30s  %5.2f%%  %5.2f%%" % (dtype, moved, side, 100 * row["apcer"],
                                                              100 * row["bpcer"]))
    return lines
