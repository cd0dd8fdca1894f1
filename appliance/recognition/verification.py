"""Verification over several frames: track one face, fuse its good embeddings, decide.

A grant needs `grant_frames` consecutive good frames whose fused embedding is accepted for the
same person; an attempt that has had `deny_frames` good frames without a grant is denied, so
it never takes more looks at the gallery than the decision rule counts. Frames that fail the
quality gate are neither evidence for nor against anyone.

An attempt (a track) gets one decision. Every good frame is also compared with the attempt's
fused embedding: a jump beyond `identity_change_distance` means someone else stepped into the
place (the box alone cannot tell), so that attempt ends and a new one starts for the newcomer.
Attempts that end without a grant (denied, or abandoned when the face left or was replaced)
count towards their face's visit, which locks the face out after `attempts_per_visit`
(recognition/visits.py).
"""

import logging
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np

from appliance.config import Config
from appliance.door.access_rules import local_now
from appliance.errors import ConfigError
from appliance.recognition.decision import Decision, Threshold, decide, looseness, threshold_for
from appliance.gallery.index import GalleryIndex, Match
from appliance.gallery.store import Person
from appliance.vision.embedder import normalise
from appliance.vision.pipeline import FacePipeline, FaceResult
from appliance.recognition.tracker import Track, Tracker, choose_face, face_width
from appliance.recognition.visits import Visit, Visits

log = logging.getLogger(__name__)

# What one frame did to the verification
NOTHING, APPEARED, TRACKING, GRANT, DENY, LOST = "nothing", "appeared", "tracking", "grant", "deny", "lost"


@dataclass
class Outcome:
    kind: str
    track: Optional[Track] = None
    decision: Optional[Decision] = None
    result: Optional[FaceResult] = None
    new_track: bool = False
    probe: Optional[np.ndarray] = None  # the fused embedding the decision was made on


