"""The NPU path on Rockchip's simulator: conversion, recipes, the quantised pipeline against
ONNX Runtime, the quantisation check and the board bundle. Run by `make test-board` in .rknn-venv."""

import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import LFW, MODELS, ROOT, SEED, SHARED, run_cli

pytestmark = pytest.mark.board
TARGET = "rv1126b"


@pytest.fixture(scope="session")
def npu_models(tmp_path_factory):
    """A models folder with the ONNX files linked in and the rv1126b .rknn files converted."""
    pytest.importorskip("rknn.api", reason="the toolkit is missing: run these with `make test-board`")
    folder = tmp_path_factory.mktemp("npu-models")
    for path in MODELS.iterdir():
        if path.is_file():
            (folder / path.name).symlink_to(path)
    result = subprocess.run([str(ROOT / "tools" / "convert-rknn"), "--target", TARGET, "--models", str(folder),
                             "--detector-dtypes", "fp16", "--embedder-dtypes", "fp16",
                             "--calibration-count", "40", "--lfw", str(LFW)],
                            env=dict(os.environ, RKNN_PYTHON=sys.executable), capture_output=True, text=True,
                            timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture(scope="session")
def seed_gallery(tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "gallery.db"
    result = run_cli("enroll", "--from-dir", SEED / "gallery", "--gallery", path)
    assert result.returncode == 0, result.stderr
    return path


def test_conversion_writes_the_models_and_their_recipes(npu_models):
    from appliance.inference.rknn_files import read_recipe
    from appliance.models import get_spec

    detector = npu_models / "rknn" / TARGET / "retinaface_mnet025_pytorch-fp16-320.rknn"
    embedder = npu_models / "rknn" / TARGET / "mobilefacenet_ms1m-fp16.rknn"
    spec = get_spec("mobilefacenet_ms1m")
    recipe = read_recipe(embedder, spec.sha256)
    assert recipe["toolkit_dtype"] == "float16" and recipe["input_size"] == [112, 112]
    # RGB model fed BGR pixels: mean and std reversed with the channels
    assert recipe["mean"] == list(spec.input.mean)[::-1] and recipe["std"] == list(spec.input.std)[::-1]
    assert recipe["input"] == "uint8 NHWC BGR"
    assert read_recipe(detector, get_spec("retinaface_mnet025_pytorch").sha256)["mean"] == [104.0, 117.0, 123.0]
    assert len(list((npu_models / "rknn" / TARGET / recipe["calibration"]).glob("*.npy"))) == recipe["calibration_count"]
    from appliance.errors import ModelError

    with pytest.raises(ModelError, match="another version"):
        read_recipe(embedder, "0" * 64)


def test_a_detector_converted_for_320_refuses_another_size(npu_models):
    from appliance.errors import BackendError
    from appliance.inference import load_runner
    from appliance.inference.rknn_files import rknn_path
    from appliance.models import get_spec

    spec = get_spec("retinaface_mnet025_pytorch")
    runner = load_runner("rknn", spec, rknn_path(npu_models, TARGET, spec.model_id, "fp16", 320), (320, 320))
    try:
        with pytest.raises(BackendError, match="320x320"):
            runner.run(np.zeros((1, 480, 480, 3), np.uint8))
    finally:
        runner.close()


def faces(output: str):
    """Per face of `facegate identify`, by position: (top-left corner, name or 'unknown', distance or None)."""
    found = []
    for line in output.splitlines():
        seen = re.match(r"\s+\d+\. \((\d+), (\d+)\)-\(\d+, \d+\) (.*)$", line)
        if seen:
            label = seen.group(3)
            distance = re.search(r"distance (\d+\.\d+)", label)
            found.append(((int(seen.group(1)), int(seen.group(2))),
                          "unknown" if label.startswith("unknown") else label.split(" (")[0],
                          float(distance.group(1)) if distance else None))
    return sorted(found)


def test_identify_on_the_simulator_names_the_same_people_as_onnx_runtime(npu_models, seed_gallery, tmp_path):
    """The NPU's distances stay within TOLERANCE of ONNX Runtime's, so both name the same people,
    except a face that close to the door's threshold, which any two copies of a model may put on
    either side of it."""
    from facegate_host.bundle import board_config

    tolerance = 0.04
    board = board_config(ROOT, TARGET).models  # the dtypes the RV1126B boots with
    config = tmp_path / "npu.toml"
    config.write_text('[models]\nrknn_detector_dtype = "%s"\nrknn_embedder_dtype = "%s"\n'
                      % (board.rknn_detector_dtype, board.rknn_embedder_dtype))
    door_detector = tmp_path / "door-detector.toml"  # ONNX Runtime detecting as the NPU does, at 320
    door_detector.write_text("[detector]\nidentify_input_size = 0\n")
    listed = run_cli("people", "list", "--gallery", seed_gallery, "--models-dir", npu_models)
    threshold = float(re.search(r"threshold (\d\.\d+)", listed.stdout).group(1))
    probes = sorted((SEED / "probes").iterdir())
    differences, named_faces, borderline = [], 0, 0
    for probe in probes:
        onnx = run_cli("identify", probe, "--gallery", seed_gallery, "--models-dir", npu_models,
                       "--config", door_detector)
        npu = run_cli("identify", probe, "--gallery", seed_gallery, "--models-dir", npu_models, "--config", config,
                      "--backend", "rknn", "--rknn-target", TARGET)
        assert onnx.returncode == 0 and npu.returncode == 0, npu.stderr[-2000:]
        expected, got = faces(onnx.stdout), faces(npu.stdout)
        named_faces += sum(face[1] != "unknown" for face in expected)
        if len(expected) != len(got):
            differences.append((probe.name, expected, got))
            continue
        for want, have in zip(expected, got):
            near = want[2] is not None and abs(want[2] - threshold) <= tolerance
            borderline += near
            apart = want[2] is not None and have[2] is not None and abs(want[2] - have[2]) > tolerance
            if apart or (want[1] != have[1] and not near):
                differences.append((probe.name, want, have))
    assert named_faces - borderline >= 5  # the probes really name people, most of them clearly
    assert differences == []


def test_the_quantisation_check_writes_its_table_and_figures(npu_models, tmp_path):
    figures = tmp_path / "check.json"
    result = subprocess.run([str(ROOT / "tools" / "convert-rknn"), "--target", TARGET, "--models", str(npu_models),
                             "--detector-dtypes", "i8,fp16", "--embedder-dtypes", "i8,fp16", "--liveness-dtypes", "fp16,i8",
                             "--nuaa", str(SHARED / "data" / "nuaa-dev"), "--check", "--folds", "1",
                             "--calibration-count", "40", "--lfw", str(LFW), "--json", str(figures)],
                            env=dict(os.environ, RKNN_PYTHON=sys.executable), capture_output=True, text=True,
                            timeout=1800, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedder    cosine mean" in result.stdout and "detector    faces" in result.stdout
    report = json.loads(figures.read_text())
    embedder, detector = report["embedder"], report["detector"]
    assert embedder["fp16"]["cosine_mean"] > embedder["i8"]["cosine_mean"] > 0.95
    assert embedder["fp16"]["cosine_worst"] > 0.98
    assert abs(embedder["fp16"]["lfw_accuracy"] - embedder["float"]["lfw_accuracy"]) < 0.01
    assert detector["fp16"]["faces"] > 150 and detector["fp16"]["found"] > 0.99
    assert detector["fp16"]["landmark_error_mean"] < detector["i8"]["landmark_error_mean"] < 0.1
    # the liveness pair: fp16 gives the door the same decisions, 8 bits moves some scores
    liveness = report["liveness"]
    assert liveness["fp16"]["frames"] > 300 and liveness["fp16"]["score_difference_max"] < 0.01
    assert liveness["fp16"]["frames_changing_side"] == 0
    assert liveness["fp16"]["apcer"] == liveness["float"]["apcer"] and liveness["fp16"]["bpcer"] == liveness["float"]["bpcer"]
    assert liveness["fp16"]["score_difference_mean"] < liveness["i8"]["score_difference_mean"] < 0.05
    assert "liveness    score moved" in result.stdout
    assert [row["detector"] for row in report["pipeline"]] == ["fp16"]
    assert abs(report["pipeline"][0]["lfw_accuracy"] - embedder["float"]["lfw_accuracy"]) < 0.01


def test_the_bundle_holds_what_the_board_needs_and_installs_into_a_root(npu_models, tmp_path):
    from facegate_host.bundle import build

    tarball = build("rv1126b", ROOT, npu_models, tmp_path / "bundle.tar.gz", SEED / "probes" / "obama.jpg")
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "unpacked")
    bundle = next((tmp_path / "unpacked").iterdir())
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    files = set(manifest["files"])
    assert manifest["npu_target"] == "rv1126b"
    for expected in ("overlay/etc/init.d/S95facegate", "overlay/etc/facegate/config.toml",
                     "overlay/etc/udev/rules.d/99-facegate-relay.rules", "install.sh", "meta",
                     "models/rknn/rv1126b/retinaface_mnet025_pytorch-fp16-320.rknn",
                     "models/rknn/rv1126b/retinaface_mnet025_pytorch-fp16-320.rknn.json",
                     "models/rknn/rv1126b/mobilefacenet_ms1m-fp16.rknn",
                     "models/rknn/rv1126b/mobilefacenet_ms1m-fp16.rknn.json",
                     # the CPU fallback and the self-test's reference face
                     "models/retinaface_mnet025.retinaface_export.onnx",
                     "models/mobilefacenet_ms1m.mobilefacenet_ms1m_export.onnx",
                     "models/mobilefacenet_ms1m.mobilefacenet_ms1m_export.int8.onnx",
                     "models/mobilefacenet_ms1m.mobilefacenet_ms1m_export.int8.onnx.source-sha256",
                     "models/selftest/reference.json", "models/selftest/face.jpg"):
        assert expected in files, expected
    wheels = [name for name in files if name.startswith("wheelhouse/")]
    for package in ("facegate-", "transitions-", "six-", "paho_mqtt-2.", "pyserial-"):
        assert any(name.startswith("wheelhouse/" + package) for name in wheels), package
    # the compiled packages, for the board's Python and machine only
    for package in ("numpy-", "opencv_python_headless-", "onnxruntime-", "rknn_toolkit_lite2-"):
        found = [name for name in wheels if name.startswith("wheelhouse/" + package)]
        assert len(found) == 1 and found[0].endswith("aarch64.whl"), (package, found)
    assert not [name for name in wheels if "x86_64" in name]
    assert not any(name.endswith((".npy", ".pth", ".ckpt")) for name in files)  # no calibration data or checkpoints
    assert len([name for name in files if name.endswith(".onnx")]) == 5  # detector, embedder, its 8-bit copy, liveness pair
    assert "rknn_target = \"rv1126b\"" in (bundle / "overlay/etc/facegate/config.toml").read_text()

    root = tmp_path / "target"
    installed = subprocess.run(["sh", str(bundle / "install.sh"), "--root", str(root), "--python", sys.executable],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    assert (root / "usr/share/facegate/models/rknn/rv1126b/mobilefacenet_ms1m-fp16.rknn").is_file()
    assert (root / "usr/lib/facegate/current/python/appliance/inference/rknnlite_runner.py").is_file()
    # the decision rule needs the embedder's calibration on the board
    assert (root / "usr/lib/facegate/current/python/appliance/models/calibration/mobilefacenet_ms1m.json").is_file()
    assert (root / "usr/lib/facegate/current/python/numpy").is_dir() and (root / "usr/lib/facegate/current/python/rknnlite").is_dir()
    launcher = (root / "usr/bin/facegate").read_text()
    assert '$lib/current/python' in launcher and "from appliance.cli import main" in launcher
    assert os.readlink(root / "usr/lib/facegate/current").startswith("versions/0.")  # a version beside others
    # the installed appliance, run by this host's Python: the board's compiled packages are for
    # aarch64, so the host's own numpy, OpenCV and ONNX Runtime stand in for them (the emulated
    # root runs the real launcher with the real ones)
    view = tmp_path / "installed-appliance"
    view.mkdir()
    (view / "appliance").symlink_to(root / "usr/lib/facegate/current/python/appliance")

    def facegate(*argv):
        code = ("import sys; sys.path.insert(0, %r); import appliance; assert appliance.__file__.startswith(%r); "
                "from appliance.cli import main; sys.exit(main(%r))" % (str(view), str(view), list(argv)))
        return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=""),
                              capture_output=True, text=True, timeout=120)

    check = facegate("config", "--check", str(root / "etc/facegate/config.toml"))
    # the installed command runs the board's checks: before the site's secrets are provisioned it
    # names each missing file in one line, as `facegate run` would refuse them
    assert check.returncode == 2 and check.stderr.count("\n") == 1, check.stderr
    for key in ("ca_file", "key_file", "signing_key_file"):
        assert "mqtt.%s /etc/facegate/secrets/" % key in check.stderr, check.stderr
    # with no NPU here, the installed command runs the bundle's CPU fallback and passes its self-test
    models = root / "usr/share/facegate/models"
    selftest = facegate("selftest", "--config", str(root / "etc/facegate/config.toml"), "--backend", "onnxruntime",
                        "--models-dir", str(models), "--no-relay", "--no-camera")
    assert "found where the host found it" in selftest.stdout, selftest.stdout + selftest.stderr
    # and it agrees with config --check: the site's secrets are not there yet (test-emulated puts them
    # in its root and then passes), so the self-test fails on them, naming the same files
    assert selftest.returncode == 1 and "mqtt            FAIL" in selftest.stdout, selftest.stdout
    for key in ("ca_file", "key_file", "signing_key_file"):
        assert "mqtt.%s /etc/facegate/secrets/" % key in selftest.stdout, selftest.stdout
    # a damaged bundle is refused before anything is installed
    (bundle / "models/rknn/rv1126b/mobilefacenet_ms1m-fp16.rknn").write_bytes(b"damaged")
    again = subprocess.run(["sh", str(bundle / "install.sh"), "--root", str(tmp_path / "other")],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "damaged" in again.stderr
    assert not (tmp_path / "other").exists()


def test_a_target_of_the_other_toolkit_is_refused_before_any_work():
    result = subprocess.run([str(ROOT / "tools" / "convert-rknn"), "--target", "rv1126"],
                            env=dict(os.environ, RKNN_PYTHON=sys.executable), capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert "rv1126 needs Rockchip's rknn-toolkit;" in result.stderr and "rknn-toolkit2" in result.stderr
