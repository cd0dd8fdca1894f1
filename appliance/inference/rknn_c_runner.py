"""RKNN C backend: the NPU through Rockchip's C runtime, called with ctypes.

The first RV1126 has no Python runtime FaceGate can use: rknnlite v1 exists only for CPython
3.6/3.7 on armv7l. Its vendor image does have the C library, `librknn_api.so` (RKNPU1), and
its API is six calls: rknn_init, rknn_query, rknn_inputs_set, rknn_run, rknn_outputs_get (with
rknn_outputs_release) and rknn_destroy. RKNPU2's `librknnrt.so` (RV1126B) has the same calls;
its tensor attribute is longer and its rknn_init takes a fifth argument, so one runner serves
both. Which layout applies is read from what the library exports (RKNPU2 alone has
rknn_create_mem), never from its file name: some RKNPU2 images link librknn_api.so to
librknnrt.so, and RKNPU1 calls into RKNPU2 corrupt memory.

RKNPU1's librknn_api.so is a small wrapper: rknn_init loads librknn_runtime.so and the Vivante
driver's user-space libraries, and needs the galcore kernel driver's /dev/galcore. When
rknn_init fails, the error names whichever of those is missing.

As with rknnlite, the .rknn file has the colour order, mean and std folded in: the camera's
uint8 BGR pixels go in as they are (NHWC), and the runtime returns float32 outputs.
"""

import ctypes
from pathlib import Path
from typing import List, Optional

import numpy as np

from appliance.errors import BackendError
from appliance.inference.base import Runner
from appliance.inference.rknn_files import RKNPU1_LIBRARY, RKNPU2_LIBRARY, open_runtime, read_recipe
from appliance.inference.rknnlite_runner import check_input
from appliance.models import ModelSpec

_MAX_DIMS = 16
_MAX_NAME = 256
_QUERY_IN_OUT_NUM, _QUERY_OUTPUT_ATTR = 0, 2
_TENSOR_UINT8 = 3
_FORMAT_NHWC = 1

# The runtime's error codes (rknn_api.h), for messages a person can act on.
ERRORS = {
    -1: "failed", -2: "timed out", -3: "the NPU device is unavailable (is the NPU driver loaded?)",
    -4: "out of memory", -5: "invalid parameter", -6: "the model file is invalid",
    -7: "invalid context", -8: "invalid input", -9: "invalid output",
    -10: "the runtime does not match the NPU driver (update the vendor image's runtime and driver together)",
    -11: "the pre-compiled model does not suit this driver", -12: "the model's optimisation level does not suit this driver",
    -13: "the model was converted for another chip (convert it for this board's target)",
}


class _InOutNum(ctypes.Structure):
    _fields_ = [("n_input", ctypes.c_uint32), ("n_output", ctypes.c_uint32)]