class Verifier:
    def __init__(self, config: Config, pipeline: FacePipeline, index: GalleryIndex) -> None:
        self.config = config
        self.rules = config.verification
        self.pipeline = pipeline
        self.index = index
        if config.liveness.enabled and pipeline.liveness is None:
            # never a door that believes it refuses photos and does not
            raise ConfigError("liveness is on but the face pipeline has no liveness models: build it from this config")
        self.tracker = Tracker(self.rules.track_iou, self.rules.lost_after_seconds)
        self.visits = Visits(self.rules.attempts_per_visit, self.rules.visit_seconds,
                             self.rules.identity_change_distance)
        self._threshold: Optional[Threshold] = None
        self._threshold_version = -1
        self._next_small_note = float("-inf")  # when "a face is in view but too small" may be said again
        self.too_small: List = []  # the last frame's faces, when every one was too small to decide on
        # card + face: a card names the person whose face is then checked 1:1 (person, card, deadline)
        self.card_mode = config.door.mode == "card_and_face"
        self.expected: Optional[Tuple[Person, str, float]] = None

    @property
    def model_id(self) -> str:
        """The embedder whose vectors the decisions compare (an attempt's event records it)."""
        return self.pipeline.embedder.model_id

    @property
    def busy(self) -> bool:
        """Someone is being followed: the loop must look at every frame."""
        return self.tracker.track is not None

    def refresh(self) -> None:
        """Pick up enrolments and removals made since the last call (cheap when none were)."""
        self.index.refresh()

    @property
    def threshold(self) -> Threshold:
        """The threshold for the gallery as it is now, recomputed whenever the gallery changes."""
        version = self.index.version
        if self._threshold is None or version != self._threshold_version:
            self._threshold = threshold_for(self.config, self.pipeline.embedder.model_id,
                                            self.index.template_counts())
            self._threshold_version = version
            if self._threshold.looser_than_target:
                log.warning("%s", self._threshold.describe())
            else:
                log.info("%s", self._threshold.describe())
        return self._threshold

    def _access(self, match) -> Optional[str]:
        """Why the matched person may not use this door now: their access groups and schedules."""
        if not match.person.groups:
            return None
        local = local_now(self.config.door.time_zone)
        return self.index.access.refusal(match.person.groups, self.config.mqtt.device, local)

    def _too_small(self, faces, captured: float) -> None:
        """Someone in view whom the door will not decide on: said, at most every few seconds, so an
        installer knows why nothing happens (the camera too far, or min_face_pixels too high)."""
        if captured < self._next_small_note:
            return
        self._next_small_note = captured + 5.0
        widest = max(face_width(f) for f in faces)
        log.info("a face is in view but too small to decide on: %.0f px wide, verification.min_face_pixels is %d "
                 "(the visitor must come closer, or the camera be aimed nearer)", widest, self.rules.min_face_pixels)

    def set_matching(self, distance_threshold: float, min_margin: float, force: bool = False) -> None:
        """Change the decision rule at run time (a remote set_threshold; 0 returns to the target);
        the next frame uses it. A threshold looser than the false-accept target allows for this
        gallery is refused (ConfigError, saying what it would let in) unless `force`."""
        if distance_threshold > 0 and not force:
            danger = looseness(self.config, self.pipeline.embedder.model_id, self.index.template_counts(),
                               distance_threshold)
            if danger:
                raise ConfigError(danger)
        matching = replace(self.config.matching, distance_threshold=distance_threshold, min_margin=min_margin)
        self.config = replace(self.config, matching=matching)
        self._threshold = None
        log.info("matching changed: %s, margin %.3f", self.threshold.describe(), min_margin)

    def step(self, image: np.ndarray, captured: float, frame_number: int,
             verify: bool = True) -> Outcome:
        """Process one frame. With `verify` False (the door is busy) faces are only tracked."""
        faces = self.pipeline.detect(image)
        face = choose_face(faces, image.shape, self.rules.min_face_pixels, self.rules.choose)
        # what the live view boxes as "too small" (the door decides nothing for them)
        self.too_small = faces if faces and face is None else []
        if self.too_small:
            self._too_small(faces, captured)
        previous = self.tracker.track
        track = self.tracker.update(face, captured, frame_number)
        if previous is not None and track is not previous:
            self._abandoned(previous, captured)
        if track is None:
            return Outcome(LOST if previous is not None else NOTHING)
        new_track = track is not previous
        if face is None or not verify:
            return Outcome(TRACKING, track, new_track=new_track)
        return self._verify(image, track, new_track, captured, frame_number)

    def _verify(self, image: np.ndarray, track: Track, new_track: bool, captured: float,
                frame_number: int) -> Outcome:
        result = self.pipeline.analyse_face(image, track.face, embed=False)
        if not result.quality.passed:
            track.last_reasons = list(result.quality.reasons)
            return Outcome(APPEARED if new_track else TRACKING, track, result=result, new_track=new_track)
        liveness = None
        if self.pipeline.liveness is not None and track.candidate is not None and not track.decided:
            # the last frame matched: this one likely decides, so its liveness runs beside the embedding
            liveness = self.pipeline.liveness.start(image, track.face.box)
        result.embedding = self.pipeline.embedder.embed(result.aligned)
        if self._someone_else(track, result.embedding):
            log.info("attempt %d: a different face took the place; a new attempt starts", track.id)
            self._abandoned(track, captured)
            track, new_track = self.tracker.restart(track.face, captured, frame_number), True
        if track.decided:  # this person had their decision; only a newcomer gets another
            return Outcome(TRACKING, track, result=result)
        visit = self.visits.find(result.embedding, captured)
        if self.visits.locked(visit):
            return self._locked_out(track, visit, result, new_track, captured)
        if self.card_mode and self.expected is None:  # no card shown: the face is not compared with anyone
            return Outcome(APPEARED if new_track else TRACKING, track, result=result, new_track=new_track)
        track.embeddings.append(result.embedding)
        track.good_frames.append(track.frames[-1])
        track.best_quality = max(track.best_quality, result.quality.sharpness)
        fused = normalise(np.mean(track.embeddings[-self.rules.fuse_frames:], axis=0)[None, :])[0]
        track.identity = fused
        decision = self._decide(fused)
        outcome = Outcome(APPEARED if new_track else TRACKING, track, decision, result, new_track, fused)
        if decision.accepted and self.pipeline.liveness is not None:
            # liveness can only turn a match into a denial: a frame that matches nobody, an
            # attempt already decided or a locked-out face never waits for the two models
            pending = liveness or self.pipeline.liveness.start(image, track.face.box)
            result.live_score = pending.result()
            track.live_scores.append(result.live_score)
        if decision.accepted:
            person_id = decision.match.person.id
            track.agreeing = track.agreeing + 1 if track.candidate == person_id else 1
            track.candidate = person_id
            if track.agreeing >= self.rules.grant_frames:
                self._grant_if_live(track, outcome)
        else:
            track.agreeing, track.candidate = 0, None
        if not track.decided and len(track.embeddings) >= self.rules.deny_frames:
            # every good frame was a look at the gallery: the attempt ends at the rule's count,
            # also when the matches came and went without `grant_frames` in a row
            track.decided = True
            track.liveness = self._fused_liveness(track)
            outcome.kind = DENY
            if decision.accepted:
                outcome.decision = Decision(False, "unsteady: %d good frames without %d in a row for one person"
                                            % (len(track.embeddings), self.rules.grant_frames), decision.match)
        if outcome.kind == DENY:
            self._visit_note(track, self.visits.ended_without_grant(track.identity, captured))
        elif outcome.kind == GRANT:
            self.visits.granted(track.identity, captured)
        if outcome.kind in (GRANT, DENY):
            self.expected = None  # a card is good for one attempt
        return outcome

    def _decide(self, fused: np.ndarray) -> Decision:
        """1:N against the gallery; with card + face, 1:1 against the card's holder, at the
        threshold the same false-accept target gives for a gallery of that one person."""
        if self.expected is None:
            return decide(self.index.search(fused), self.threshold.value, self.config.matching, access=self._access)
        person, card, _ = self.expected
        threshold = threshold_for(self.config, self.model_id, [max(1, person.templates)]).value
        decision = decide(self.index.search_person(fused, person.id), threshold, self.config.matching,
                          access=self._access)
        if decision.reason.startswith("unknown"):
            decision = Decision(False, "not the card's holder: card %s is %s's, this face is %.3f from theirs "
                                       "(1:1 threshold %.3f)" % (card, person.name, decision.match.distance, threshold),
                                decision.match)
        return decision

    def expect_card(self, person: Person, card: str, deadline: float) -> None:
        """Card + face: the next attempt is checked against `person` alone, until `deadline`."""
        self.expected = (person, card, deadline)
        self.tracker.reset()  # whoever is in view starts a fresh attempt for this card

    def card_expired(self, now: float) -> Optional[Tuple[Person, str, float]]:
        """The card whose holder's face did not come in time (and forget it), or None."""
        if self.expected is not None and now > self.expected[2]:
            expired, self.expected = self.expected, None
            return expired
        return None

    def _abandoned(self, track: Track, captured: float) -> None:
        """An attempt that ended undecided (the face left, or another took its place) still had
        its looks at the gallery: it counts towards its face's visit."""
        if not track.decided and track.identity is not None:
            self.visits.ended_without_grant(track.identity, captured)

    def _visit_note(self, track: Track, visit: Visit) -> None:
        track.visit = {"attempt": visit.attempts, "of": self.rules.attempts_per_visit}
        if self.visits.locked(visit):
            track.visit["locked_out_seconds"] = self.rules.visit_seconds

    def _locked_out(self, track: Track, visit: Visit, result: FaceResult, new_track: bool,
                    captured: float) -> Outcome:
        """A face that used its visit's attempts: denied at once, without a look at the gallery,
        and its lockout runs on from this attempt."""
        track.decided = True
        track.identity = result.embedding
        self.expected = None  # a card shown with a locked-out face is spent too
        self._visit_note(track, self.visits.ended_without_grant(result.embedding, captured))
        decision = Decision(False, "locked out: %d attempts without a grant, each within %.0f s of the last; "
                                   "this face may try again %.0f s after its last attempt"
                            % (self.rules.attempts_per_visit, self.rules.visit_seconds, self.rules.visit_seconds),
                            Match(None, float("inf"), float("inf")))
        return Outcome(DENY, track, decision, result, new_track, result.embedding)

    def _fused_liveness(self, track: Track) -> Optional[float]:
        if not track.live_scores:
            return None
        return float(np.mean(track.live_scores[-self.config.liveness.frames:]))

    def _grant_if_live(self, track: Track, outcome: Outcome) -> None:
        """A match is granted once the attempt's fused liveness clears the threshold; with too
        few scored frames yet it waits, and a face that scores as a photo or screen is denied."""
        if not self.config.liveness.enabled:
            track.decided, outcome.kind = True, GRANT
            return
        liveness = self.config.liveness
        if len(track.live_scores) < liveness.frames:
            return  # the next good frame decides
        track.decided = True
        track.liveness = self._fused_liveness(track)
        if track.liveness >= liveness.threshold:
            outcome.kind = GRANT
            return
        outcome.kind = DENY
        outcome.decision = Decision(False, "not live: liveness %.2f below %.2f over %d frames (a photo or a screen?)"
                                    % (track.liveness, liveness.threshold, liveness.frames), outcome.decision.match)

    def _someone_else(self, track: Track, embedding: np.ndarray) -> bool:
        if track.identity is None:
            return False
        return 1.0 - float(np.dot(track.identity, embedding)) > self.rules.identity_change_distance
