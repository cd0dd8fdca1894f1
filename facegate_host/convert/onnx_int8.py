"""The embedder's 8-bit copy for ONNX Runtime on a CPU, and its quantisation check.

Static quantisation (8-bit weights per channel, 8-bit activations with ranges measured on
real aligned faces) lets ONNX Runtime use the CPU's integer dot-product instructions: the
MS1M MobileFaceNet runs about twice as fast on this host. The detector gained at most 15% that
way here, so it stays float.

The copy's integers depend on the CPU: x86 CPUs with AVX2 but without VNNI multiply 8-bit
activations by 8-bit weights with VPMADDUBSW, which adds each pair of products in 16 bits and
saturates (ONNX Runtime's quantization guide, "reduce_range"). Measured on an AVX2-only CPU the
copy gave faces a cosine of 0.85 with the float model where a VNNI CPU gave 0.99. The formats
that do not saturate cost accuracy or speed: 7-bit weights (reduce_range) kept the cosine at
0.977 (p1) on every CPU but lost a hard face of the seed's group photos; 8-bit unsigned weights
(U8U8) ran no faster than float on a VNNI CPU; signed activations (S8S8) saturated as U8S8 did.
So the copy stays as calibrated, and where it runs it is measured against the float model on a
fixed set of aligned faces (the check set, made here from LFW-dev photos the pairs use, none of
them in the calibration) and refused outside the calibration's tolerance: such a CPU embeds
with the float model (appliance/vision/int8_check.py).
"""

import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from appliance.config import Config
from appliance.errors import ModelError
from appliance.inference import load_runner
from appliance.inference.base import to_float_tensor
from appliance.models import (get_spec, installed_path, int8_check_set, int8_is_current, int8_path, int8_stamp,
                              int8_stamp_text, models_dir)
from appliance.vision import int8_check
from appliance.vision.embedder import Embedder
from facegate_host.convert.calibration import aligned_crops, calibration_images, pair_images
from facegate_host.convert.check import embedder_figures, lfw_check_set, reference_pipeline


def _float_source(config: Config) -> Path:
    spec = get_spec(config.models.embedder)
    return installed_path(spec, models_dir(config.models.dir or None))


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


def make_int8_embedder(config: Config, lfw_dir: Path, count: int = 200, check_faces: int = 200) -> Path:
    """Quantise the configured embedder, calibrated on LFW-dev photos no pair uses, and write
    its check set from photos the pairs use."""
    source = _float_source(config)
    if int8_is_current(source) and int8_check_set(source).is_file():
        return int8_path(source)
    pairs_file = lfw_dir / "pairs.txt"
    if not pairs_file.is_file():
        raise ModelError("the embedder's 8-bit copy is calibrated on LFW-dev photos: %s is missing; give --lfw "
                         "the folder, or set models.embedder_int8 = false" % pairs_file)
    in_pairs = pair_images(pairs_file)
    photos = calibration_images(lfw_dir / "images", count, exclude=in_pairs)
    # a face per person, spread over the pairs' people by a fixed shuffle
    by_person = {}
    for name in in_pairs:
        by_person.setdefault(name.split("/")[0], name)
    chosen = [lfw_dir / "images" / by_person[person] for person in sorted(by_person)]
    order = np.random.default_rng(1).permutation(len(chosen))
    pipeline = reference_pipeline(config, config.detector.input_size)
    try:
        crops = aligned_crops(pipeline, photos)
        checks = np.stack(aligned_crops(pipeline, [chosen[i] for i in order[:check_faces + 20]])[:check_faces])
        reference = int8_check.embeddings(pipeline.embedder.runner, checks)
    finally:
        pipeline.close()
    quantise(source, int8_path(source), crops, get_spec(config.models.embedder).input)
    partial = int8_check_set(source).with_name(int8_check_set(source).name + ".partial.npz")
    np.savez_compressed(partial, crops=checks, reference=reference)
    partial.replace(int8_check_set(source))
    int8_stamp(source).write_text(int8_stamp_text(source) + "\n")
    return int8_path(source)


def check_here(config: Config) -> dict:
    """The installed copy measured against its check set on this CPU (the verdict the door keeps)."""
    source = _float_source(config)
    runner = load_runner("onnxruntime", get_spec(config.models.embedder), int8_path(source), None,
                         config.models.threads)
    try:
        return int8_check.verdict(runner, source, remeasure=True)
    finally:
        runner.close()


def check(config: Config, lfw_dir: Path, folds: int = 10) -> Dict[str, dict]:
    """Float and 8-bit embedders on the LFW-dev pairs, alignment from the float pipeline (the
    figures of the RKNN quantisation check, convert/check.py)."""
    reference = reference_pipeline(config, config.detector.input_size)
    float_runner = reference.embedder.runner
    int8_runner = load_runner("onnxruntime", float_runner.spec, int8_path(_float_source(config)), None,
                              config.models.threads)
    try:
        pairs, fold_count, aligned = lfw_check_set(reference, lfw_dir, folds)
        flip = config.embedder.flip
        return {"float": embedder_figures(float_runner, Embedder(float_runner, flip), aligned, pairs, fold_count,
                                          None),
                "int8": embedder_figures(int8_runner, Embedder(int8_runner, flip), aligned, pairs, fold_count,
                                         float_runner)}
    finally:
        int8_runner.close()
        reference.close()


def table(rows: Dict[str, dict]) -> List[str]:
    lines = ["embedder  cosine mean  p1      worst   LFW-dev acc  TAR@FAR1e-3  pairs",
             "--------  -----------  ------  ------  -----------  -----------  -----"]
    for label, row in rows.items():
        cosine = ("%11.4f  %6.4f  %6.4f" % (row["cosine_mean"], row["cosine_p1"], row["cosine_worst"])
                  if "cosine_mean" in row else "%11s  %6s  %6s" % ("(ONNX)", "", ""))
        lines.append("%-8s  %s  %10.2f%%  %10.2f%%  %5d" % (label, cosine, 100 * row["lfw_accuracy"],
                                                          100 * row["tar_at_far_1e-3"], row["pairs"]))
    return lines
