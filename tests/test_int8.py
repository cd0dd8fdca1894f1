"""The embedder's 8-bit copy on CPUs other than this one: measured where it runs against the float
model's embeddings of a fixed set of faces, refused outside the calibration's tolerance.

The CPU without VNNI is a real one to the code: QEMU's user-mode emulator presents a Haswell
(AVX2 and FMA, no AVX-512, no VNNI), so ONNX Runtime picks the integer kernels such a host uses.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

from appliance.config import from_dict
from appliance.models import (get_spec, installed_path, int8_check_set, int8_path, int8_stamp, int8_stamp_text,
                              int8_verdict)
from appliance.vision.pipeline import FacePipeline

NO_VNNI_CPU = "Haswell-noTSX"


def _private_models(models_dir, folder):
    """The installed models seen through links, so a test may replace the 8-bit copy alone."""
    for path in models_dir.iterdir():
        if path.is_file() and ".int8." not in path.name:
            (folder / path.name).symlink_to(path)
    config = from_dict({"models": {"dir": str(folder)}})
    source = installed_path(get_spec(config.models.embedder), folder)
    shutil.copy(int8_check_set(installed_path(get_spec(config.models.embedder), models_dir)), int8_check_set(source))
    return config, source


def _quantise(source, target, crops, seven_bit_weights):
    """A copy as facegate_host/convert/onnx_int8.py makes it; with `seven_bit_weights` False, as it
    was made before (8-bit weights, which VPMADDUBSW saturates on x86 without VNNI)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from appliance.inference.base import to_float_tensor

    if seven_bit_weights:
        from facegate_host.convert.onnx_int8 import quantise

        quantise(source, target, crops, get_spec("mobilefacenet_ms1m").input)
        return
    spec = get_spec("mobilefacenet_ms1m").input

    class Faces(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter({spec.name: to_float_tensor(crop[None], spec)} for crop in crops)

        def get_next(self):
            return next(self._feeds, None)

    quantize_static(str(source), str(target), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def test_a_copy_out_of_tolerance_is_refused_and_the_door_embeds_with_the_float_model(models_dir, tmp_path, caplog):
    config, source = _private_models(models_dir, tmp_path)
    # activation ranges measured on blank faces: real faces overflow them, as a broken copy would
    with np.load(int8_check_set(source)) as saved:
        blank = [np.full_like(saved["crops"][0], 128)] * 4
    _quantise(source, int8_path(source), blank, seven_bit_weights=True)
    int8_stamp(source).write_text(int8_stamp_text(source) + "\n")
    with caplog.at_level(logging.WARNING, logger="appliance.vision.pipeline"):
        pipeline = FacePipeline.from_config(config)
    try:
        assert pipeline.embedder.runner.path == source  # the float model
        assert pipeline.int8_verdict["refused"]
    finally:
        pipeline.close()
    lines = [r.getMessage() for r in caplog.records if "8-bit" in r.getMessage()]
    assert len(lines) == 1 and "out of tolerance on this CPU" in lines[0] and "float model" in lines[0], lines
    kept = json.loads(int8_verdict(source).read_text())
    assert kept["refused"] == pipeline.int8_verdict["refused"] and kept["stamp"] == int8_stamp_text(source)
    # the self-test says the same, as a warning the installer sees
    from appliance.selftest import run_checks

    checks = {c.name: c for c in run_checks(config, relay=False, camera=False)}
    assert checks["8-bit embedder"].warning and "float model is used" in checks["8-bit embedder"].detail


def test_the_installed_copy_is_used_where_it_is_within_tolerance(models_dir, tmp_path):
    config, source = _private_models(models_dir, tmp_path)
    for suffix in (".onnx", ".onnx.source-sha256"):
        shutil.copy(installed_path(get_spec(config.models.embedder), models_dir).with_name(
            source.stem + ".int8" + suffix), source.with_name(source.stem + ".int8" + suffix))
    pipeline = FacePipeline.from_config(config)
    try:
        assert pipeline.embedder.runner.path == int8_path(source)
        figures = pipeline.int8_verdict["figures"]
        assert pipeline.int8_verdict["refused"] is None and figures["faces"] >= 100
        assert figures["cosine_worst"] >= pipeline.int8_verdict["tolerance"]["cosine_worst"]
    finally:
        pipeline.close()


_MEASURE = """
import json, sys
from pathlib import Path
from appliance.inference import load_runner
from appliance.models import get_spec
from appliance.vision import int8_check
source = Path(sys.argv[1])
for copy in sys.argv[2:]:
    runner = load_runner("onnxruntime", get_spec("mobilefacenet_ms1m"), Path(copy), None, 1)
    print(json.dumps(int8_check.measure(runner, source)), flush=True)
"""


def test_on_a_cpu_without_vnni_the_copy_stays_within_tolerance_where_8_bit_weights_saturated(models_dir, tmp_path):
    emulator = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if emulator is None:
        pytest.fail("qemu-x86_64-static is missing: 'make system-deps' installs Debian's qemu-user-static")
    config, source = _private_models(models_dir, tmp_path)
    installed = int8_path(installed_path(get_spec(config.models.embedder), models_dir))
    old = tmp_path / "eight-bit-weights.onnx"
    with np.load(int8_check_set(source)) as saved:
        crops = list(saved["crops"][:50])  # ranges as good as the real calibration's, for this test
    _quantise(source, old, crops, seven_bit_weights=False)
    result = subprocess.run([emulator, "-cpu", NO_VNNI_CPU, sys.executable, "-c", _MEASURE, str(source),
                             str(installed), str(old)], cwd=ROOT, capture_output=True, text=True, timeout=1500,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    current, before = (json.loads(line) for line in result.stdout.splitlines())
    assert "avx2" in current["cpu"].split() and "vnni" not in current["cpu"]
    assert current["refused"] is None, current
    # the same integers as on this host's CPU: the figures agree to rounding
    here = json.loads(subprocess.run([sys.executable, "-c", _MEASURE, str(source), str(installed)], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)
    for name in ("cosine_mean", "cosine_p1", "cosine_worst"):
        assert abs(current["figures"][name] - here["figures"][name]) < 0.002, (current, here)
    assert before["refused"] and "cosine" in before["refused"], before  # the saturation, caught there
