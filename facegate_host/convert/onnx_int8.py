"""The embedder's 8-bit copy for ONNX Runtime on a CPU, and its quantisation check.

Static quantisation (8-bit weights per channel, 8-bit activations with ranges measured on
real aligned faces) lets ONNX Runtime use the CPU's integer dot-product instructions: the
MS1M MobileFaceNet runs about twice as fast on this host. The detector gains little that way
(about 15% here, its cost is memory traffic in the wide early layers), so it stays float.

The copy keeps the float model's id and so its calibration: `check` measures how close its
embeddings stay (cosine with the float ones on faces it was not calibrated on) and the LFW-dev
verification accuracy and TAR with each, the alignment the same for both.
"""

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import List, Sequence

import numpy as np

from appliance.config import Config
from appliance.errors import ModelError
from appliance.inference import load_runner
from appliance.inference.base import to_float_tensor
from appliance.models import get_spec, int8_path, int8_stamp, installed_path, models_dir, sha256_of
from appliance.vision.embedder import Embedder, normalise
from facegate_host.convert.calibration import aligned_crops, calibration_images, pair_images
from facegate_host.eval import lfw


def float_pipeline(config: Config):
    from appliance.vision.pipeline import FacePipeline

    models = replace(config.models, backend="onnxruntime", embedder_int8=False)
    return FacePipeline.from_config(replace(config, models=models, liveness=replace(config.liveness, enabled=False)))


def quantise(source: Path, target: Path, crops: Sequence[np.ndarray], input_spec) -> None:
    """Write the 8-bit copy of `source` at `target`, activation ranges from `crops`."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise ModelError("quantising needs onnxruntime's quantization tools and the onnx package: "
                         "pip install onnx") from err
    if not crops:
        raise ModelError("quantising %s needs calibration faces; none of the calibration photos had one" % source)

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter({input_spec.name: to_float_tensor(crop[None], input_spec)} for crop in crops)

        def get_next(self):
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="facegate-int8-") as temporary:
        prepared = Path(temporary) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        partial = target.with_name(target.name + ".partial")
        quantize_static(str(prepared), str(partial), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    partial.replace(target)


def make_int8_embedder(config: Config, lfw_dir: Path, count: int = 200) -> Path:
    """Quantise the configured embedder, calibrated on LFW-dev photos no pair uses."""
    directory = models_dir(config.models.dir or None)
    spec = get_spec(config.models.embedder)
    source = installed_path(spec, directory)
    target = int8_path(source)
    stamp = int8_stamp(source)
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256_of(source):
        return target
    pairs_file = lfw_dir / "pairs.txt"
    if not pairs_file.is_file():
        raise ModelError("the embedder's 8-bit copy is calibrated on LFW-dev photos: %s is missing; give --lfw "
                         "the folder, or set models.embedder_int8 = false" % pairs_file)
    photos = calibration_images(lfw_dir / "images", count, exclude=pair_images(pairs_file))
    pipeline = float_pipeline(config)
    try:
        crops = aligned_crops(pipeline, photos)
    finally:
        pipeline.close()
    quantise(source, target, crops, spec.input)
    stamp.write_text(sha256_of(source) + "\n")
    return target


def check(config: Config, lfw_dir: Path, folds: int = 10) -> List[dict]:
    """Float and 8-bit embedders on the LFW-dev pairs, alignment from the float pipeline."""
    pipeline = float_pipeline(config)
    directory = models_dir(config.models.dir or None)
    spec = get_spec(config.models.embedder)
    source = installed_path(spec, directory)
    int8_runner = load_runner("onnxruntime", spec, int8_path(source), None, config.models.threads)
    try:
        fold_count, pairs = lfw.parse_pairs(lfw_dir / "pairs.txt")
        fold_count = min(folds, fold_count)
        pairs = [pair for pair in pairs if pair.fold < fold_count]
        names = sorted({p.first for p in pairs} | {p.second for p in pairs})
        crops = dict(zip(names, aligned_crops_or_none(pipeline, [lfw_dir / "images" / n for n in names])))
        rows = []
        for label, embedder in (("float", pipeline.embedder), ("int8", Embedder(int8_runner, config.embedder.flip))):
            embeddings = {n: (embedder.embed(c) if c is not None else None) for n, c in crops.items()}
            result = lfw.evaluate(pairs, embeddings, fold_count)
            rows.append({"embedder": label, "lfw_accuracy": result["accuracy"],
                         "tar_at_far_1e-3": result["tar_at_far_0.001"], "pairs": result["pairs"]})
        cosines = np.array([float(np.dot(normalise(int8_runner.run(c[None])[0].reshape(-1)),
                                         normalise(pipeline.embedder.runner.run(c[None])[0].reshape(-1))))
                            for c in crops.values() if c is not None])
        rows[1].update(cosine_mean=float(cosines.mean()), cosine_p1=float(np.percentile(cosines, 1)),
                       cosine_worst=float(cosines.min()), crops=int(cosines.size))
        return rows
    finally:
        int8_runner.close()
        pipeline.close()


def aligned_crops_or_none(pipeline, paths: Sequence[Path]) -> List:
    """aligned_crops, keeping a None in place of each photo without a face."""
    found = []
    for path in paths:
        crops = aligned_crops(pipeline, [path])
        found.append(crops[0] if crops else None)
    return found


def table(rows: List[dict]) -> List[str]:
    lines = ["embedder  cosine mean  p1      worst   LFW-dev acc  TAR@FAR1e-3  pairs",
             "--------  -----------  ------  ------  -----------  -----------  -----"]
    for row in rows:
        cosine = ("%11.4f  %6.4f  %6.4f" % (row["cosine_mean"], row["cosine_p1"], row["cosine_worst"])
                  if "cosine_mean" in row else "%11s  %6s  %6s" % ("(ONNX)", "", ""))
        lines.append("%-8s  %s  %10.2f%%  %10.2f%%  %5d" % (row["embedder"], cosine, 100 * row["lfw_accuracy"],
                                                          100 * row["tar_at_far_1e-3"], row["pairs"]))
    return lines
