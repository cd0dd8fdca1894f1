"""The embedder's 8-bit copy on CPUs other than this one: measured where it runs against the float
model's embeddings of a fixed set of faces, refused outside the calibration's tolerance (the door
then embeds with the float model).

The CPU without VNNI is a real one to the code: QEMU's user-mode emulator presents a Haswell
(AVX2 and FMA, no AVX-512, no VNNI), so ONNX Runtime picks the integer kernels such a host uses.
"""

import dataclasses
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


def _quantise(source, target, crops):
    from facegate_host.convert.onnx_int8 import quantise

    quantise(source, target, crops, get_spec("mobilefacenet_ms1m").input)


def test_a_copy_out_of_tolerance_is_refused_and_the_door_embeds_with_the_float_model(models_dir, tmp_path, caplog):
    config, source = _private_models(models_dir, tmp_path)
    # activation ranges measured on blank faces: real faces overflow them, as a broken copy would
    with np.load(int8_check_set(source)) as saved:
        blank = [np.full_like(saved["crops"][0], 128)] * 4
    _quantise(source, int8_path(source), blank)
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


def test_on_a_cpu_without_vnni_the_copy_is_refused_and_the_door_embeds_with_the_float_model(models_dir, tmp_path):
    emulator = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if emulator is None:
        pytest.fail("qemu-x86_64-static is missing: 'make system-deps' installs Debian's qemu-user-static")
    config, source = _private_models(models_dir, tmp_path)
    installed = int8_path(installed_path(get_spec(config.models.embedder), models_dir))
    emulated = subprocess.run([emulator, "-cpu", NO_VNNI_CPU, sys.executable, "-c", _MEASURE, str(source),
                               str(installed)], cwd=ROOT, capture_output=True, text=True, timeout=1500,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    there = json.loads(emulated.stdout)
    here = json.loads(subprocess.run([sys.executable, "-c", _MEASURE, str(source), str(installed)], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)
    assert "avx2" in there["cpu"].split() and "vnni" not in there["cpu"]
    # VPMADDUBSW saturates there: the same copy, refused on that CPU alone
    assert there["refused"] and "cosine" in there["refused"], there
    assert here["refused"] is None, here
    assert there["figures"]["cosine_worst"] < here["figures"]["cosine_worst"] - 0.05
    # what the door on that CPU then runs: the float model, which names the group photos' people
    # as the calibrated copy does here (the float kernels agree across CPUs to rounding)
    float_only = dataclasses.replace(config, models=dataclasses.replace(config.models, embedder_int8=False))
    for chosen in (config, float_only):
        pipeline = FacePipeline.from_config(chosen)
        try:
            names = _group_photo_names(pipeline, tmp_path / ("g%d.db" % chosen.models.embedder_int8))
        finally:
            pipeline.close()
        assert names == sorted(["刘德华", "张学友", "郭富城", "黎明"]), (chosen.models.embedder_int8, names)


def _group_photo_names(pipeline, gallery):
    """The people the door's rule names in the seed's hardest group photo, the seed gallery enrolled."""
    from conftest import SEED

    from appliance.gallery.enrol import Enroller
    from appliance.gallery.index import GalleryIndex
    from appliance.gallery.store import GalleryStore
    from appliance.recognition.decision import decide, threshold_for
    from appliance.vision.pipeline import read_image

    store = GalleryStore(gallery, model_id=pipeline.embedder.model_id)
    try:
        Enroller(pipeline.config, pipeline, store).enrol_folder(SEED / "gallery")
        index = GalleryIndex(store)
        threshold = threshold_for(pipeline.config, store.model_id, index.template_counts()).value
        decisions = [decide(index.search(r.embedding), threshold, pipeline.config.matching)
                     for r in pipeline.analyse(read_image(SEED / "probes" / "4_2.jpg"))]
    finally:
        store.close()
    return sorted(d.match.person.name for d in decisions if d.accepted)
