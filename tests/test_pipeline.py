"""The vision pipeline with the real models on real photos."""

import numpy as np
import pytest

from appliance.vision.embedder import model_input, normalise

from appliance.errors import ImageError
from appliance.recognition.decision import threshold_for
from appliance.vision.detector import central_face
from appliance.vision.pipeline import read_image

from conftest import LFW, SEED, run_cli


def test_group_photo_has_four_faces_with_landmarks_inside_boxes(pipeline):
    image = read_image(SEED / "probes" / "4_2.jpg")
    faces = pipeline.detect(image)
    assert len(faces) == 4
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert face.score > 0.6
        assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
        assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))
        # eyes above the nose, nose above the mouth
        assert face.landmarks[:2, 1].max() < face.landmarks[2, 1] < face.landmarks[3:, 1].min()


def _without_refinement(pipeline):
    import dataclasses

    from appliance.vision.pipeline import FacePipeline

    detector = dataclasses.replace(pipeline.config.detector, refine_below_pixels=0)
    return FacePipeline(dataclasses.replace(pipeline.config, detector=detector), pipeline.detector,
                        pipeline.embedder)


def _error(landmarks, reference):
    """Mean landmark distance as a share of the reference's inter-ocular distance."""
    return float(np.linalg.norm(landmarks - reference, axis=1).mean() / np.linalg.norm(reference[0] - reference[1]))


def test_small_faces_get_their_landmarks_from_a_closer_look(pipeline):
    image = read_image(SEED / "probes" / "4_3.jpg")  # 1779 px wide: faces ~27 px in a 320 input
    plain = _without_refinement(pipeline)
    refined, coarse = pipeline.detect(image), plain.detect(image)
    assert len(refined) == len(coarse) == 4
    for fine, rough in zip(sorted(refined, key=lambda f: f.box[0]), sorted(coarse, key=lambda f: f.box[0])):
        # the reference: the detector on a 300 px tile around the face, shifted back by hand
        x, y = (int(v) for v in (rough.box[:2] + rough.box[2:]) / 2 - 150)
        tile = image[max(y, 0):y + 300, max(x, 0):x + 300]
        reference = central_face(plain.detect(tile), tile.shape).landmarks + [max(x, 0), max(y, 0)]
        # measured: 3-5% of the eye distance with the second look, 9-23% without
        assert _error(fine.landmarks, reference) < min(0.07, _error(rough.landmarks, reference) / 2)
    portrait = read_image(SEED / "probes" / "obama.jpg")  # a face large in the input: no second look
    assert np.array_equal(pipeline.detect(portrait)[0].landmarks, plain.detect(portrait)[0].landmarks)


def _embed(pipeline, name):
    image = read_image(LFW / "images" / name)
    face = central_face(pipeline.detect(image), image.shape)
    assert face is not None, name
    return pipeline.analyse_face(image, face).embedding


def test_same_person_closer_than_different_people(pipeline):
    first = _embed(pipeline, "Colin_Powell/Colin_Powell_0001.jpg")
    second = _embed(pipeline, "Colin_Powell/Colin_Powell_0002.jpg")
    other = _embed(pipeline, "Al_Pacino/Al_Pacino_0001.jpg")
    assert first.shape == (128,) and abs(np.linalg.norm(first) - 1) < 1e-5
    same = 1 - first @ second
    different = min(1 - first @ other, 1 - second @ other)
    threshold = threshold_for(pipeline.config, pipeline.embedder.model_id, [1]).value  # one photo against one
    assert same < threshold < different


def test_flip_averaging_changes_the_embedding(pipeline):
    image = read_image(SEED / "probes" / "obama.jpg")
    result = pipeline.analyse(image)[0]
    crop = model_input(result.aligned, pipeline.embedder.runner.spec)
    single = normalise(pipeline.embedder.runner.run(crop[None])[0].reshape(-1))
    assert pipeline.embedder.flip
    assert 0.9 < float(single @ result.embedding) < 0.9999


def test_quality_is_reported_for_each_face(pipeline):
    image = read_image(SEED / "probes" / "obama.jpg")
    results = pipeline.analyse(image, embed=False)
    assert len(results) == 1 and results[0].quality.passed, results[0].quality.reasons
    small = image[::6, ::6].copy()
    tiny = pipeline.analyse(small, embed=False)
    assert tiny and any(r.startswith("too small") for r in tiny[0].quality.reasons)


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 this is no jpeg", None])
def test_bad_images_raise_image_error(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content is None:  # a truncated real JPEG
        data = (SEED / "probes" / "obama.jpg").read_bytes()
        content = data[:200]
    path.write_bytes(content)
    with pytest.raises(ImageError):
        read_image(path)


def test_cli_detect_on_bad_and_missing_images_is_one_line(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((SEED / "probes" / "obama.jpg").read_bytes()[:300])
    for path, expected in ((empty, "is empty"), (truncated, "not a readable image"),
                           (tmp_path / "absent.jpg", "cannot read")):
        result = run_cli("detect", path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and expected in result.stderr
        assert result.stderr.count("\n") == 1


def test_cli_detect_writes_annotated_image_and_compare_decides(tmp_path):
    out = tmp_path / "annotated.jpg"
    result = run_cli("detect", SEED / "probes" / "4_2.jpg", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "4 faces" in result.stdout and out.stat().st_size > 10000
    same = run_cli("compare", LFW / "images/Colin_Powell/Colin_Powell_0001.jpg",
                   LFW / "images/Colin_Powell/Colin_Powell_0002.jpg")
    different = run_cli("compare", LFW / "images/Colin_Powell/Colin_Powell_0001.jpg",
                        LFW / "images/Al_Pacino/Al_Pacino_0001.jpg")
    assert "same person" in same.stdout and "different people" in different.stdout


def test_wrong_model_file_is_refused_at_install_not_loaded(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "retinaface_mnet025.onnx").write_bytes((SEED / "probes" / "obama.jpg").read_bytes())
    result = run_cli("models", "install", "retinaface_mnet025", "--mirror", mirror,
                     "--dir", tmp_path / "m")
    assert result.returncode == 2 and "sha256 mismatch" in result.stderr
    assert "Traceback" not in result.stderr
