"""Model installation from a mirror and loading against the manifest."""

import shutil

import numpy as np
import pytest

from appliance.errors import BackendError, ModelError
from appliance.inference import load_runner
from appliance.models import get_spec, installed_path, load_manifest
from appliance.models.install import install

from conftest import SHARED, run_cli

MIRROR = SHARED / "models"


def test_manifest_declares_every_model_fully():
    for model_id, spec in load_manifest().items():
        assert len(spec.sha256) == 64 and spec.role in {"detector", "embedder", "liveness"}
        assert len(spec.outputs) == len(spec.output_roles)
        assert (MIRROR / spec.file).is_file(), "manifest names %s, not in the mirror" % spec.file


def test_install_copies_verifies_and_prepares(tmp_path):
    lines = install(["mobilefacenet_128d", "retinaface_mnet025"], MIRROR, tmp_path / "m")
    assert [line.split()[-1] for line in lines] == ["copied", "copied"]
    spec = get_spec("retinaface_mnet025")
    assert installed_path(spec, tmp_path / "m").name == "retinaface_mnet025.symbolic_hw.onnx"
    assert install(["mobilefacenet_128d"], MIRROR, tmp_path / "m")[0].endswith("present")


def test_hash_mismatch_names_file_and_both_hashes(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "mobilefacenet_128d.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelError) as err:
        install(["mobilefacenet_128d"], mirror, tmp_path / "m")
    message = str(err.value)
    assert "mobilefacenet_128d.onnx" in message
    assert get_spec("mobilefacenet_128d").sha256 in message
    assert "actual 5" not in message and "actual " in message
    assert not (tmp_path / "m" / "mobilefacenet_128d.onnx").exists()


def test_missing_mirror_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ModelError, match="does not exist; set FACEGATE_MODEL_MIRROR"):
        install(["mobilefacenet_128d"], tmp_path / "nowhere", tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not in the model mirror"):
        install(["mobilefacenet_128d"], tmp_path / "empty", tmp_path / "m")


def test_cli_install_from_missing_mirror_is_one_line(tmp_path):
    result = run_cli("models", "install", "--mirror", tmp_path / "nowhere", "--dir", tmp_path / "m")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "FACEGATE_MODEL_MIRROR" in result.stderr


def test_loading_an_uninstalled_model_says_run_make_models(tmp_path):
    with pytest.raises(ModelError, match="make models"):
        installed_path(get_spec("mobilefacenet_128d"), tmp_path)


def test_corrupt_model_file_is_a_model_error(tmp_path):
    spec = get_spec("mobilefacenet_128d")
    broken = tmp_path / spec.file
    broken.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match="cannot load"):
        load_runner("onnxruntime", spec, broken)


def test_unknown_backend_names_the_choices(models_dir):
    spec = get_spec("mobilefacenet_128d")
    with pytest.raises(BackendError, match="onnxruntime"):
        load_runner("tensorrt", spec, installed_path(spec, models_dir))


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_backends_agree_on_the_embedding(models_dir, backend):
    spec = get_spec("mobilefacenet_128d")
    rng = np.random.default_rng(1)
    face = rng.integers(0, 255, (1, 112, 112, 3), dtype=np.uint8)
    reference = load_runner("onnxruntime", spec, installed_path(spec, models_dir)).run(face)[0]
    with load_runner(backend, spec, installed_path(spec, models_dir)) as runner:
        output = runner.run(face)[0]
    assert output.shape == (1, 128)
    assert float(np.dot(output[0], reference[0])) > 0.999


@pytest.mark.parametrize("model_id", ["retinaface_mnet025_pytorch", "retinaface_mnet025"])
def test_detector_runs_at_several_sizes_after_preparation(models_dir, model_id):
    spec = get_spec(model_id)
    with load_runner("onnxruntime", spec, installed_path(spec, models_dir), (320, 320)) as runner:
        for height, width, anchors in ((320, 320, 4200), (480, 480, 9450), (256, 320, 3360)):
            outputs = runner.run(np.zeros((1, height, width, 3), np.uint8))
            assert outputs[spec.output_index("scores")].reshape(-1, 2).shape[0] == anchors


def test_copy_of_mirror_with_one_bad_file_refuses_only_that_file(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR, mirror)
    target = mirror / "minifasnet_v2_2.7.onnx"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(ModelError, match="minifasnet_v2_2.7.onnx: sha256 mismatch"):
        install(["mobilefacenet_128d", "minifasnet_v2_2.7"], mirror, tmp_path / "m")
    assert (tmp_path / "m" / "mobilefacenet_128d.onnx").is_file()


def test_the_casia_checkpoint_exports_to_onnx_that_embeds_like_pytorch(models_dir):
    import onnxruntime
    import torch

    from facegate_host.networks.mobilefacenet import MobileFaceNet

    spec = get_spec("mobilefacenet_casia_128d")
    path = installed_path(spec, models_dir)
    assert path.name == "mobilefacenet_casia_128d.mobilefacenet_export.onnx"
    network = MobileFaceNet()
    network.load_state_dict(torch.load(str(MIRROR / spec.file), map_location="cpu",
                                       weights_only=False)["net_state_dict"])
    network.eval()
    face = np.random.default_rng(3).uniform(-1, 1, (1, 3, 112, 96)).astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(face)).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"input": face})[0], expected, atol=1e-4)


