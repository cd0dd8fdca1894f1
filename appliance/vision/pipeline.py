"""The face pipeline: detect -> quality -> [liveness] -> align -> embed, built from a Config."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from appliance.config import Config
from appliance.errors import ConfigError, ModelError
from appliance.inference import NPU_BACKENDS, load_runner
from appliance.inference.base import Runner
from appliance.inference.rknn_files import rknn_path
from appliance.models import get_spec, installed_int8_path, installed_path, int8_path, models_dir
from appliance.vision import int8_check
from appliance.vision.align import align_face
from appliance.vision.detector import DETECTOR_FAMILIES, Detector, Face
from appliance.vision.embedder import Embedder
from appliance.vision.geometry import box_iou, enlarged_box
from appliance.vision.images import read as read_image  # noqa: F401 - the callers' name for it
from appliance.vision.liveness import LivenessChecker
from appliance.vision.quality import Quality, assess, pose_from_landmarks

log = logging.getLogger(__name__)

LIVENESS_MODELS = ("minifasnet_v2_2.7", "minifasnet_v1se_4.0")
# Mirroring swaps the left and right landmarks: eyes, nose, mouth corners.
_MIRROR_ORDER = [1, 0, 2, 4, 3]
# The refinement crop's side, in face widths: the whole head with some margin, so the crop
# still looks like a face photo to the detector.
_REFINE_CROP = 2.0
_REFINE_EYES_MARGIN = 0.8


@dataclass
class FaceResult:
    face: Face
    quality: Quality
    aligned: np.ndarray
    embedding: Optional[np.ndarray] = None
    live_score: Optional[float] = None


def model_file(config: Config, model_id: str, role: str) -> Path:
    """The file `FacePipeline.from_config` loads for a model: the installed ONNX file, or on the
    NPU backends the .rknn file converted for this target, dtype and input size."""
    models = config.models
    directory = models_dir(models.dir or None)
    if backend_for(config, role) not in NPU_BACKENDS:
        source = installed_path(get_spec(model_id), directory)
        if role == "embedder" and models.backend == "onnxruntime" and models.embedder_int8:
            return installed_int8_path(source) or source
        return source
    dtype = models.rknn_embedder_dtype if role == "embedder" else models.rknn_detector_dtype
    return rknn_path(directory, models.rknn_target, model_id, dtype,
                     config.detector.input_size if role == "detector" else None)


def backend_for(config: Config, role: str) -> str:
    """The backend a model runs on. The liveness pair has no checked NPU conversion yet, so with
    an NPU backend and no models.liveness_backend it runs on ONNX Runtime (the CPU)."""
    if role == "liveness":
        if config.models.liveness_backend:
            return config.models.liveness_backend
        if config.models.backend in NPU_BACKENDS:
            return "onnxruntime"
    return config.models.backend


def model_files(config: Config) -> List[Tuple[str, Path]]:
    """(model id, file) of every model `FacePipeline.from_config` loads for this config."""
    wanted = [(config.models.detector, "detector"), (config.models.embedder, "embedder")]
    if config.liveness.enabled:
        wanted += [(model_id, "liveness") for model_id in LIVENESS_MODELS]
    return [(model_id, model_file(config, model_id, role)) for model_id, role in wanted]


def checked_embedder(config: Config, runner: Runner) -> Tuple[Runner, Optional[dict]]:
    """The embedder's 8-bit copy where it embeds within the calibration's tolerance on this CPU,
    else the float model, said in one line (vision/int8_check.py); and the copy's verdict."""
    if config.models.backend != "onnxruntime" or not config.models.embedder_int8:
        return runner, None
    source = installed_path(get_spec(config.models.embedder), models_dir(config.models.dir or None))
    if runner.path != int8_path(source):
        return runner, None  # no copy was made: the float file serves
    result = int8_check.verdict(runner, source)
    if result["refused"] is None:
        return runner, result
    log.warning("the embedder's 8-bit copy is out of tolerance on this CPU (%s: %s): the door embeds with the "
                "float model", result["cpu"], result["refused"])
    runner.close()
    return load_runner(config.models.backend, runner.spec, source, None, config.models.threads), result


