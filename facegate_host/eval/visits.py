"""The door's own verifier replayed per visit on lfw-dev: what a stranger gets in one visit.

Each photo becomes an attempt as a camera would give it (door_rule.jittered: the photo, then
copies shifted, scaled, turned and made lighter or darker), `FRAMES` frames long; every frame
is detected, the door's face chosen (`verification.choose`, `min_face_pixels`), its quality gate
applied and the good frames embedded, once, into a cache. A visit is a person's successive
photos, one attempt each (a re-approach is a new pose and light), up to the attempts the door
allows a face it keeps denying (`verification.attempts_per_visit`); the real `Verifier` is run
on the recorded frames, tracker, fusion, identity restarts, the visit's lockout and all, with a
fresh verifier per visit and the door's threshold for the gallery.

Liveness is not replayed: lfw-dev's photos are not camera captures, and strangers at a door are
live people, so refusing them as photos would flatter the figure. Its own cost (BPCER, from
`eval-liveness` on nuaa-dev) adds to the enrolled rejections; README combines them.
"""

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from appliance.config import Config
from appliance.gallery.index import GalleryIndex
from appliance.gallery.store import Person
from appliance.recognition.decision import threshold_for
from appliance.recognition.tracker import choose_face
from appliance.recognition.verification import DENY, GRANT, Verifier
from appliance.vision.detector import Face
from appliance.vision.pipeline import FaceResult, read_image
from appliance.vision.quality import Quality
from facegate_host.eval.door_rule import jittered
from facegate_host.eval.liveness import upper_95

FRAMES = 10  # frames per attempt: the door's 8 good frames to a denial, and two the quality gate may drop
FPS = 15.0


@dataclass
class Recorded:
    """Per photo and frame: the chosen face's box, whether it passed quality, its sharpness, its
    embedding (NaN where no face was chosen or quality failed)."""
    names: List[str]
    boxes: np.ndarray  # (photos, frames, 4), NaN: no face chosen
    passed: np.ndarray  # (photos, frames) bool
    sharpness: np.ndarray  # (photos, frames)
    embeddings: np.ndarray  # (photos, frames, dims)

    def row(self, name: str) -> int:
        if not hasattr(self, "_rows"):
            self._rows = {n: i for i, n in enumerate(self.names)}
        return self._rows[name]


def record(pipeline, config: Config, folder: Path, names: Sequence[str], cache: Optional[Path] = None,
           progress=None) -> Recorded:
    if cache is not None and cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        if stored["names"].tolist() == list(names) and stored["boxes"].shape[1] == FRAMES:
            return Recorded(list(names), stored["boxes"], stored["passed"], stored["sharpness"],
                            stored["embeddings"])
    rules = config.verification
    boxes = np.full((len(names), FRAMES, 4), np.nan, np.float32)
    passed = np.zeros((len(names), FRAMES), bool)
    sharpness = np.zeros((len(names), FRAMES), np.float32)
    vectors: Dict[tuple, np.ndarray] = {}
    for index, name in enumerate(names):
        image = read_image(folder / name)
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        for frame in range(FRAMES):
            picture = image if frame == 0 else jittered(image, seed + frame)
            face = choose_face(pipeline.detect(picture), picture.shape, rules.min_face_pixels, rules.choose)
            if face is None:
                continue
            boxes[index, frame] = face.box
            result = pipeline.analyse_face(picture, face, embed=False)
            sharpness[index, frame] = result.quality.sharpness
            if result.quality.passed:
                passed[index, frame] = True
                vectors[index, frame] = pipeline.embedder.embed(result.aligned)
        if progress:
            progress(index + 1, len(names))
    dims = pipeline.embedder.embed(np.zeros((112, 112, 3), np.uint8)).size
    embeddings = np.full((len(names), FRAMES, dims), np.nan, np.float32)
    for (index, frame), vector in vectors.items():
        embeddings[index, frame] = vector
    if cache is not None:
        partial = cache.with_name(cache.name + ".partial.npz")
        np.savez(partial, names=np.asarray(list(names)), boxes=boxes, passed=passed, sharpness=sharpness,
                 embeddings=embeddings)
        partial.replace(cache)
    return Recorded(list(names), boxes, passed, sharpness, embeddings)


