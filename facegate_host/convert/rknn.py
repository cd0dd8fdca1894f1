"""Convert one manifest model to an .rknn file for a target and dtype, with its recipe."""

import datetime
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from facegate_host.convert import toolkit
from facegate_host.convert.calibration import write_npy_set
from facegate_host.convert.onnx_prep import prepare_for_npu
from appliance.inference.rknn_files import (check_code, recipe_path, rknn_path, toolkit_dtype,
                                            toolkit_for)
from appliance.models import ModelSpec, installed_path
from appliance.vision.embedder import model_input

log = logging.getLogger(__name__)


def convert(spec: ModelSpec, models: Path, target: str, dtype: str,
            calibration: Sequence[np.ndarray], size: Optional[int] = None) -> Path:
    """Write `<models>/rknn/<target>/<model>-<dtype>[-<size>].rknn` and its recipe; return its path.

    `calibration` holds uint8 BGR HxWx3 inputs (frames for a detector, aligned crops for an
    embedder); `size` is the detector's square input side (None: the manifest's size).
    """
    if spec.role == "embedder":  # the model's own part of the aligned crop
        calibration = [model_input(crop, spec) for crop in calibration]
    generation = toolkit_for(target)
    native = toolkit_dtype(target, dtype)
    height, width = (size, size) if size else spec.input.size
    folder = rknn_path(models, target, spec.model_id, dtype, size).parent
    stem = "%s%s" % (spec.model_id, "-%d" % size if size else "")
    onnx_name = stem + ".npu.onnx"
    prepare_for_npu(installed_path(spec, models), folder / onnx_name, spec, (height, width))
    calibration_name = "calibration/" + stem
    write_npy_set(calibration, folder / calibration_name)
    bgr = spec.input.colour == "RGB"  # the prepared graph takes BGR: mean and std follow the swap
    recipe = {
        "model_id": spec.model_id,
        "source_sha256": spec.sha256,
        "target": target,
        "toolkit": generation,
        "toolkit_version": toolkit.toolkit_version(),
        "dtype": dtype,
        "toolkit_dtype": native,
        "input_size": [height, width],
        "input": "uint8 NHWC BGR",
        "mean": list(spec.input.mean[::-1] if bgr else spec.input.mean),
        "std": list(spec.input.std[::-1] if bgr else spec.input.std),
        "outputs": list(spec.outputs),
        "onnx": onnx_name,
        "calibration": calibration_name,
        "calibration_count": len(calibration),
        "converted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = rknn_path(models, target, spec.model_id, dtype, size)
    rknn = toolkit.build(recipe, folder)
    try:
        partial = path.with_name(path.name + ".partial")
        check_code(rknn.export_rknn(str(partial)), "export_rknn", path)
        partial.replace(path)
    finally:
        rknn.release()
    toolkit.write_recipe(recipe_path(path), recipe)
    log.info("wrote %s (%s, %s)", path, target, native)
    return path