class FacePipeline:
    def __init__(self, config: Config, detector: Detector, embedder: Embedder,
                 liveness: Optional[LivenessChecker] = None) -> None:
        self.config = config
        self.detector = detector
        self.embedder = embedder
        self.liveness = liveness
        self.int8_verdict: Optional[dict] = None  # the 8-bit embedder's measurement on this CPU, where one ran

    @classmethod
    def from_config(cls, config: Config) -> "FacePipeline":
        models = config.models
        backend, threads = models.backend, models.threads
        size = config.detector.input_size

        def runner_for(model_id: str, role: str, warmup=None, threads=threads):
            spec = get_spec(model_id)
            if spec.role != role:
                raise ModelError("model %s is a %s, not a %s" % (model_id, spec.role, role))
            path = model_file(config, model_id, role)
            chosen = backend_for(config, role)
            if chosen not in NPU_BACKENDS:
                return load_runner(chosen, spec, path, warmup, threads)
            return load_runner(chosen, spec, path, warmup, threads, core_mask=models.rknn_core_mask,
                               device=models.rknn_device, library=models.rknn_library)

        if backend in NPU_BACKENDS and config.detector.keep_frame_aspect:
            raise ConfigError("detector.keep_frame_aspect needs a detector that takes any input size; "
                              "backend %s runs a fixed %dx%d model: set it to false" % (backend, size, size))
        detector_runner = runner_for(config.models.detector, "detector", (size, size))
        if not detector_runner.spec.commercial_use:
            log.warning("detector %s has a non-commercial licence: use it for comparison only",
                        config.models.detector)
        family = DETECTOR_FAMILIES[detector_runner.spec.extra["family"]]
        detector = family(detector_runner, size, config.detector.keep_frame_aspect,
                          config.detector.score_threshold, config.detector.nms_threshold)
        embedder_runner, int8_verdict = checked_embedder(config, runner_for(config.models.embedder, "embedder"))
        embedder = Embedder(embedder_runner, config.embedder.flip)
        liveness = None
        if config.liveness.enabled:
            # the two small models run side by side, a core each (vision/liveness.py): one thread
            # apiece unless models.threads says otherwise
            liveness = LivenessChecker([runner_for(m, "liveness", threads=threads or 1) for m in LIVENESS_MODELS])
        pipeline = cls(config, detector, embedder, liveness)
        pipeline.int8_verdict = int8_verdict
        return pipeline

    def detect(self, frame: np.ndarray) -> List[Face]:
        faces = self.detector.detect(frame)
        if self.config.detector.flip_landmarks and faces:
            faces = self._average_with_mirror(frame, faces)
        if self.config.detector.refine_below_pixels and faces:
            faces = self._refine_small_faces(frame, faces)
        return faces

    def _average_with_mirror(self, frame: np.ndarray, faces: List[Face]) -> List[Face]:
        width = frame.shape[1]
        mirrored = self.detector.detect(np.ascontiguousarray(frame[:, ::-1]))
        if not mirrored:
            return faces
        boxes = np.stack([np.array([width - f.box[2], f.box[1], width - f.box[0], f.box[3]])
                          for f in mirrored])
        for face in faces:
            best = _same_face(face, boxes)
            if best is None:
                continue
            points = mirrored[best].landmarks[_MIRROR_ORDER].copy()
            points[:, 0] = width - points[:, 0]
            face.landmarks = (face.landmarks + points) / 2
            face.box = (face.box + boxes[best]) / 2
        return faces

    def _refine_small_faces(self, frame: np.ndarray, faces: List[Face]) -> List[Face]:
        """Detect again on a crop around each face that was small in the detector's input.

        A face a few dozen input pixels wide (a group photo, someone far from the camera) gets
        landmarks a couple of frame pixels off, and alignment errors cost more accuracy than
        anything after them; the crop shows the same face at several times the scale. LFW's
        faces are never this small at 320 input, so its figures do not move; the seed's group
        photos gain 0.1-0.2 of distance on their hardest faces.
        """
        limit = self.config.detector.refine_below_pixels
        scale = self.detector.input_scale(frame.shape)
        # A face whose eyes are well under quality's minimum apart fails quality however sharp
        # its landmarks; a second look cannot change its outcome (margin for a better estimate).
        too_small = _REFINE_EYES_MARGIN * self.config.quality.min_interocular
        for face in faces:
            if face.width * scale >= limit or pose_from_landmarks(face.landmarks)[0] < too_small:
                continue
            crop, origin = _crop_around(frame, face.box, _REFINE_CROP)
            found = self.detector.detect(crop)
            if not found:
                continue
            boxes = np.stack([f.box for f in found]) + np.tile(origin, 2)
            best = _same_face(face, boxes)
            if best is not None:
                face.landmarks = found[best].landmarks + origin
                face.box = boxes[best]
        return faces

    def analyse_face(self, frame: np.ndarray, face: Face, embed: bool = True, live: bool = False) -> FaceResult:
        """Quality and alignment, the embedding with `embed`, and with `live` the liveness score
        of a face that passed quality (the door fuses the scores over an attempt: one frame's
        score is too noisy to refuse on, and a photo being enrolled is no attack)."""
        aligned = align_face(frame, face.landmarks)
        result = FaceResult(face, assess(face.landmarks, aligned, self.config.quality), aligned)
        if live and self.liveness is not None and result.quality.passed:
            result.live_score = self.liveness.score(frame, face.box)
        if embed:
            result.embedding = self.embedder.embed(aligned)
        return result

    def analyse(self, frame: np.ndarray, embed: bool = True) -> List[FaceResult]:
        """Every face of a frame; their embeddings (and mirrors) come from one model run."""
        results = [self.analyse_face(frame, face, embed=False) for face in self.detect(frame)]
        if embed and results:
            for result, vector in zip(results, self.embedder.embed_many([r.aligned for r in results])):
                result.embedding = vector
        return results

    def close(self) -> None:
        self.detector.runner.close()
        self.embedder.runner.close()
        if self.liveness is not None:
            self.liveness.close()


def _same_face(face: Face, boxes: np.ndarray) -> Optional[int]:
    """Index of the box that is this face seen again (IoU at least 0.5), or None."""
    overlaps = box_iou(face.box, boxes)
    best = int(np.argmax(overlaps))
    return best if overlaps[best] >= 0.5 else None


def _crop_around(frame: np.ndarray, box: np.ndarray, sides: float):
    """A square crop `sides` box widths wide centred on the box (clipped), and its top-left corner."""
    left, top, right, bottom = enlarged_box(box, sides, frame.shape, square=True)
    return frame[top:bottom, left:right], np.array([left, top], dtype=np.float32)
