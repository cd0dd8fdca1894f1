"""Vision pipeline speed: detector per input size, embedder (8-bit and float), the whole one-face
path, liveness."""

import os
from pathlib import Path

from appliance.config import from_dict
from appliance.vision.align import align_face
from appliance.vision.pipeline import FacePipeline, read_image

from bench.harness import benchmark, time_call

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PORTRAIT = SHARED / "data" / "seed-samples" / "probes" / "obama.jpg"
GROUP = SHARED / "data" / "seed-samples" / "probes" / "4_2.jpg"


def _pipeline(**sections):
    raw = {"models": {"dir": os.environ.get("FACEGATE_MODELS_DIR", "models")}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return FacePipeline.from_config(from_dict(raw))


@benchmark("vision")
def vision() -> dict:
    figures = {"host_cpus": os.cpu_count(), "portrait": PORTRAIT.name, "group_photo": GROUP.name}
    group, portrait = read_image(GROUP), read_image(PORTRAIT)
    pipeline = _pipeline(embedder={"flip": False})
    for size in (320, 480, 640):
        pipeline.detector.input_size = size
        figures["detector_%d" % size] = time_call(lambda: pipeline.detector.detect(group))
    pipeline.detector.input_size = 320
    face = pipeline.detect(portrait)[0]
    aligned = align_face(portrait, face.landmarks)
    figures["align"] = time_call(lambda: align_face(portrait, face.landmarks), repeats=200)
    figures["embedder"] = time_call(lambda: pipeline.embedder.embed(aligned))
    pipeline.embedder.flip = True
    figures["embedder_flip"] = time_call(lambda: pipeline.embedder.embed(aligned))

    def one_face():
        found = pipeline.detect(portrait)[0]
        pipeline.analyse_face(portrait, found)

    for flip in (False, True):
        pipeline.embedder.flip = flip
        figures["detect320_align_embed%s" % ("_flip" if flip else "")] = time_call(one_face)
    pipeline.close()
    plain = _pipeline(models={"embedder_int8": False})  # what the 8-bit copy saves
    figures["embedder_float"] = time_call(lambda: plain.embedder.embed(aligned))
    plain.embedder.flip = False
    figures["embedder_float_without_flip"] = time_call(lambda: plain.embedder.embed(aligned))
    plain.close()
    live = _pipeline(liveness={"enabled": True})
    figures["liveness_two_models"] = time_call(lambda: live.liveness.score(portrait, face.box))
    # what liveness adds to an attempt: one score on each of the liveness.frames good frames a
    # grant waits for (those frames are also the grant's; waiting for them adds their capture time)
    frames = live.config.liveness.frames
    figures["liveness_per_attempt_%d_frames" % frames] = time_call(
        lambda: [live.liveness.score(portrait, face.box) for _ in range(frames)], repeats=20)
    live.close()
    return figures
