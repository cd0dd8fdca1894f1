"""ONNX Runtime backend: the host default."""

from pathlib import Path
from typing import List

import numpy as np

from appliance.errors import BackendError, ModelError
from appliance.inference.base import Runner, to_float_tensor
from appliance.models import ModelSpec


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"
    runs_batches = True

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 0) -> None:
        super().__init__(spec, path, threads)
        try:
            import onnxruntime
        except ImportError as err:
            raise BackendError("backend 'onnxruntime' needs ONNX Runtime: pip install onnxruntime "
                               "(on 32-bit ARM boards use backend 'opencv' or 'rknnlite')") from err
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Worker threads that spin between runs burn a core while the door is idle, and the
        # camera thread shares these cores; sleeping costs well under a millisecond a run.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own untyped errors for a bad file
            raise ModelError("ONNX Runtime cannot load %s (%s); reinstall it with 'make models'"
                             % (path, err)) from err
        names = [i.name for i in self._session.get_inputs()]
        if names != [spec.input.name]:
            raise ModelError("model %s expects input %r, the file has %s"
                             % (spec.model_id, spec.input.name, names))
        outputs = {o.name for o in self._session.get_outputs()}
        missing = [name for name in spec.outputs if name not in outputs]
        if missing:
            raise ModelError("model %s file %s lacks outputs %s named in the manifest"
                             % (spec.model_id, path, missing))

    def run(self, images_bgr: np.ndarray) -> List[np.ndarray]:
        tensor = to_float_tensor(images_bgr, self.spec.input)
        return self._session.run(self.spec.outputs, {self.spec.input.name: tensor})

    def close(self) -> None:
        self._session = None
