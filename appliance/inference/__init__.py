"""Inference backends behind one small runner interface.

Each backend lives in its own module and imports its vendor runtime lazily, so a host without
rknnlite (or a board without onnxruntime) still imports the package; asking for a missing
runtime raises BackendError that names the backend and how to install it.
"""

import importlib
import importlib.util
from pathlib import Path
from typing import Optional, Tuple

from appliance.errors import BackendError
from appliance.inference.base import Runner
from appliance.models import ModelSpec

# backend name -> (module, class); the modules are imported only when asked for.
BACKENDS = {
    "onnxruntime": ("appliance.inference.onnxruntime_runner", "OnnxRuntimeRunner"),
    "opencv": ("appliance.inference.opencv_runner", "OpenCvRunner"),
    "rknnlite": ("appliance.inference.rknnlite_runner", "RknnLiteRunner"),
    # Rockchip's C runtime through ctypes: the first RV1126 (RKNPU1), or RKNPU2 without rknnlite
    "rknn_c": ("appliance.inference.rknn_c_runner", "RknnCRunner"),
    # Rockchip's toolkit and its simulator: a host tool, in the host package
    "rknn": ("facegate_host.rknn_toolkit_runner", "RknnToolkitRunner"),
}
NPU_BACKENDS = ("rknnlite", "rknn_c", "rknn")
DEFAULT_BACKEND = "onnxruntime"


def load_runner(backend: str, spec: ModelSpec, path: Path,
                warmup_size: Optional[Tuple[int, int]] = None, threads: int = 0, **options) -> Runner:
    """Load `path` (described by `spec`) on `backend`, warm it up once and check its outputs.

    `options` are backend settings (the NPU's core_mask, a connected board's device id)."""
    if backend not in BACKENDS:
        raise BackendError("unknown inference backend %r; choose one of: %s"
                           % (backend, ", ".join(sorted(BACKENDS))))
    module_name, class_name = BACKENDS[backend]
    if importlib.util.find_spec(module_name.partition(".")[0]) is None:
        raise BackendError("backend %r runs on a host with FaceGate's host tools (facegate_host); on a board "
                           "use rknnlite" % backend)
    runner_class = getattr(importlib.import_module(module_name), class_name)
    runner = runner_class(spec, path, threads=threads, **options)
    try:
        runner.warm_up(warmup_size or spec.input.size)
    except Exception:
        runner.close()
        raise
    return runner
