"""The quantisation check: RKNN models on the toolkit's simulator against the ONNX originals.

Detector: on the same letterboxed images, how many ONNX faces the RKNN model also finds, their
box IoU and landmark error (in inter-ocular distances). Embedder: cosine similarity of RKNN and
ONNX embeddings on aligned LFW crops (mean and worst) and LFW-dev verification accuracy with
each, the alignment taken from the ONNX detector so only the embedder differs.
"""

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from appliance.config import Config
from facegate_host.convert.calibration import (aligned_crops, detector_frames)
from facegate_host.convert.rknn import convert
from facegate_host.eval import lfw
from appliance.inference import load_runner
from appliance.vision.detector import DETECTOR_FAMILIES, Face
from appliance.vision.embedder import Embedder, model_input, normalise
from appliance.vision.geometry import box_iou
from appliance.vision.detector import central_face
from appliance.vision.pipeline import FacePipeline, read_image

log = logging.getLogger(__name__)


def reference_pipeline(config: Config, size: int) -> FacePipeline:
    models = replace(config.models, backend="onnxruntime", embedder_int8=False)  # the float models
    detector = replace(config.detector, input_size=size, keep_frame_aspect=False, flip_landmarks=False)
    return FacePipeline.from_config(replace(config, models=models, detector=detector,
                                            liveness=replace(config.liveness, enabled=False)))


def compare_detections(reference: Sequence[Face], candidate: Sequence[Face]) -> Dict[str, list]:
    """Per reference face: IoU with its best candidate and landmark error in inter-ocular units."""
    ious, errors = [], []
    boxes = np.array([face.box for face in candidate]) if candidate else np.zeros((0, 4))
    for face in reference:
        overlaps = box_iou(face.box, boxes) if len(boxes) else np.zeros(0)
        best = int(np.argmax(overlaps)) if overlaps.size else -1
        if best < 0 or overlaps[best] < 0.5:
            ious.append(0.0)
            errors.append(np.nan)
            continue
        ious.append(float(overlaps[best]))
        eyes = float(np.linalg.norm(face.landmarks[0] - face.landmarks[1])) or 1.0
        point_errors = np.linalg.norm(candidate[best].landmarks - face.landmarks, axis=1)
        errors.append(float(point_errors.mean() / eyes))
    return {"ious": ious, "errors": errors, "extra": [max(0, len(candidate) - len(reference))]}


def detector_figures(found: Dict[str, list]) -> Dict[str, float]:
    ious = np.array(found["ious"])
    errors = np.array(found["errors"], dtype=float)
    matched = errors[~np.isnan(errors)]
    return {
        "faces": int(ious.size),
        "found": float(np.mean(ious >= 0.5)) if ious.size else 0.0,
        "mean_iou": float(ious[ious >= 0.5].mean()) if matched.size else 0.0,
        "landmark_error_mean": float(matched.mean()) if matched.size else float("nan"),
        "landmark_error_p95": float(np.percentile(matched, 95)) if matched.size else float("nan"),
        "landmark_error_max": float(matched.max()) if matched.size else float("nan"),
        "extra_faces": int(sum(found["extra"])),
    }


def check_detector(config: Config, models: Path, target: str, dtypes: Sequence[str], size: int,
                   calibration: Sequence[Path], images: Sequence[Path]) -> Dict[str, dict]:
    reference = reference_pipeline(config, size)
    spec = reference.detector.spec
    frames = detector_frames(calibration, size, reference.detector._fill)
    pictures = [read_image(path) for path in images]
    expected = [reference.detector.detect(picture) for picture in pictures]
    results = {}
    for dtype in dtypes:
        started = time.perf_counter()
        path = convert(spec, models, target, dtype, frames, size)
        runner = load_runner("rknn", spec, path, (size, size))
        detector = DETECTOR_FAMILIES[spec.extra["family"]](
            runner, size, False, config.detector.score_threshold, config.detector.nms_threshold)
        found: Dict[str, list] = {"ious": [], "errors": [], "extra": []}
        try:
            for picture, faces in zip(pictures, expected):
                for key, values in compare_detections(faces, detector.detect(picture)).items():
                    found[key].extend(values)
        finally:
            runner.close()
        results[dtype] = dict(detector_figures(found), file=path.name,
                              seconds=round(time.perf_counter() - started, 1))
        log.info("detector %s: %s", dtype, results[dtype])
    reference.close()
    return results


def check_embedder(config: Config, models: Path, target: str, dtypes: Sequence[str],
                   calibration: Sequence[Path], lfw_dir: Path, folds: Optional[int] = None) -> Dict[str, dict]:
    reference = reference_pipeline(config, config.detector.input_size)
    spec = reference.embedder.runner.spec
    crops = aligned_crops(reference, calibration)
    pairs, fold_count, aligned = lfw_check_set(reference, lfw_dir, folds)
    flip = Embedder(reference.embedder.runner, flip=True)
    results = {"float": embedder_figures(reference.embedder.runner, flip, aligned, pairs, fold_count, None)}
    for dtype in dtypes:
        started = time.perf_counter()
        path = convert(spec, models, target, dtype, crops)
        runner = load_runner("rknn", spec, path)
        try:
            figures = embedder_figures(runner, Embedder(runner, flip=True), aligned, pairs, fold_count,
                                       reference.embedder.runner)
        finally:
            runner.close()
        results[dtype] = dict(figures, file=path.name, calibration_crops=len(crops),
                              seconds=round(time.perf_counter() - started, 1))
        log.info("embedder %s: %s", dtype, results[dtype])
    reference.close()
    return results