class _Embedder:
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.vector: Optional[np.ndarray] = None

    def embed(self, aligned) -> np.ndarray:
        return self.vector


class ReplayPipeline:
    """Serves the recorded frames to the real Verifier in place of the camera and the models."""

    liveness = None

    def __init__(self, config: Config, recorded: Recorded, model_id: str) -> None:
        self.config = config
        self.recorded = recorded
        self.embedder = _Embedder(model_id)
        self._face: Optional[Face] = None
        self._passed, self._sharpness = False, 0.0

    def show(self, row: Optional[int], frame: int = 0) -> None:
        """The next frame: photo `row`'s recorded frame, or an empty doorway (None)."""
        self._face = None
        if row is None or np.isnan(self.recorded.boxes[row, frame, 0]):
            return
        self._face = Face(self.recorded.boxes[row, frame], np.zeros((5, 2), np.float32), 0.9)
        self._passed = bool(self.recorded.passed[row, frame])
        self._sharpness = float(self.recorded.sharpness[row, frame])
        self.embedder.vector = self.recorded.embeddings[row, frame]

    def detect(self, image) -> List[Face]:
        return [self._face] if self._face is not None else []

    def analyse_face(self, image, face, embed: bool = False, live: bool = False) -> FaceResult:
        quality = Quality(0.0, 0.0, 0.0, 0.0, self._sharpness, 0.0, [] if self._passed else ["recorded as failed"])
        return FaceResult(face, quality, None)


IMAGE = np.zeros((250, 250, 3), np.uint8)  # the recorded frames' size: only its shape is read


def replay_visit(verifier: Verifier, pipeline: ReplayPipeline, rows: Sequence[int]) -> dict:
    """One person's visit: each photo an attempt, the face stepping out of view between them,
    until a grant or the photos run out. Returns who was granted (-1: nobody) and what happened."""
    clock, number = 0.0, 0
    result = {"granted": None, "attempts": 0, "locked_out": 0, "undecided": 0}
    for row in rows:
        result["attempts"] += 1
        decided = None
        for frame in range(FRAMES):
            clock, number = clock + 1 / FPS, number + 1
            pipeline.show(row, frame)
            outcome = verifier.step(IMAGE, clock, number)
            if outcome.kind in (GRANT, DENY):
                decided = outcome
                break
        if decided is None:
            result["undecided"] += 1
        elif decided.kind == GRANT:
            result["granted"] = decided.decision.match.person.id
            return result
        elif decided.decision.reason.startswith("locked out"):
            result["locked_out"] += 1
        pipeline.show(None)  # away: the tracker loses the face, an undecided attempt counts
        clock += verifier.rules.lost_after_seconds + 0.1
        verifier.step(IMAGE, clock, number + 1)
        clock += 1.0
    return result


def _gallery(recorded: Recorded, people: Dict[str, List[str]], chosen: Sequence[str], k: int):
    """The enrolled people's first k photos' first frames (the photo itself), as the door's index;
    a photo that fails the quality gate is not enrolled, as the door's enrolment refuses it."""
    persons, owners, rows = [], [], []
    for name in chosen:
        vectors = [recorded.embeddings[recorded.row(p), 0] for p in people[name][:k]]
        vectors = [v for v in vectors if not np.isnan(v).any()]
        if not vectors:
            continue
        persons.append(Person(name, name, "", True, None, None, "", len(vectors)))
        owners += [len(persons) - 1] * len(vectors)
        rows += vectors
    return persons, np.asarray(owners), np.stack(rows)


