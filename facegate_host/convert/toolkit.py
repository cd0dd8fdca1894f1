"""Drive Rockchip's conversion toolkit: v2 (rknn-toolkit2) for RKNPU2 targets, v1 for the RV1126.

Both toolkits install the module `rknn.api`; which one is present is read from the installed
distribution's name. The toolkit v1 path follows its documented API and is not tested here.
"""

import importlib.metadata
import json
import tempfile
from pathlib import Path
from typing import Any, Dict

from appliance.errors import BackendError, ModelError
from appliance.inference.rknn_files import check_code

DISTRIBUTIONS = {"toolkit2": "rknn-toolkit2", "toolkit1": "rknn-toolkit"}


def installed_toolkit() -> str:
    for generation, distribution in DISTRIBUTIONS.items():
        try:
            importlib.metadata.version(distribution)
            return generation
        except importlib.metadata.PackageNotFoundError:
            continue
    raise BackendError("Rockchip's conversion toolkit is not installed: run 'make rknn-env' and use "
                       ".rknn-venv/bin/python (rknn-toolkit2); for the original RV1126 install "
                       "Rockchip's rknn-toolkit v1 there instead")


def toolkit_version() -> str:
    return importlib.metadata.version(DISTRIBUTIONS[installed_toolkit()])


def rknn_class():
    installed_toolkit()
    from rknn.api import RKNN
    return RKNN


def calibration_list(folder: Path) -> str:
    """The toolkit reads its dataset as a text file of paths, one input per line."""
    files = sorted(Path(folder).glob("*.npy"))
    if not files:
        raise ModelError("calibration set %s is empty; convert the model again" % folder)
    handle = tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="facegate-calibration-", delete=False)
    with handle:
        handle.write("".join("%s\n" % path.resolve() for path in files))
    return handle.name


def build(recipe: Dict[str, Any], folder: Path):
    """Configure, load and build the model a recipe describes; returns the toolkit object."""
    generation = installed_toolkit()
    if recipe["toolkit"] != generation:
        raise BackendError("target %s needs Rockchip's %s, but %s is installed"
                           % (recipe["target"], recipe["toolkit"], DISTRIBUTIONS[generation]))
    source = folder / recipe["onnx"]
    rknn = rknn_class()(verbose=False)
    try:
        quantise = recipe["dtype"] != "fp16"
        options: Dict[str, Any] = {"mean_values": [recipe["mean"]], "std_values": [recipe["std"]]}
        if generation == "toolkit2":
            options["target_platform"] = recipe["target"]
        else:  # v1 takes a list of platforms and reorders channels itself; the graph is BGR already
            options["target_platform"] = [recipe["target"]]
            options["reorder_channel"] = "0 1 2"
        if quantise:
            options["quantized_dtype"] = recipe["toolkit_dtype"]
        check_code(rknn.config(**options), "config", source)
        check_code(rknn.load_onnx(model=str(source)), "load_onnx", source)
        dataset = calibration_list(folder / recipe["calibration"]) if quantise else None
        try:
            check_code(rknn.build(do_quantization=quantise, dataset=dataset), "build", source)
        finally:
            if dataset:
                Path(dataset).unlink()
    except Exception:
        rknn.release()
        raise
    return rknn


def write_recipe(path: Path, recipe: Dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(recipe, indent=2) + "\n")
    partial.replace(path)
