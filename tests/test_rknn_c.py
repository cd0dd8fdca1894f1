"""The ctypes runner for Rockchip's C runtime (backend rknn_c), against a stand-in library.

No NPU and no vendor runtime run here, so tests/data/rknn_stub.c stands in for them: it is
built from rknn_api.h's ABI twice, as RKNPU1's librknn_api.so and as RKNPU2's librknnrt.so, and
echoes what it was given (channel means of the input pixels) so a test sees the structs, the
pixels and the outputs cross the boundary intact. A real board remains the runner's only proof
against the real runtime (board/README.md says so).
"""

import json
import shutil
import subprocess

import numpy as np
import pytest

from conftest import ROOT

from appliance.errors import BackendError
from appliance.inference import load_runner
from appliance.inference.rknn_c_runner import RknnCRunner, context_type, open_library
from appliance.inference.rknn_files import recipe_path
from appliance.models import get_spec

STUB = ROOT / "tests" / "data" / "rknn_stub.c"


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the stand-in runtime")
    folder = tmp_path_factory.mktemp("rknn-runtimes")
    for name, flags in (("librknn_api.so", []), ("librknnrt.so", ["-DRKNPU2"])):
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", *flags, "-o", str(folder / name), str(STUB)], check=True)
    return folder


def _model(folder, spec, outputs=1, length=128, height=112, width=112):
    path = folder / ("%s.rknn" % spec.model_id)
    path.write_bytes(b"FGSTUB %d %d %d %d\n" % (height, width, outputs, length))
    recipe_path(path).write_text(json.dumps({"source_sha256": spec.sha256, "input_size": [height, width]}))
    return path


@pytest.mark.parametrize("library", ["librknn_api.so", "librknnrt.so"])
def test_the_runner_passes_pixels_in_and_float_outputs_out_with_either_generations_structs(runtimes, tmp_path, library):
    spec = get_spec("mobilefacenet_ms1m")
    runner = load_runner("rknn_c", spec, _model(tmp_path, spec), library=str(runtimes / library))
    try:
        image = np.zeros((1, 112, 112, 3), np.uint8)
        image[..., 0], image[..., 1], image[..., 2] = 10, 20, 200  # B, G, R as the camera gives them
        (embedding,) = runner.run(image)
        assert embedding.shape == (1, 128)
        assert embedding.dtype == np.float32
        assert embedding[0, :6].tolist() == [10, 20, 200, 10, 20, 200]
    finally:
        runner.close()
    runner.close()  # twice is safe


def test_several_outputs_keep_their_order(runtimes, tmp_path):
    spec = get_spec("retinaface_mnet025_pytorch")
    runner = RknnCRunner(spec, _model(tmp_path, spec, outputs=3, length=30, height=320, width=320),
                         library=str(runtimes / "librknn_api.so"))
    outputs = runner.run(np.full((1, 320, 320, 3), 50, np.uint8))
    runner.close()
    assert [float(o[0, 0]) for o in outputs] == [50.0, 51.0, 52.0]


def test_a_frame_of_the_wrong_size_is_refused_before_the_runtime_sees_it(runtimes, tmp_path):
    spec = get_spec("mobilefacenet_ms1m")
    runner = RknnCRunner(spec, _model(tmp_path, spec), library=str(runtimes / "librknnrt.so"))
    with pytest.raises(BackendError, match="takes uint8 112x112"):
        runner.run(np.zeros((1, 100, 112, 3), np.uint8))
    runner.close()


def test_runtime_errors_are_named(runtimes, tmp_path, monkeypatch):
    spec = get_spec("mobilefacenet_ms1m")
    broken = tmp_path / "broken.rknn"
    broken.write_bytes(b"not a model")
    recipe_path(broken).write_text(json.dumps({"source_sha256": spec.sha256, "input_size": [112, 112]}))
    with pytest.raises(BackendError, match=r"rknn_init on broken.rknn failed with -6: the model file is invalid"):
        RknnCRunner(spec, broken, library=str(runtimes / "librknn_api.so"))
    monkeypatch.setenv("RKNN_STUB_NO_DEVICE", "1")
    with pytest.raises(BackendError, match=r"-3: the NPU device is unavailable"):
        RknnCRunner(spec, _model(tmp_path, spec), library=str(runtimes / "librknnrt.so"))
    # RKNPU1's wrapper: the error names what it loads and this system lacks, not only the driver
    with pytest.raises(BackendError) as caught:
        RknnCRunner(spec, _model(tmp_path, spec), library=str(runtimes / "librknn_api.so"))
    message = str(caught.value)
    assert "librknn_runtime.so (" in message and "libGAL.so" in message and "linux-armhf-puma" in message
    assert "/dev/galcore" in message and "\n" not in message


def test_the_api_generation_is_read_from_the_exports_not_the_file_name(runtimes, tmp_path):
    from appliance.inference.rknn_c_runner import api_generation

    # some RKNPU2 images link librknn_api.so to librknnrt.so: RKNPU1 calls would corrupt memory
    disguised = tmp_path / "librknn_api.so"
    shutil.copy(runtimes / "librknnrt.so", disguised)
    assert api_generation(open_library(str(disguised))) == 2
    assert api_generation(open_library(str(runtimes / "librknn_api.so"))) == 1
    spec = get_spec("mobilefacenet_ms1m")
    runner = RknnCRunner(spec, _model(tmp_path, spec), library=str(disguised))
    try:  # RKNPU2's structs: the pixels still cross intact
        image = np.zeros((1, 112, 112, 3), np.uint8)
        image[..., 0], image[..., 1], image[..., 2] = 10, 20, 200
        assert runner.run(image)[0][0, :3].tolist() == [10, 20, 200]
    finally:
        runner.close()


def test_a_system_without_the_runtime_gets_one_line_that_says_what_to_do():
    with pytest.raises(BackendError) as caught:
        open_library("librknn_api_not_here.so")
    message = str(caught.value)
    assert "\n" not in message
    assert "needs Rockchip's NPU runtime librknn_api_not_here.so" in message
    assert "--backend onnxruntime" in message


def test_the_context_handle_is_32_bits_on_32_bit_arm_only():
    import ctypes

    assert context_type(True) is ctypes.c_uint32
    assert context_type(False) is ctypes.c_uint64
