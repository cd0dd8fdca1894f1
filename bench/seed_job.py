"""The seed's own job for both programs, on the same frames: name every face in every frame.

The seed's per-frame code is kept here as a benchmark-only reference, written from its
description: RetinaFace MobileNet-0.25 at 640x640 (the seed's ONNX), each face cropped by its
box and letterboxed to 112x112 (no landmarks), the seed's MobileFaceNet, and a Python loop over
1,000 templates. FaceGate runs what `facegate identify --video` runs, with its defaults: the
detector at the frame's aspect (`detector.identify_input_size`, 640, no second look), 5-point
alignment, the default embedder with flip, all faces of a frame in one batch, the
index, and still frames named from the last analysed one (recognition/identify.py). A third job,
`facegate_every_frame`, is the same with still frames analysed again, to show what each part
pays. All run in one process on one clip made from the seed's probe photos (group photos and
portraits approaching and holding, 1280x720), alternating frame by frame so all see the same
machine load; decoding the video is not timed.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from appliance.config import from_dict
from appliance.gallery.enrol import Enroller
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore, Template
from appliance.recognition.identify import StreamIdentifier, identify_config
from appliance.vision.geometry import letterbox
from appliance.vision.pipeline import FacePipeline

from bench.harness import benchmark, summarise

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "data" / "seed-samples"
TEMPLATES = 1000


def _models():
    return {"dir": os.environ.get("FACEGATE_MODELS_DIR", str(ROOT / "models"))}


class SeedJob:
    """The seed's per-frame code: detect at 640, crop and letterbox, embed, loop over templates."""

    def __init__(self) -> None:
        config = from_dict({"models": dict(_models(), detector="retinaface_mnet025", embedder="mobilefacenet_128d",
                                                  embedder_int8=False),
                            "detector": {"input_size": 640, "refine_below_pixels": 0},
                            "embedder": {"flip": False}, "matching": {"distance_threshold": 0.55}})
        self.pipeline = FacePipeline.from_config(config)
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((TEMPLATES, 128)).astype(np.float32)
        self.templates = [v / np.linalg.norm(v) for v in vectors]
        self.named = []  # the best template per face of the last frame, as the seed kept it

    def frame(self, image: np.ndarray) -> int:
        faces = self.pipeline.detector.detect(image)
        self.named = []
        for face in faces:
            x1, y1, x2, y2 = (int(v) for v in face.box)
            crop = image[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]
            square, _ = letterbox(crop, (112, 112), (0, 0, 0))
            embedding = self.pipeline.embedder.embed(square)
            best, best_index = -2.0, -1
            for index, template in enumerate(self.templates):  # as the seed did: one at a time
                similarity = float(np.dot(embedding, template))
                if similarity > best:
                    best, best_index = similarity, index
            self.named.append(best_index)
        return len(faces)


class FaceGateJob:
    def __init__(self, folder: Path, reuse_still_frames: bool = True) -> None:
        self.config = identify_config(from_dict({"models": _models()}))
        self.pipeline = FacePipeline.from_config(self.config)
        model_id = self.pipeline.embedder.model_id
        folder.mkdir(exist_ok=True)
        self.store = GalleryStore(folder / "gallery.db", model_id=model_id)
        report = Enroller(self.config, self.pipeline, self.store).enrol_folder(SEED / "gallery")
        enrolled = sum(count for _, count in report.enrolled)
        rng = np.random.default_rng(1)
        for number in range((TEMPLATES - enrolled) // 4):  # the rest: people with 4 templates each
            vectors = rng.standard_normal((4, 128)).astype(np.float32)
            self.store.enrol("other %d" % number, [Template(v / np.linalg.norm(v)) for v in vectors], model_id)
        self.index = GalleryIndex(self.store)
        self.identifier = StreamIdentifier(self.pipeline, self.index, self.config, reuse_still_frames)

    def frame(self, image: np.ndarray) -> int:
        return len(self.identifier.frame(image))


def make_clip(path: Path) -> Path:
    probes = sorted(p for p in (SEED / "probes").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    subprocess.run([sys.executable, str(ROOT / "tools" / "make-demo-video"), str(path), *map(str, probes),
                    "--size", "1280x720", "--fps", "15", "--seconds", "1.8", "--gap", "0"], check=True,
                   stdout=subprocess.DEVNULL)
    return path


@benchmark("seed_job")
def seed_job() -> dict:
    with tempfile.TemporaryDirectory(prefix="facegate-seed-job-") as temporary:
        folder = Path(temporary)
        clip = make_clip(folder / "probes.mp4")
        jobs = {"seed": SeedJob(), "facegate": FaceGateJob(folder / "a"),
                "facegate_every_frame": FaceGateJob(folder / "b", reuse_still_frames=False)}
        times = {name: [] for name in jobs}
        faces = {name: 0 for name in jobs}
        capture = cv2.VideoCapture(str(clip))
        frames = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frames += 1
            for name, job in jobs.items():
                started = time.perf_counter()
                faces[name] += job.frame(image)
                times[name].append((time.perf_counter() - started) * 1000)
        capture.release()
        figures = {"frames": frames, "frame_size": "1280x720", "templates": TEMPLATES}
        for name in jobs:
            total_seconds = sum(times[name]) / 1000
            figures[name] = dict(summarise(times[name]), faces=faces[name],
                                 frames_per_second=round(frames / total_seconds, 2))
        figures["facegate"]["frames_analysed"] = jobs["facegate"].identifier.analysed
        for name in ("facegate", "facegate_every_frame"):
            figures["speedup" + name[len("facegate"):]] = round(
                figures[name]["frames_per_second"] / figures["seed"]["frames_per_second"], 2)
            jobs[name].store.close()
        return figures
