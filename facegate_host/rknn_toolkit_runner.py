"""RKNN toolkit backend: the toolkit's simulator on an x86 host, or a board over USB (adb).

The simulator cannot run a finished .rknn file, so this backend rebuilds the model from the
recipe beside it (the same prepared ONNX, dtype and calibration set), which gives the same
quantisation the file has. With `models.rknn_device` set it loads the .rknn file on that
connected board instead, as the original project did during development.
"""

from pathlib import Path

from appliance.errors import BackendError
from appliance.inference.rknn_files import check_code, read_recipe
from appliance.inference.rknnlite_runner import RknnApiRunner
from appliance.models import ModelSpec


class RknnToolkitRunner(RknnApiRunner):
    backend = "rknn"
    logger = "the toolkit"

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 0, device: str = "", **_options) -> None:
        super().__init__(spec, path, threads)
        self.recipe = read_recipe(path, spec.sha256)
        try:
            from facegate_host.convert import toolkit
            toolkit.installed_toolkit()
        except ImportError as err:
            raise BackendError("backend 'rknn' needs Rockchip's toolkit: run 'make rknn-env' and use "
                               ".rknn-venv/bin/facegate") from err
        if device:
            self._rknn = toolkit.rknn_class()(verbose=False)
            try:
                check_code(self._rknn.load_rknn(str(path)), "load_rknn", path)
                check_code(self._rknn.init_runtime(target=self.recipe["target"], device_id=device),
                           "init_runtime on board %s" % device, path)
            except Exception:
                self.close()
                raise
        else:
            self._rknn = toolkit.build(self.recipe, Path(path).parent)
            try:
                check_code(self._rknn.init_runtime(), "init_runtime (simulator)", path)
            except Exception:
                self.close()
                raise
