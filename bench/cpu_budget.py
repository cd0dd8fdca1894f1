"""The door's per-frame CPU work around the networks, stage by stage, with the model runs left out.

On the board the NPU runs the networks; what decides speed there is the Python and OpenCV work
around them on the Cortex-A7s. So the model runs are timed separately (inside the runtime's own
`run`) and subtracted: what is left holds for any backend. The frame is 640x480 with one face
about 150 px wide, as at the door; the gallery has its person among 100 (the others 3 random
templates each), so its attempts match and run the liveness pair as at the door.
"""

import os
import time
from pathlib import Path

import cv2
import numpy as np

from appliance.config import from_dict
from appliance.recognition.verification import Verifier
from appliance.recognition.decision import decide
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore, Template
from appliance.inference.base import to_float_tensor
from appliance.vision.align import align_face
from appliance.vision.embedder import model_input, normalise
from appliance.vision.geometry import letterbox, nms
from appliance.vision.pipeline import FacePipeline, read_image
from appliance.vision.quality import assess

from bench.harness import benchmark, summarise, time_call

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT.parent / "shared" / "data" / "seed-samples" / "probes" / "obama.jpg"


class TimedSession:
    """Stands between a runner and its ONNX Runtime session and notes when it ran (`intervals`,
    shared by every session: the liveness pair runs on helper threads beside the embedder, so
    the model time of a step is the union of the intervals, not their sum)."""

    def __init__(self, session, intervals: list) -> None:
        self.session = session
        self.intervals = intervals

    def run(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.intervals.append((started, time.perf_counter()))

    def __getattr__(self, name):
        return getattr(self.session, name)


def covered(intervals, begin: float, end: float) -> float:
    """Seconds of [begin, end] inside at least one interval."""
    total, reach = 0.0, begin
    for start, stop in sorted(intervals):
        start, stop = max(start, reach), min(stop, end)
        if stop > start:
            total += stop - start
            reach = stop
    return total


def door_frame() -> np.ndarray:
    """A 640x480 frame with the portrait's face about 150 px wide."""
    photo = read_image(PORTRAIT)
    frame = np.full((480, 640, 3), 60, np.uint8)
    scale = min(420 / photo.shape[0], 600 / photo.shape[1])
    small = cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    top, left = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    return frame


@benchmark("cpu_budget")
def cpu_budget() -> dict:
    import tempfile

    config = from_dict({"models": {"dir": os.environ.get("FACEGATE_MODELS_DIR", str(ROOT / "models"))}})
    pipeline = FacePipeline.from_config(config)
    # every model the door runs, the liveness pair included, is the model time subtracted
    intervals: list = []
    runners = [pipeline.detector.runner, pipeline.embedder.runner] + list(
        pipeline.liveness.runners if pipeline.liveness else [])
    for runner in runners:
        runner._session = TimedSession(runner._session, intervals)
    frame = door_frame()
    figures = {"frame": "640x480, one face", "face_width_px": None}
    with tempfile.TemporaryDirectory(prefix="facegate-cpu-") as temporary:
        store = GalleryStore(Path(temporary) / "g.db", model_id=pipeline.embedder.model_id)
        rng = np.random.default_rng(0)
        face = pipeline.detect(frame)[0]
        figures["face_width_px"] = round(float(face.width), 1)
        # the face in the frame is enrolled, so its attempts match and the liveness pair runs
        own = pipeline.embedder.embed(align_face(frame, face.landmarks))
        store.enrol("p0", [Template(own)], pipeline.embedder.model_id)
        for number in range(1, 100):
            vectors = rng.standard_normal((3, 128)).astype(np.float32)
            store.enrol("p%d" % number, [Template(v / np.linalg.norm(v)) for v in vectors], pipeline.embedder.model_id)
        index = GalleryIndex(store)
        verifier = Verifier(config, pipeline, index)

        # the whole per-frame step of the door, minus the model runs; a fresh attempt every 5
        # frames (the person walks up again), so matching frames, grants and tracking all count
        samples, models, grants = [], [], 0
        for number in range(230):
            if number % 5 == 0:
                verifier.tracker.reset()
            started = time.perf_counter()
            grants += verifier.step(frame, time.monotonic(), number).kind == "grant"
            ended = time.perf_counter()
            if number >= 30:  # after warm-up
                inside = covered(intervals, started, ended)
                samples.append((ended - started - inside) * 1000)
                models.append(inside * 1000)
            intervals.clear()
        figures["door_step_without_models"] = summarise(samples)
        figures["door_step_models"] = summarise(models)
        figures["grants_in_230_frames"] = grants

        # the stages, each on its own
        detector = pipeline.detector
        canvas, fit = letterbox(frame, (320, 320), detector._fill)
        outputs = detector.runner.run(canvas[None])
        aligned = align_face(frame, face.landmarks)
        crops = np.stack([model_input(aligned, pipeline.embedder.runner.spec)] * 2)
        vector = pipeline.embedder.embed(aligned)
        stages = {
            "letterbox_320": lambda: letterbox(frame, (320, 320), detector._fill),
            "detector_input_tensor": lambda: to_float_tensor(canvas[None], detector.spec.input),
            "decode_and_nms": lambda: _decode(detector, outputs, fit),
            "align_112": lambda: align_face(frame, face.landmarks),
            "quality": lambda: assess(face.landmarks, aligned, config.quality),
            "embedder_input_with_flip": lambda: to_float_tensor(
                np.concatenate([crops[:1], crops[:1, :, ::-1]]), pipeline.embedder.runner.spec.input),
            "fuse_5_and_normalise": lambda: normalise(np.mean(np.stack([vector] * 5), axis=0)[None]),
            "search_300_templates": lambda: index.search(vector),
            "decide": lambda: decide(index.search(vector), 0.5, config.matching),
        }
        figures["stages"] = {name: time_call(function, repeats=300, warmup=10) for name, function in stages.items()}
        store.close()
    pipeline.close()
    return figures


def _decode(detector, outputs, fit):
    boxes, landmarks, scores = detector._decode(outputs, 320, 320)
    keep = nms(boxes, scores, detector.nms_threshold)
    return fit.to_original(boxes[keep]), fit.to_original(landmarks[keep])