_ATTR_COMMON = [("index", ctypes.c_uint32), ("n_dims", ctypes.c_uint32), ("dims", ctypes.c_uint32 * _MAX_DIMS),
                ("name", ctypes.c_char * _MAX_NAME), ("n_elems", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("fmt", ctypes.c_int), ("type", ctypes.c_int), ("qnt_type", ctypes.c_int), ("fl", ctypes.c_int8)]


class _AttrV1(ctypes.Structure):
    """RKNPU1's rknn_tensor_attr."""
    _fields_ = _ATTR_COMMON + [("zp", ctypes.c_uint32), ("scale", ctypes.c_float)]


class _AttrV2(ctypes.Structure):
    """RKNPU2's rknn_tensor_attr: RKNPU1's with the strides after it."""
    _fields_ = _ATTR_COMMON + [("zp", ctypes.c_int32), ("scale", ctypes.c_float), ("w_stride", ctypes.c_uint32),
                               ("size_with_stride", ctypes.c_uint32), ("pass_through", ctypes.c_uint8),
                               ("h_stride", ctypes.c_uint32)]


class _Input(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("buf", ctypes.c_void_p), ("size", ctypes.c_uint32),
                ("pass_through", ctypes.c_uint8), ("type", ctypes.c_int), ("fmt", ctypes.c_int)]


class _Output(ctypes.Structure):
    _fields_ = [("want_float", ctypes.c_uint8), ("is_prealloc", ctypes.c_uint8), ("index", ctypes.c_uint32),
                ("buf", ctypes.c_void_p), ("size", ctypes.c_uint32)]


def context_type(machine_is_32_bit: Optional[bool] = None):
    """rknn_context is 32 bits on 32-bit ARM and 64 bits elsewhere (rknn_api.h)."""
    if machine_is_32_bit is None:
        machine_is_32_bit = ctypes.sizeof(ctypes.c_void_p) == 4
    return ctypes.c_uint32 if machine_is_32_bit else ctypes.c_uint64


def open_library(name: str = "") -> ctypes.CDLL:
    """The runtime `name`, or the first of RKNPU1's and RKNPU2's that loads; a clear error otherwise."""
    return open_runtime("rknn_c", [name] if name else [RKNPU1_LIBRARY, RKNPU2_LIBRARY])


# what RKNPU1's librknn_api.so loads at rknn_init, from the SDK's
# external/rknpu/drivers/linux-armhf-puma/usr/lib (board/README.md lists where each comes from)
RKNPU1_DRIVER_LIBRARIES = ("librknn_runtime.so", "libOpenVX.so", "libOpenVXU.so", "libGAL.so", "libArchModelSw.so",
                           "libCLC.so", "libOvx12VXCBinary.so", "libneuralnetworks.so")
GALCORE_DEVICE = "/dev/galcore"


def api_generation(library: ctypes.CDLL) -> int:
    """2 for RKNPU2's runtime (it alone exports rknn_create_mem), else 1."""
    return 2 if hasattr(library, "rknn_create_mem") else 1


def missing_rknpu1_parts(device: str = GALCORE_DEVICE) -> List[str]:
    """What RKNPU1's rknn_init needs and this system lacks: libraries that do not load (with the
    loader's reason) and the NPU driver's device."""
    missing = []
    for name in RKNPU1_DRIVER_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError as err:
            missing.append("%s (%s)" % (name, str(err).split(": ")[-1]))
    if missing:
        missing = ["libraries %s: copy the SDK's external/rknpu/drivers/linux-armhf-puma/usr/lib/ into /usr/lib"
                   % ", ".join(missing)]
    if not Path(device).exists():
        missing.append("%s: the NPU driver is not loaded (insmod galcore.ko, from the same drivers folder)" % device)
    return missing


def _shape(attr, rknpu2: bool) -> tuple:
    dims = [attr.dims[i] for i in range(attr.n_dims)]
    return tuple(dims if rknpu2 else dims[::-1])  # RKNPU1 lists dims innermost first, RKNPU2 outermost


class RknnCRunner(Runner):
    backend = "rknn_c"

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 0, library: str = "", **_options) -> None:
        super().__init__(spec, path, threads)
        self._context = None
        self._lib = open_library(library)  # first: without the runtime no model file matters
        self.recipe = read_recipe(path, spec.sha256)
        self._rknpu2 = api_generation(self._lib) == 2
        self._attr_type = _AttrV2 if self._rknpu2 else _AttrV1
        self._context_type = context_type()
        model = path.read_bytes()
        self._model = ctypes.create_string_buffer(model, len(model))  # the runtime may keep a pointer
        context = self._context_type(0)
        init_args = [ctypes.byref(context), self._model, ctypes.c_uint32(len(model)), ctypes.c_uint32(0)]
        if self._rknpu2:
            init_args.append(None)  # rknn_init_extend*
        code = self._lib.rknn_init(*init_args)
        if code in (-1, -3) and not self._rknpu2:  # failed, device unavailable: not a bad model file
            missing = missing_rknpu1_parts()
            if missing:
                raise BackendError("rknn_init on %s failed with %d: librknn_api.so (RKNPU1) is a wrapper, and what it "
                                   "loads is missing here: %s" % (path.name, code, "; ".join(missing)))
        self._check(code, "rknn_init")
        self._context = context
        try:
            counts = _InOutNum()
            self._query(_QUERY_IN_OUT_NUM, counts)
            if counts.n_input != 1:
                raise BackendError("%s has %d inputs; FaceGate's models have one" % (path.name, counts.n_input))
            self._output_shapes = [_shape(self._attr(_QUERY_OUTPUT_ATTR, index), self._rknpu2)
                                   for index in range(counts.n_output)]
        except Exception:
            self.close()
            raise

    def _check(self, code: int, call: str) -> None:
        if code < 0:
            raise BackendError("%s on %s failed with %d: %s" % (call, self.path.name, code,
                                                                ERRORS.get(code, "an error rknn_api.h does not list")))

    def _query(self, command: int, info) -> None:
        self._check(self._lib.rknn_query(self._context, command, ctypes.byref(info), ctypes.sizeof(info)),
                    "rknn_query")

    def _attr(self, command: int, index: int):
        attr = self._attr_type()
        attr.index = index
        self._query(command, attr)
        return attr

    def run(self, images_bgr: np.ndarray) -> List[np.ndarray]:
        batch = check_input(self, images_bgr, self.recipe)
        entry = _Input(index=0, buf=batch.ctypes.data, size=batch.nbytes, pass_through=0,
                       type=_TENSOR_UINT8, fmt=_FORMAT_NHWC)
        self._check(self._lib.rknn_inputs_set(self._context, 1, ctypes.byref(entry)), "rknn_inputs_set")
        self._check(self._lib.rknn_run(self._context, None), "rknn_run")
        count = len(self._output_shapes)
        outputs = (_Output * count)()
        for index in range(count):
            outputs[index].want_float = 1
            outputs[index].index = index
        self._check(self._lib.rknn_outputs_get(self._context, count, outputs, None), "rknn_outputs_get")
        try:
            results = []
            for index in range(count):
                size = outputs[index].size // 4
                values = np.ctypeslib.as_array(ctypes.cast(outputs[index].buf, ctypes.POINTER(ctypes.c_float)),
                                               shape=(size,))
                results.append(values.copy().reshape(self._output_shapes[index]))  # the runtime frees its buffer
            return results
        finally:
            self._lib.rknn_outputs_release(self._context, count, outputs)

    def close(self) -> None:
        if self._context is not None:
            self._lib.rknn_destroy(self._context)
            self._context = None