def lfw_check_set(reference: FacePipeline, lfw_dir: Path, folds: Optional[int] = None):
    """(pairs, folds, aligned crop per image name or None) of LFW-dev's pairs, aligned by the
    reference pipeline so that only the embedder differs between the models checked."""
    fold_count, pairs = lfw.parse_pairs(lfw_dir / "pairs.txt")
    if folds:
        fold_count = min(folds, fold_count)
        pairs = [pair for pair in pairs if pair.fold < fold_count]
    names = sorted({p.first for p in pairs} | {p.second for p in pairs})
    aligned: Dict[str, Optional[np.ndarray]] = {}
    for name in names:
        image = read_image(lfw_dir / "images" / name)
        face = central_face(reference.detect(image), image.shape)
        aligned[name] = None if face is None else reference.analyse_face(image, face, embed=False).aligned
    return pairs, fold_count, aligned


def check_pipeline(config: Config, models: Path, target: str, detector_dtype: str, embedder_dtype: str,
                   size: int, lfw_dir: Path, folds: Optional[int] = None) -> dict:
    """LFW-dev accuracy of the whole quantised pipeline, as a board would run it."""
    npu = replace(config.models, backend="rknn", rknn_target=target, dir=str(models),
                  rknn_detector_dtype=detector_dtype, rknn_embedder_dtype=embedder_dtype)
    detector = replace(config.detector, input_size=size, keep_frame_aspect=False)
    pipeline = FacePipeline.from_config(replace(config, models=npu, detector=detector,
                                                liveness=replace(config.liveness, enabled=False)))
    started = time.perf_counter()
    try:
        fold_count, pairs = lfw.parse_pairs(lfw_dir / "pairs.txt")
        if folds:
            fold_count = min(folds, fold_count)
            pairs = [pair for pair in pairs if pair.fold < fold_count]
        names = sorted({p.first for p in pairs} | {p.second for p in pairs})
        result = lfw.evaluate(pairs, lfw.embed_images(pipeline, lfw_dir / "images", names), fold_count)
    finally:
        pipeline.close()
    return {"detector": detector_dtype, "embedder": embedder_dtype, "lfw_accuracy": result["accuracy"],
            "tar_at_far_1e-3": result["tar_at_far_0.001"], "pairs": result["pairs"],
            "images_without_face": len(result["images_without_face"]),
            "seconds": round(time.perf_counter() - started, 1)}


def embedder_figures(runner, embedder: Embedder, aligned, pairs, folds: int, float_runner) -> dict:
    """LFW-dev accuracy and TAR with `embedder`; with `float_runner`, also the cosine of the
    runner's plain outputs with the float model's, crop by crop."""
    embeddings, similarities = {}, []
    for name, crop in aligned.items():
        if crop is None:
            embeddings[name] = None
            continue
        embeddings[name] = embedder.embed(crop)
        if float_runner is not None:  # the plain (unflipped) outputs, model against model
            crop = model_input(crop, runner.spec)
            quantised = normalise(runner.run(crop[None])[0].reshape(-1))
            original = normalise(float_runner.run(crop[None])[0].reshape(-1))
            similarities.append(float(np.dot(quantised, original)))
    result = lfw.evaluate(pairs, embeddings, folds)
    figures = {"lfw_accuracy": result["accuracy"], "lfw_accuracy_std": result["accuracy_std"],
               "tar_at_far_1e-3": result["tar_at_far_0.001"], "pairs": result["pairs"], "folds": folds}
    if similarities:
        values = np.array(similarities)
        figures.update(cosine_mean=float(values.mean()), cosine_worst=float(values.min()),
                       cosine_p1=float(np.percentile(values, 1)), crops=int(values.size))
    return figures


def table(report: dict) -> List[str]:
    lines = ["target %s, detector input %d, toolkit %s" % (report["target"], report["detector_size"],
                                                          report["toolkit_version"]),
             "",
             "detector    faces  found   mean IoU  landmark err mean / p95 / max (inter-ocular)  extra",
             "----------  -----  ------  --------  --------------------------------------------  -----"]
    for dtype, row in report["detector"].items():
        lines.append("%-10s  %5d  %5.1f%%  %8.3f  %14.3f / %.3f / %.3f %16s  %5d"
                     % (dtype, row["faces"], 100 * row["found"], row["mean_iou"], row["landmark_error_mean"],
                        row["landmark_error_p95"], row["landmark_error_max"], "", row["extra_faces"]))
    lines += ["",
              "embedder    cosine mean  worst   LFW-dev acc  TAR@FAR1e-3  pairs",
              "----------  -----------  ------  -----------  -----------  -----"]
    for dtype, row in report["embedder"].items():
        cosine = ("%11.4f  %6.4f" % (row["cosine_mean"], row["cosine_worst"])) if "cosine_mean" in row \
            else "%11s  %6s" % ("(ONNX)", "")
        lines.append("%-10s  %s  %10.2f%%  %10.2f%%  %5d" % (dtype, cosine, 100 * row["lfw_accuracy"],
                                                            100 * row["tar_at_far_1e-3"], row["pairs"]))
    if report.get("pipeline"):
        lines += ["", "whole pipeline (RKNN detector and embedder, as on a board)",
                  "detector  embedder  LFW-dev acc  TAR@FAR1e-3  pairs  images without a face",
                  "--------  --------  -----------  -----------  -----  ---------------------"]
    for row in report.get("pipeline", []):
        lines.append("%-8s  %-8s  %10.2f%%  %10.2f%%  %5d  %21d"
                     % (row["detector"], row["embedder"], 100 * row["lfw_accuracy"], 100 * row["tar_at_far_1e-3"],
                        row["pairs"], row["images_without_face"]))
    return lines