def test_the_ms1m_state_dict_loads_strictly_and_exports_to_onnx_that_embeds_like_pytorch(models_dir):
    import onnxruntime
    import torch

    from facegate_host.networks.mobilefacenet_ms1m import MobileFaceNetMS1M

    spec = get_spec("mobilefacenet_ms1m")
    path = installed_path(spec, models_dir)
    assert path.name == "mobilefacenet_ms1m.mobilefacenet_ms1m_export.onnx"
    network = MobileFaceNetMS1M()
    network.load_state_dict(torch.load(str(MIRROR / spec.file), map_location="cpu", weights_only=True), strict=True)
    network.eval()
    faces = np.random.default_rng(4).uniform(-2, 2, (2, 3, 112, 112)).astype(np.float32)  # a batch: flip runs as one
    with torch.no_grad():
        expected = network(torch.from_numpy(faces)).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"input": faces})[0], expected, atol=1e-4)


def test_each_embedder_with_a_calibration_gives_tighter_thresholds_for_bigger_galleries():
    from appliance.recognition.calibration import load

    for model_id in ("mobilefacenet_ms1m", "mobilefacenet_casia_128d"):
        calibration = load(model_id)
        assert calibration is not None and calibration.model_id == model_id
        thresholds = [calibration.threshold(1e-3, [3] * people, 2) for people in (1, 10, 100, 1000)]
        assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] > thresholds[-1] + 0.05
        # the chosen threshold keeps the modelled false accepts within the target, and just so
        counts = [3] * 100
        at = calibration.false_accept(thresholds[2], counts, 2)
        assert at <= 1e-3 and calibration.false_accept(thresholds[2] + 0.01, counts, 2) > 1e-3
    assert load("mobilefacenet_128d") is None  # the seed's embedder: only an explicit threshold


def test_a_checkpoint_that_is_not_the_manifests_network_is_refused(tmp_path):
    import torch

    from facegate_host.prepare import mobilefacenet_export

    spec = get_spec("mobilefacenet_casia_128d")
    checkpoint = torch.load(str(MIRROR / spec.file), map_location="cpu", weights_only=False)
    del checkpoint["net_state_dict"]["linear1.conv.weight"]
    broken = tmp_path / "broken.ckpt"
    torch.save(checkpoint, str(broken))
    with pytest.raises(ModelError, match="not the MobileFaceNet checkpoint"):
        mobilefacenet_export(broken, tmp_path / "out.onnx", spec)
    assert not (tmp_path / "out.onnx").exists()


def test_a_112x96_embedder_takes_the_middle_of_the_aligned_crop():
    from appliance.vision.embedder import model_input

    aligned = np.tile(np.arange(112, dtype=np.uint8)[None, :, None], (112, 1, 3))
    crop = model_input(aligned, get_spec("mobilefacenet_casia_128d"))
    assert crop.shape == (112, 96, 3) and crop[0, 0, 0] == 8 and crop[0, -1, 0] == 103
    assert model_input(aligned, get_spec("mobilefacenet_128d")) is aligned


def test_a_prepared_file_from_an_older_recipe_is_made_again(tmp_path):
    spec = get_spec("mobilefacenet_casia_128d")
    install([spec.model_id], MIRROR, tmp_path)
    stamp = tmp_path / (spec.prepared_file + ".source-sha256")
    assert stamp.read_text().split() == spec.prepared_stamp.split()
    stamp.write_text(spec.sha256 + "\n")  # what an install before the batch-of-two export wrote
    with pytest.raises(ModelError, match="stale: run 'facegate models install'"):
        installed_path(spec, tmp_path)
    install([spec.model_id], MIRROR, tmp_path)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(installed_path(spec, tmp_path)), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((2, 3, 112, 96), np.float32)})[0].shape == (2, 128)


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_flip_as_one_batch_gives_the_embedding_of_two_single_runs(models_dir, backend):
    from appliance.vision.embedder import Embedder

    spec = get_spec("mobilefacenet_casia_128d")
    face = np.random.default_rng(5).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    with load_runner(backend, spec, installed_path(spec, models_dir), (112, 96)) as runner:
        batched = Embedder(runner, flip=True).embed(face)
        runner.runs_batches = False  # the per-image path the NPU backends take
        one_by_one = Embedder(runner, flip=True).embed(face)
        plain = Embedder(runner, flip=False).embed(face)
    assert np.allclose(batched, one_by_one, atol=1e-5)
    assert float(np.dot(batched, plain)) < 0.9999  # the mirror image really went in


def test_the_installed_command_finds_its_models_from_any_folder(tmp_path, models_dir):
    from appliance.models import recorded_models_file

    assert recorded_models_file().read_text().strip() == str(models_dir.resolve())  # written by 'make models'
    photo = SHARED / "data" / "seed-samples" / "probes" / "obama.jpg"
    result = run_cli("detect", photo, cwd=tmp_path, env={"FACEGATE_MODELS_DIR": ""})
    assert result.returncode == 0 and "1 face" in result.stdout, result.stderr
