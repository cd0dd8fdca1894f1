"""OpenCV DNN backend: the CPU fallback for boards where ONNX Runtime has no wheel."""

from pathlib import Path
from typing import List

import numpy as np

from appliance.errors import BackendError, ModelError
from appliance.inference.base import Runner, to_float_tensor
from appliance.models import ModelSpec


class OpenCvRunner(Runner):
    backend = "opencv"
    runs_batches = True

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 0) -> None:
        super().__init__(spec, path, threads)
        try:
            import cv2
        except ImportError as err:
            raise BackendError("backend 'opencv' needs OpenCV with its dnn module: "
                               "pip install opencv-python-headless") from err
        if spec.input.layout != "NCHW":
            raise ModelError("backend 'opencv' runs NCHW models only; %s is %s"
                             % (spec.model_id, spec.input.layout))
        if threads:
            cv2.setNumThreads(threads)
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as err:
            raise ModelError("OpenCV cannot load %s (%s)" % (path, err)) from err

    def run(self, images_bgr: np.ndarray) -> List[np.ndarray]:
        import cv2

        self._net.setInput(to_float_tensor(images_bgr, self.spec.input))
        try:
            return list(self._net.forward(self.spec.outputs))
        except cv2.error as err:  # an OpenCV too old for one of the model's layers (Debian 12's 4.6)
            message = " ".join(str(err).split())
            raise ModelError("OpenCV %s cannot run %s (%s): use a newer OpenCV or another backend"
                             % (cv2.__version__, self.spec.model_id, message[-160:])) from err

    def close(self) -> None:
        self._net = None
