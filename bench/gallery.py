"""Gallery speed: 1:N search at 10k and 100k templates, memory per template, enrolment rate."""

import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from appliance.config import from_dict
from appliance.gallery.enrol import Enroller, group_photos
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import GalleryStore
from appliance.vision.pipeline import FacePipeline

from bench.harness import benchmark, time_call
from bench.vision import SHARED

TEMPLATES_PER_PERSON = 3


def _fill(store: GalleryStore, templates: int, dims: int = 128) -> None:
    """Bulk-load random unit templates (one transaction: the bench measures search, not enrolment)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(templates, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    people = templates // TEMPLATES_PER_PERSON
    with store.transaction():
        store.db.executemany("INSERT INTO people (id, name, note, enabled, created, updated) VALUES (?, ?, '', 1, '', '')",
                             [("p%06d" % i, "person %d" % i) for i in range(people)])
        store.db.executemany("INSERT INTO templates (person_id, embedding, model_id, quality, source, created) "
                             "VALUES (?, ?, 'bench', 1.0, '', '')",
                             [("p%06d" % (i // TEMPLATES_PER_PERSON), vectors[i].tobytes())
                              for i in range(people * TEMPLATES_PER_PERSON)])
        store._set_meta("model_id", "bench")
        store._bump()


@benchmark("gallery")
def gallery() -> dict:
    figures = {"templates_per_person": TEMPLATES_PER_PERSON}
    probe = np.random.default_rng(1).normal(size=128).astype(np.float32)
    probe /= np.linalg.norm(probe)
    with tempfile.TemporaryDirectory() as folder:
        for count in (10_000, 100_000):
            path = Path(folder) / ("g%d.db" % count)
            with GalleryStore(path) as store:
                _fill(store, count)
                tracemalloc.start()
                started = time.perf_counter()
                index = GalleryIndex(store)
                build_ms = (time.perf_counter() - started) * 1000
                index_bytes = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
                figures["search_%dk" % (count // 1000)] = time_call(lambda: index.search(probe),
                                                                     repeats=200)
                figures["index_build_%dk_ms" % (count // 1000)] = round(build_ms, 1)
                figures["index_bytes_per_template_%dk" % (count // 1000)] = round(index_bytes / count)
            figures["database_bytes_per_template_%dk" % (count // 1000)] = round(
                path.stat().st_size / count)
        figures.update(_enrolment_rate(Path(folder)))
    return figures


def _enrolment_rate(folder: Path) -> dict:
    photos_dir = SHARED / "data" / "seed-samples" / "gallery"
    config = from_dict({"models": {"dir": os.environ.get("FACEGATE_MODELS_DIR", "models")}})
    pipeline = FacePipeline.from_config(config)
    photos = sum(len(p) for p in group_photos(photos_dir).values())
    with GalleryStore(folder / "enrol.db", model_id=pipeline.embedder.model_id) as store:
        started = time.perf_counter()
        report = Enroller(config, pipeline, store).enrol_folder(photos_dir)
        seconds = time.perf_counter() - started
    pipeline.close()
    return {"enrol_folder": str(photos_dir.name), "enrol_photos": photos,
            "enrol_people": len(report.enrolled), "enrol_seconds": round(seconds, 2),
            "enrol_photos_per_second": round(photos / seconds, 1)}
