"""Where converted RKNN models live, what their recipe says, and the toolkits' dtype names.

A converted model is `<models>/rknn/<target>/<model_id>-<dtype>[-<size>].rknn` with a JSON
recipe beside it: the source's sha256, the input size, the pixel order and normalisation folded
into it, the calibration set. The recipe lets the toolkit's simulator rebuild the same model
(it cannot run a loaded .rknn file) and lets a board refuse a file made for another model.
"""

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from appliance.errors import BackendError, ModelError

# Targets per toolkit generation. The original RV1126 (and RV1109) needs Rockchip's toolkit v1.
TOOLKIT1_TARGETS = ("rv1126", "rv1109")
TOOLKIT2_TARGETS = ("rv1126b", "rk3566", "rk3568", "rk3588")
TARGETS = TOOLKIT1_TARGETS + TOOLKIT2_TARGETS

# FaceGate's dtype names -> each toolkit's own (None: that toolkit has no such mode).
# "fp16" means no quantisation: the NPU runs float16.
DTYPES = {
    "i8": {"toolkit1": "asymmetric_quantized-u8", "toolkit2": "w8a8"},
    "i8-dfp": {"toolkit1": "dynamic_fixed_point-i8", "toolkit2": None},
    "i16": {"toolkit1": "dynamic_fixed_point-i16", "toolkit2": "w16a16i_dfp"},
    "w8a16": {"toolkit1": None, "toolkit2": "w8a16"},
    "fp16": {"toolkit1": "float16", "toolkit2": "float16"},
}


def toolkit_for(target: str) -> str:
    if target in TOOLKIT1_TARGETS:
        return "toolkit1"
    if target in TOOLKIT2_TARGETS:
        return "toolkit2"
    raise ModelError("unknown RKNN target %r; choose one of: %s" % (target, ", ".join(TARGETS)))


def toolkit_dtype(target: str, dtype: str) -> str:
    """The toolkit's name for `dtype` on `target`, or ModelError saying which dtypes it offers."""
    toolkit = toolkit_for(target)
    native = DTYPES.get(dtype, {}).get(toolkit)
    if native is None:
        offered = [name for name, names in DTYPES.items() if names[toolkit]]
        raise ModelError("dtype %r is not offered for %s (%s); choose one of: %s"
                         % (dtype, target, toolkit, ", ".join(offered)))
    return native


def rknn_path(directory: Path, target: str, model_id: str, dtype: str,
              size: Optional[int] = None) -> Path:
    name = "%s-%s%s.rknn" % (model_id, dtype, "-%d" % size if size else "")
    return Path(directory) / "rknn" / target / name


def recipe_path(model: Path) -> Path:
    return model.with_name(model.name + ".json")


def read_recipe(model: Path, source_sha256: str) -> Dict[str, Any]:
    """The recipe beside a converted model, checked to come from the manifest's source file."""
    path = recipe_path(model)
    if not Path(model).is_file() or not path.is_file():
        raise ModelError("RKNN model %s (or its recipe %s) is missing; convert it with "
                         "'tools/convert-rknn --target %s' on a host, or install the board bundle"
                         % (model, path.name, Path(model).parent.name))
    try:
        recipe = json.loads(path.read_text())
    except ValueError as err:
        raise ModelError("RKNN recipe %s is not valid JSON (%s); convert the model again" % (path, err)) from err
    if recipe.get("source_sha256") != source_sha256:
        raise ModelError("RKNN model %s was converted from another version of %s; convert it again"
                         % (model, recipe.get("model_id", "its source")))
    return recipe


def check_code(code: Any, what: str, model: Path) -> None:
    """RKNN calls return 0 on success and a negative number otherwise: make that an exception."""
    if code != 0:
        raise BackendError("RKNN %s failed for %s (return code %s); see the toolkit's log above"
                           % (what, model, code))


RKNPU1_LIBRARY = "librknn_api.so"  # the RV1126's NPU runtime, from its vendor image, in /usr/lib
RKNPU2_LIBRARY = "librknnrt.so"  # the RV1126B's


def open_runtime(backend: str, names: Sequence[str]):
    """The first of Rockchip's NPU runtime libraries `names` that loads (a ctypes.CDLL); one line
    saying where it comes from when none does."""
    import ctypes

    reasons = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as err:
            reasons.append(str(err))
    raise BackendError("backend '%s' needs Rockchip's NPU runtime %s, which this system lacks (%s): install it "
                       "from the board's vendor image into /usr/lib (board/README.md), or run on the CPU with "
                       "--backend onnxruntime" % (backend, " or ".join(names), "; ".join(reasons)))
