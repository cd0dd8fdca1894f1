"""RKNN Lite backend: the board's NPU through Rockchip's on-device runtime.

The converted model has the colour order, mean and std folded in, so it takes the camera's
uint8 BGR pixels as they are (NHWC) and no float tensor is made on the Cortex-A7.
"""

from pathlib import Path
from typing import List

import numpy as np

from appliance.errors import BackendError
from appliance.inference.base import Runner
from appliance.inference.rknn_files import RKNPU2_LIBRARY, check_code, open_runtime, read_recipe
from appliance.models import ModelSpec

# models.rknn_core_mask -> RKNNLite's constant name (multi-core NPUs such as the RK3588 only)
CORE_MASKS = {"0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2", "0_1": "NPU_CORE_0_1",
              "0_1_2": "NPU_CORE_0_1_2"}


def check_input(runner: Runner, images: np.ndarray, recipe: dict) -> np.ndarray:
    """RKNN models have a fixed input size: a mismatch is a configuration error, said plainly."""
    height, width = recipe["input_size"]
    if images.dtype != np.uint8 or images.shape[1:] != (height, width, 3):
        raise BackendError("RKNN model %s takes uint8 %dx%d BGR images, got %s %s; convert it for the "
                           "configured detector.input_size or set that to %d"
                           % (runner.path.name, width, height, images.dtype, images.shape[1:3], height))
    return np.ascontiguousarray(images)


class RknnApiRunner(Runner):
    """What Rockchip's Python APIs share (rknnlite on a board, the toolkit on a host): NHWC uint8
    in, float32 out, release on close. A subclass sets `_rknn` and `recipe`, and says in
    `logger` where the reason for a failed run went."""

    logger = "the NPU driver"
    _rknn = None

    def run(self, images_bgr: np.ndarray) -> List[np.ndarray]:
        batch = check_input(self, images_bgr, self.recipe)
        outputs = self._rknn.inference(inputs=[batch], data_format="nhwc")
        if outputs is None:
            raise BackendError("RKNN inference on %s returned nothing; %s logged why" % (self.path.name, self.logger))
        return [np.asarray(output, dtype=np.float32) for output in outputs]

    def close(self) -> None:
        if self._rknn is not None:
            self._rknn.release()
            self._rknn = None


class RknnLiteRunner(RknnApiRunner):
    backend = "rknnlite"

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 0, core_mask: str = "auto",
                 **_options) -> None:
        super().__init__(spec, path, threads)
        self.recipe = read_recipe(path, spec.sha256)
        try:
            from rknnlite.api import RKNNLite
        except ImportError as err:
            raise BackendError("backend 'rknnlite' needs Rockchip's NPU runtime for Python (rknnlite): "
                               "install the board bundle, or on a host use backend 'onnxruntime' "
                               "(or 'rknn' with the toolkit's simulator, see 'make rknn-env')") from err
        # rknnlite loads the runtime only at init_runtime, then fails with -1 and its own log
        open_runtime("rknnlite", [RKNPU2_LIBRARY])
        self._rknn = RKNNLite(verbose=False)
        try:
            check_code(self._rknn.load_rknn(str(path)), "load_rknn", path)
            options = {}
            if core_mask != "auto":  # only multi-core NPUs accept it; RV1126 has one core
                options["core_mask"] = getattr(RKNNLite, CORE_MASKS[core_mask])
            check_code(self._rknn.init_runtime(**options), "init_runtime", path)
        except Exception:
            self.close()
            raise