def run(config: Config, model_id: str, recorded: Recorded, people: Dict[str, List[str]],
        sizes: Sequence[Optional[int]] = (10, 100, None), ks: Sequence[int] = (1, 2, 3), min_photos: int = 5,
        seed: int = 0, extrapolate_to: int = 1000) -> List[dict]:
    """Per gallery size and k: strangers' visits granted, enrolled people's visits refused, with
    counts and 95% upper bounds; and the largest gallery replayed at the threshold the door would
    use for `extrapolate_to` people (its enrolled rejections are then a lower bound)."""
    from appliance.recognition import calibration

    config = replace(config, liveness=replace(config.liveness, enabled=False))  # not replayed: see above
    calibrated = calibration.load(model_id)
    eligible = [name for name, photos in people.items() if len(photos) >= min_photos]
    rng = np.random.default_rng(seed)  # drawn as door_rule.run draws them
    per_visit = config.verification.attempts_per_visit
    rows = []
    plans = [(size, False) for size in sizes] + ([(None, True)] if extrapolate_to else [])
    for size, extrapolated in plans:
        chosen = sorted(rng.choice(eligible, size, replace=False)) if size and size < len(eligible) else eligible
        for k in ks:
            persons, owners, matrix = _gallery(recorded, people, chosen, k)
            counts = np.bincount(owners).tolist()
            run_config = config
            if extrapolated:
                counts_there = (counts * (extrapolate_to // len(counts) + 1))[:extrapolate_to]
                there = threshold_for(config, model_id, counts_there).value
                run_config = replace(config, matching=replace(config.matching, distance_threshold=there))
            threshold = threshold_for(run_config, model_id, counts).value
            index = GalleryIndex.fixed(persons, owners, matrix)
            pipeline = ReplayPipeline(run_config, recorded, model_id)
            tally = {"stranger_visits": 0, "strangers_granted": 0, "stranger_attempts": 0, "locked_out": 0,
                     "genuine_visits": 0, "genuine_refused": 0, "misidentified": 0, "undecided_attempts": 0}
            enrolled, drawn = {person.name for person in persons}, set(chosen)
            for name, photos in people.items():
                if name in drawn and name not in enrolled:
                    continue  # drawn, but no enrolment photo passed the quality gate: neither enrolled nor a stranger
                probes = photos[max(ks):] if name in enrolled else photos
                for start in range(0, len(probes), per_visit):
                    verifier = Verifier(run_config, pipeline, index)
                    got = replay_visit(verifier, pipeline, [recorded.row(p) for p in probes[start:start + per_visit]])
                    tally["undecided_attempts"] += got["undecided"]
                    if name in enrolled:
                        tally["genuine_visits"] += 1
                        tally["genuine_refused"] += got["granted"] != name
                        tally["misidentified"] += got["granted"] not in (None, name)
                    else:
                        tally["stranger_visits"] += 1
                        tally["stranger_attempts"] += got["attempts"]
                        tally["strangers_granted"] += got["granted"] is not None
                        tally["locked_out"] += got["locked_out"]
            row = {"people": len(persons), "k": k, "threshold": threshold,
                   "threshold_for_people": extrapolate_to if extrapolated else len(persons), **tally}
            row["strangers_granted_per_visit"] = tally["strangers_granted"] / max(1, tally["stranger_visits"])
            row["strangers_granted_upper_95"] = upper_95(tally["strangers_granted"], tally["stranger_visits"])
            row["enrolled_refused_per_visit"] = tally["genuine_refused"] / max(1, tally["genuine_visits"])
            row["bound_per_visit"] = _bound(calibrated, run_config, counts_there if extrapolated else counts, threshold)
            rows.append(row)
    return rows


def _bound(calibrated, config: Config, counts: Sequence[int], threshold: float) -> Optional[float]:
    """What the calibration promises per visit at this threshold for this gallery."""
    from appliance.recognition.decision import looks_per_visit

    return None if calibrated is None else calibrated.false_accept(threshold, list(counts), looks_per_visit(config))


def summary(rows: List[dict], config: Config) -> List[str]:
    rules = config.verification
    lines = ["the door's verifier per visit (up to %d attempts of %d frames, deny after %d good frames, quality gate "
             "on; liveness not replayed):" % (rules.attempts_per_visit, FRAMES, rules.deny_frames),
             "people  k  threshold (for)   strangers granted per visit (count of visits), 95% upper bound, the "
             "rule's bound   enrolled refused per visit   misidentified"]
    for row in rows:
        lines.append("%6d  %d  %.3f (%5d)   %.2e (%d of %d), %.2e, %.2e   %6.2f%% (%d of %d)   %d" % (
            row["people"], row["k"], row["threshold"], row["threshold_for_people"],
            row["strangers_granted_per_visit"], row["strangers_granted"], row["stranger_visits"],
            row["strangers_granted_upper_95"], row["bound_per_visit"] or float("nan"),
            100 * row["enrolled_refused_per_visit"], row["genuine_refused"], row["genuine_visits"],
            row["misidentified"]))
    return lines
